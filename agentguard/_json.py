"""JSON in and out: the one canonical encoding (hashed bytes) and the one strict decoder.

``canonical_json`` is used wherever bytes are hashed (policy ids, audit chain).
``strict_loads`` is how agentguard reads JSON a server sent: only RFC 8259 JSON, bounded
nesting, no duplicate keys, and text that can be encoded back to UTF-8, so a hostile answer
is refused in one place with a ``ValueError`` instead of surfacing later as a
``RecursionError`` or a ``UnicodeEncodeError`` deep inside whatever touched it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from itertools import accumulate, repeat
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "canonical_json",
    "json_bytes",
    "one_spelling",
    "preview",
    "strict_loads",
]

MAX_DEPTH = 32
"""Deepest nesting accepted; every document agentguard reads is at most ~6 levels deep."""
_MAX_INT_DIGITS = 80
# \Z, not $: $ also matches before a final newline ("0xab\n" is not hex)
_HEX_RE = re.compile(r"^0x(?:[0-9a-fA-F]{2})*\Z")
_INT_ONLY = frozenset((int,))
# a string (an unterminated one runs to the end)
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
# every byte but quotes, backslashes and brackets (UTF-8's non-ASCII bytes too), deleted
_NOISE = bytes(b for b in range(256) if b not in b'"\\[]{}')
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8 (not ``\\u`` escapes), no NaN/Infinity."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def strict_loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``raw`` or raise ``ValueError`` saying what is wrong with it.

    Refused: bytes that are not UTF-8, anything that is not JSON (including ``NaN``,
    ``Infinity`` and numbers that overflow to them), integers longer than any uint256,
    nesting deeper than ``max_depth``, an object with the same key twice (two parsers could
    read two different values), and ``\\u`` escapes of lone surrogates (not text).
    """
    if isinstance(raw, bytes | bytearray):
        data = bytes(raw)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 text (invalid byte at offset {exc.start})") from None
        # Decoded UTF-8 holds no surrogate, so one can only come from a ``\u`` escape:
        # without one, the walk over every string (``_check_text_in``) has nothing to find.
        may_hold_surrogates = "\\" in text and "\\u" in text
    else:
        text = raw
        data = text.encode("utf-8", "surrogatepass")
        may_hold_surrogates = not text.isascii() or ("\\" in text and "\\u" in text)
    _check_depth(text, max_depth)
    if text.startswith("\ufeff"):  # what json.loads refuses before it decodes
        raise ValueError("not JSON (Unexpected UTF-8 BOM (decode using utf-8-sig) at offset 0)")
    # Bounding each integer as it is read costs a Python call per integer. An integer is a
    # run of digits after "-", whitespace, "[", "," or ":", or at the start; without such a
    # run longer than the bound anywhere in the bytes (a digit in UTF-8 is only ever its own
    # byte), none can exceed it and the C default reads the same values. A run that is only
    # in a string (rare: hex is led by "0x") merely takes the bounded path.
    marked = data.translate(_INT_MARKS)
    long_int = _LONG_INT in marked or marked.startswith(_LONG_INT[1:])
    try:
        doc = (_BOUNDED if long_int else _UNBOUNDED).decode(text)
    except RecursionError:
        raise ValueError(f"nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at offset {exc.pos})") from None
    if may_hold_surrogates:
        _check_text_in(doc)
    return doc


def _check_depth(text: str, max_depth: int) -> None:
    """Refuse deep nesting before ``json.loads`` sees it: the C decoder recurses once per
    level and trusts the interpreter's recursion limit, which a host may have raised (hypothesis
    does) far past what the C stack holds, so 100,000 ``[`` can crash the process outright.
    Linear, and without a Python step per token (a batch of operator tasks holds hundreds of
    brackets and a thousand strings): strings are cut out whole (an unterminated one runs to
    the end; without a backslash, a string is what lies between a quote and the next, so
    splitting at quotes cuts them all at once), and the deepest running depth of the brackets
    left is read off. Only those marks are ever stepped over: a text of anything else
    (whitespace, non-ASCII) costs a C pass, not a step per character."""
    if text.count("[") + text.count("{") <= max_depth:
        return
    marks = _marks(text)
    # with an escape a quote may be inside a string: then the strings are cut one by one
    outside = _marks(_STRING.sub("", text)) if b"\\" in marks else b"".join(marks.split(b'"')[::2])
    steps = map(_DEPTH_STEP.get, outside, repeat(0))
    if max(accumulate(steps), default=0) > max_depth:
        raise ValueError(f"nested deeper than {max_depth} levels")


def _marks(text: str) -> bytes:
    """The quotes, backslashes and brackets of ``text``, in order (a lone surrogate, which a
    ``\\u`` escape can make, is deleted like any other non-ASCII character)."""
    return text.encode("utf-8", "surrogatepass").translate(None, _NOISE)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits (a uint256 has at most 78)")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]}… overflows a float")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"object has the key {key[:40]!r} twice")
            seen.add(key)
    return doc


_BOUNDED = json.JSONDecoder(
    parse_constant=_no_constant,
    parse_float=_finite_float,
    parse_int=_bounded_int,
    object_pairs_hook=_unique_keys,
)
_UNBOUNDED = json.JSONDecoder(
    parse_constant=_no_constant, parse_float=_finite_float, object_pairs_hook=_unique_keys
)
# a digit byte to "0", a byte an integer may follow to "|", any other byte to " "
_INT_MARKS = bytes(
    ord("0") if chr(i) in "0123456789" else ord("|") if chr(i) in "-[,: \t\n\r" else 32
    for i in range(256)
)
_LONG_INT = b"|" + b"0" * (_MAX_INT_DIGITS + 1)


def _check_text_in(doc: Any) -> None:
    """Every string and key must encode back to UTF-8; walked without recursion."""
    stack: list[Any] = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, dict):
            for key in value:
                _check_text(key)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def _check_text(text: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"text holds a lone surrogate escape at offset {exc.start}") from None


def json_bytes(value: Any) -> bytes:
    """Solidity ``bytes`` on a JSON wire: ``0x``-hex of even length, or (as Newton's gateway
    sends them) an array of integers 0..255. ``ValueError`` for anything else, bools included."""
    if isinstance(value, list):
        if _INT_ONLY.issuperset(map(type, value)):  # no bool, no int subclass
            try:
                return bytes(value)
            except (ValueError, OverflowError):  # an int out of 0..255: named below
                pass
        bad = next(b for b in value if not (type(b) is int and 0 <= b < 256))
        raise ValueError(f"a byte array holds {preview(bad)}, not an integer 0..255")
    if isinstance(value, str):
        # fromhex skips whitespace, so its output has the full length only when every
        # character after 0x was a hex digit of a pair: what _HEX_RE accepts, without the regex
        if value.startswith("0x"):
            try:
                raw = bytes.fromhex(value[2:])
            except ValueError:
                raw = b""
            if 2 * len(raw) == len(value) - 2:
                return raw
        if _HEX_RE.match(value):
            return bytes.fromhex(value[2:])
        raise ValueError(f"{preview(value)} is not 0x-hex of whole bytes")
    raise ValueError(f"expected 0x-hex or an array of byte values, got {preview(value)}")


def one_spelling(doc: Mapping[str, Any], snake: str, camel: str, default: Any = None) -> Any:
    """A field of a Newton document, spelled ``snake`` (our wire, Newton's task response) or
    ``camel`` (Newton's gateway inside ``intent`` and ``task``). Both spellings with different
    values are a ``ValueError``: which one a reader picks must never decide what was attested."""
    both = snake in doc and camel in doc
    if both and json.dumps(doc[snake], sort_keys=True) != json.dumps(doc[camel], sort_keys=True):
        raise ValueError(f"{snake} and {camel} are both given, with different values")
    return doc[snake] if snake in doc else doc.get(camel, default)


def preview(value: Any) -> str:
    """A short, safe rendering of a hostile value for an error message."""
    if isinstance(value, str):
        return repr(value[:40] + ("…" if len(value) > 40 else ""))
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 256 else f"a {value.bit_length()}-bit integer"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict | list):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    return f"a {type(value).__name__}"
