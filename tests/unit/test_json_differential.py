"""``strict_loads`` and ``json_bytes`` against the implementations they replaced (main ff20b76,
copied below as they were): for every document, seeded random and hostile, the same value
(same repr: same types, same key order) or a ``ValueError`` with the same message. The fast
paths (integers read by the C default when no long digit run exists, no walk over ASCII text
without ``\\u``, fromhex without the regex) must refuse exactly what the old code refused."""

from __future__ import annotations

import json
import math
import random
import re
from typing import Any

import pytest

from agentguard._json import MAX_DEPTH, _check_depth, json_bytes, preview, strict_loads

# -- the reference: agentguard/_json.py at ff20b76, verbatim but for names --------------------

_MAX_INT_DIGITS = 80
# the one deliberate change since (s9-rt-client): \Z, where $ let "0x00\n" through
_HEX_RE = re.compile(r"^0x(?:[0-9a-fA-F]{2})*\Z")
_TOKENS = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)


def old_strict_loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    may_hold_surrogates = True
    if isinstance(raw, bytes | bytearray):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 text (invalid byte at offset {exc.start})") from None
        may_hold_surrogates = "\\u" in text
    else:
        text = raw
    _old_check_depth(text, max_depth)
    try:
        doc = json.loads(
            text,
            parse_constant=_old_no_constant,
            parse_float=_old_finite_float,
            parse_int=_old_bounded_int,
            object_pairs_hook=_old_unique_keys,
        )
    except RecursionError:
        raise ValueError(f"nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at offset {exc.pos})") from None
    if may_hold_surrogates:
        _old_check_text_in(doc)
    return doc


def _old_check_depth(text: str, max_depth: int) -> None:
    if text.count("[") + text.count("{") <= max_depth:
        return
    depth = 0
    for match in _TOKENS.finditer(text):
        lexeme = match.group()
        if lexeme in ("[", "{"):
            depth += 1
            if depth > max_depth:
                raise ValueError(f"nested deeper than {max_depth} levels")
        elif lexeme in ("]", "}"):
            depth -= 1


def _old_no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _old_bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits (a uint256 has at most 78)")
    return int(text)


def _old_finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]}… overflows a float")
    return value


def _old_unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"object has the key {key[:40]!r} twice")
            seen.add(key)
    return doc


def _old_check_text_in(doc: Any) -> None:
    stack: list[Any] = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            _old_check_text(value)
        elif isinstance(value, dict):
            for key in value:
                _old_check_text(key)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def _old_check_text(text: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"text holds a lone surrogate escape at offset {exc.start}") from None


def old_json_bytes(value: Any) -> bytes:
    if isinstance(value, list):
        if all(type(b) is int and 0 <= b < 256 for b in value):
            return bytes(value)
        bad = next(b for b in value if not (type(b) is int and 0 <= b < 256))
        raise ValueError(f"a byte array holds {preview(bad)}, not an integer 0..255")
    if isinstance(value, str):
        if _HEX_RE.match(value):
            return bytes.fromhex(value[2:])
        raise ValueError(f"{preview(value)} is not 0x-hex of whole bytes")
    raise ValueError(f"expected 0x-hex or an array of byte values, got {preview(value)}")


# -- the comparison ---------------------------------------------------------------------------


def _outcome(parse: Any, raw: Any) -> tuple[str, str]:
    try:
        return "value", repr(parse(raw))
    except ValueError as exc:
        return type(exc).__name__, str(exc)


def _same(raw: bytes | str) -> tuple[str, str]:
    old = _outcome(old_strict_loads, raw)
    assert _outcome(strict_loads, raw) == old, raw[:200]
    if isinstance(raw, bytes):
        assert _outcome(strict_loads, bytearray(raw)) == old
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return old
        assert _outcome(strict_loads, text) == _outcome(old_strict_loads, text)
    return old


# -- seeded random documents ------------------------------------------------------------------

_WS = ["", " ", "\n", "\t", "\r\n", "  \t"]


def _number(rng: random.Random) -> str:
    kind = rng.randrange(8)
    sign = rng.choice(["", "", "-"])
    digits = rng.choice([1, 2, 5, 19, 20, 77, 78, 79, 80, 81, 82, 120, 400])
    body = rng.choice("123456789") + "".join(rng.choice("0123456789") for _ in range(digits - 1))
    if kind == 0:
        return sign + "0"
    if kind <= 3:
        return sign + body  # an integer, maybe past the bound
    if kind == 4:
        return sign + body + "." + str(rng.randrange(10**6))  # a big number as a float
    if kind == 5:
        return sign + body[:3] + rng.choice(["e", "E", "e+", "e-"]) + str(rng.randrange(400))
    if kind == 6:
        return sign + "0." + body  # long fraction
    return sign + body[: rng.randrange(1, 30)] + "e" + rng.choice(["308", "309", "400", "-400"])


def _string(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randrange(6)):
        kind = rng.randrange(12)
        if kind == 0:
            parts.append("\\u" + rng.choice(["d800", "dbff", "dc00", "DFFF", "0041", "00e9"]))
        elif kind == 1:
            parts.append("\\ud83d\\ude00")  # a pair: fine
        elif kind == 2:
            parts.append(rng.choice(["\\n", '\\"', "\\\\", "\\/", "\\t", "\\b"]))
        elif kind == 3:
            parts.append(rng.choice(["café", "日本", "😀", "\u00a0"]))
        elif kind == 4:
            parts.append("0x" + "".join(rng.choice("0123456789abcdef") for _ in range(64)))
        elif kind == 5:
            parts.append(", " + "9" * rng.choice([80, 81, 100]))  # a long run inside text
        elif kind == 6:
            parts.append(rng.choice(["[", "{", "]", "}", ":", ",", "-"]))
        else:
            parts.append("".join(rng.choice("abcXYZ _-.") for _ in range(rng.randrange(8))))
    return '"' + "".join(parts) + '"'


def _value(rng: random.Random, depth: int) -> str:
    ws = rng.choice(_WS)
    kind = rng.randrange(10 if depth < 36 else 6)
    if kind == 0:
        return ws + rng.choice(["true", "false", "null", "NaN", "Infinity", "-Infinity"]) + ws
    if kind in (1, 2):
        return ws + _number(rng) + ws
    if kind in (3, 4, 5):
        return ws + _string(rng) + ws
    if kind in (6, 7):
        items = [_value(rng, depth + 1) for _ in range(rng.randrange(5))]
        return ws + "[" + ",".join(items) + "]" + ws
    keys = [_string(rng) for _ in range(rng.randrange(5))]
    if keys and rng.random() < 0.15:
        keys.append(rng.choice(keys))  # a duplicate key, at whatever depth this is
        rng.shuffle(keys)
    pairs = [k + rng.choice(_WS) + ":" + _value(rng, depth + 1) for k in keys]
    return ws + "{" + ",".join(pairs) + "}" + ws


def _mutate(rng: random.Random, text: bytes) -> bytes:
    if not text or rng.random() < 0.6:
        return text
    i = rng.randrange(len(text))
    choice = rng.randrange(4)
    if choice == 0:
        return text[:i]  # truncated
    if choice == 1:
        return text[:i] + bytes([rng.randrange(256)]) + text[i + 1 :]  # a byte flipped
    if choice == 2:
        return (
            text[:i] + rng.choice([b"\xef\xbb\xbf", b"\xed\xa0\x80", b"\x00", b"9" * 90]) + text[i:]
        )
    return text + rng.choice([b" ", b"x", b",", b"]"])


@pytest.mark.parametrize("seed", range(20))
def test_random_documents_parse_as_before(seed: int) -> None:
    rng = random.Random(seed)
    outcomes: set[str] = set()
    for _ in range(150):
        raw = _mutate(rng, _value(rng, 0).encode("utf-8", "surrogatepass"))
        outcomes.add(_same(raw)[0])
    assert outcomes == {"value", "ValueError"}  # both sides of the line were exercised


def test_deep_random_nesting_is_judged_as_before() -> None:
    rng = random.Random(7)
    for depth in (MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 200):
        for opener, closer in (("[", "]"), ('{"a":', "}")):
            raw = opener * depth + _number(rng) + closer * depth
            _same(raw.encode())


# -- hostile documents ------------------------------------------------------------------------

_HOSTILE: list[bytes | str] = [
    b'{"a": 1, "a": 2}',
    b'{"x": [{"y": {"k": 1, "k": 1}}]}',  # a duplicate deep down, same value
    b'{"a": 1, "\\u0061": 2}',  # the same key spelled two ways
    b'[{"a":{"b":{"c":{"d":{"e":{"f":1,"f":2}}}}}}]',
    b"1" * 80,
    b"1" * 81,
    b"-" + b"1" * 80,
    b"-" + b"1" * 81,
    b"[" + b"9" * 81 + b"]",
    b'{"n":' + b"9" * 81 + b"}",
    b'{"n": \n' + b"9" * 81 + b"}",
    b"[1," + b"1" * 5000 + b"]",  # past int()'s own digit limit too
    b"0" + b"1" * 90,  # a leading zero, then a long run: not JSON
    b"[" + b"1" * 90 + b".5]",  # a big number as a float
    b"[" + b"1" * 400 + b"]",
    b"[1" + b"0" * 400 + b".0]",  # a float that overflows
    b"[1e309]",
    b"[-1e309]",
    b"[1e-400]",
    b"[NaN]",
    b"[Infinity]",
    b"[-Infinity]",
    b"nan",
    b'"' + b"1" * 100 + b'"',  # a long run inside a string: still just text
    b'["0x' + b"12" * 100 + b'"]',
    b'["a", 0x12]',
    b'["\\ud800"]',
    b'{"\\udfff": 1}',
    b'["\\ud83d\\ude00", "\\ud83d"]',
    b'["\\\\ud800"]',  # an escaped backslash, then text: not an escape
    b'["\xed\xa0\x80"]',  # a surrogate as (invalid) UTF-8
    b"\xef\xbb\xbf[1]",  # a UTF-8 BOM
    "\ufeff[1]",
    "\ufeff" + "[" * 40 + "]" * 40,  # a BOM, and too deep: depth is judged first
    '["\ud800"]',  # a lone surrogate in a str, as is
    '{"\udc00": 1}',
    '["caf\u00e9", "\\u00e9"]',
    b"",
    b" ",
    b"[1] [2]",
    b"[1,]",
    b'{"a" 1}',
    b"[\x00]",
    b'["\x01"]',  # a raw control character in a string
    b"[1]\n",
    b"\t\r\n [1] \t\r\n",
    b"\x0b[1]",  # vertical tab is not JSON whitespace
    b"[1\xc2\xa0]",  # nor is NBSP
    b"[" * 100_000,
    b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
    b"[" * MAX_DEPTH + b"]" * MAX_DEPTH,
    b'["[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["]',  # brackets in text do not nest
    b"-",
    b"-0",
    b"[-0, 0, -0.0, 1E2, 1e-2]",
    b"\xff",
    b"\xc3",
]


@pytest.mark.parametrize("raw", _HOSTILE, ids=range(len(_HOSTILE)))
def test_hostile_documents_are_judged_as_before(raw: bytes | str) -> None:
    _same(raw)


def test_the_hostile_list_holds_refusals_and_values() -> None:
    outcomes = {_outcome(strict_loads, raw)[0] for raw in _HOSTILE}
    assert outcomes == {"value", "ValueError"}
    with pytest.raises(ValueError, match="twice"):
        strict_loads(b'{"a": 1, "\\u0061": 2}')
    with pytest.raises(ValueError, match="81 digits"):
        strict_loads(b'{"n":' + b"9" * 81 + b"}")
    assert strict_loads(b"[" + b"9" * 80 + b"]") == [int("9" * 80)]


# -- json_bytes -------------------------------------------------------------------------------


class _Str(str):
    pass


class _Int(int):
    pass


_BYTES_VALUES: list[Any] = [
    "0x",
    "0x00",
    "0xAbCd",
    "0x0",
    "0x000",
    "0xgg",
    "0x00\n",  # ff20b76's $ let a final newline through (fromhex skips it): now refused
    "0x00 11",
    "0x 0011",
    "0x00\t",
    " 0x00",
    "0X00",
    "00",
    "0x\u0660\u0660",  # Arabic-Indic zeros: digits to \d, not hex
    "0x" + "ab" * 32,
    _Str("0x0011"),
    [],
    [0, 255],
    [0, 256],
    [-1],
    [True, 1],
    [1.0],
    [_Int(3)],
    [2**200],
    [None],
    ["0x00"],
    [[1]],
    None,
    True,
    7,
    b"\x00",
    {"a": 1},
]


@pytest.mark.parametrize("value", _BYTES_VALUES, ids=range(len(_BYTES_VALUES)))
def test_json_bytes_reads_as_before(value: Any) -> None:
    assert _outcome(json_bytes, value) == _outcome(old_json_bytes, value)


def test_json_bytes_on_random_text_and_arrays() -> None:
    rng = random.Random(11)
    alphabet = "0123456789abcdefABCDEFxX \n\tg-"
    for _ in range(3000):
        text = rng.choice(["0x", "", "0X", " 0x"]) + "".join(
            rng.choice(alphabet) for _ in range(rng.randrange(12))
        )
        assert _outcome(json_bytes, text) == _outcome(old_json_bytes, text), text
        array = [
            rng.choice([0, 1, 255, 256, -1, True, None, 2**70]) for _ in range(rng.randrange(5))
        ]
        assert _outcome(json_bytes, array) == _outcome(old_json_bytes, array), array


def test_a_final_newline_is_not_hex() -> None:
    """ff20b76's ``$`` matched before a final newline and fromhex skipped it, so a hostile
    gateway could re-spell any 0x-hex field without touching what the signatures cover."""
    for value in ("0x00\n", "0x\n", "0x" + "ab" * 32 + "\n"):
        with pytest.raises(ValueError, match="is not 0x-hex"):
            json_bytes(value)


def _depth(check: Any, text: str, max_depth: int) -> str:
    try:
        check(text, max_depth)
    except ValueError as exc:
        return str(exc)
    return "ok"


def test_the_depth_check_judges_every_text_as_before() -> None:
    """``_check_depth`` without a Python step per token (strings cut at quotes when no
    backslash is present) against the token walk it replaced: brackets inside strings,
    escaped quotes, unterminated strings, a final backslash, unbalanced closers, non-ASCII."""
    rng = random.Random(1202)
    pieces = ["[", "]", "{", "}", '"', '"', "\\", '\\"', "\\\\", "a", ",", ":", "é", "\n", "0"]
    pieces += ["\ud800", "\x00", "\udfff\ud800", "\uff3b", "\u3010", "\\\ud800", " " * 50, "é" * 50]
    texts: list[str] = []
    for _ in range(30_000):
        texts.append("".join(rng.choice(pieces) for _ in range(rng.randrange(0, 80))))
    for depth in (30, 33, 64, 65, 200):
        inner: Any = rng.choice(['"[{"', 'x"]', "}]", "\\u005b"])
        for _ in range(depth):
            inner = [inner, {"k[": '"{"'}] if rng.random() < 0.5 else {"a": inner}
        texts.append(json.dumps(inner))
        texts.append(json.dumps(inner)[:-3])  # cut short
        texts.append('"' + "[" * depth)  # all inside one unterminated string
        texts.append("[" * depth + '"\\')
        # long runs of what is no mark (whitespace, non-ASCII, a lone surrogate), escapes or not
        for filler in (" ", "é", "\ud800", "\U0001f600"):
            run = filler * 5000
            texts.append("[" * depth + run + "]" * depth)
            texts.append("[]" * depth + run + '"\\""' + "[" * depth + run)
            texts.append('"' + run + '\\"' + "[" * depth + '"' + "[" * (depth // 2))
    seen = {"ok": 0, "refused": 0}
    for text in texts:
        for max_depth in (0, 3, 32, 64):
            expected = _depth(_old_check_depth, text, max_depth)
            assert _depth(_check_depth, text, max_depth) == expected, (text, max_depth)
            seen["ok" if expected == "ok" else "refused"] += 1
    assert min(seen.values()) > 10_000, seen
