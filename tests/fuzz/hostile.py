"""The fuzz suite's budget, its hostile-input strategies and its one oracle.

Every parser that reads bytes someone else controls (a 402 server, a gateway, an operator, an
OpenGradient node, an audit file on disk, the environment) is fed three kinds of input: valid
documents mutated in place (wrong types, huge integers, deep nesting, byte arrays for hex,
case changes, truncations, unknown keys), the same documents broken as JSON text (duplicate
keys, ``NaN``/``Infinity``, 400-digit numbers, invalid UTF-8, a BOM, cut short), and raw bytes.

The oracle (``outcome``): the call returns a value or raises one of the allowed typed errors
(``AgentGuardError`` unless a parser documents another), within a time limit, and the error's
text names none of the secrets in play. Anything else is a finding.

Budget: a fixed number of examples per test and ``derandomize=True``, so CI runs the same
inputs every time, well under 90 s on two shared cores. ``AGENTGUARD_FUZZ_SCALE=10`` multiplies
every budget; ``AGENTGUARD_FUZZ_RANDOM=1`` draws fresh random inputs (a deep local run).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from agentguard import AgentGuardError

__all__ = [
    "HANG_SECONDS",
    "FoundError",
    "budget",
    "hex_forms",
    "json_text",
    "mutated",
    "outcome",
    "python_values",
    "wire_values",
]

_SCALE = float(os.environ.get("AGENTGUARD_FUZZ_SCALE", "1") or 1)
_RANDOM = os.environ.get("AGENTGUARD_FUZZ_RANDOM", "") not in ("", "0")
HANG_SECONDS = 10.0
"""A parser that takes longer than this on one input hangs (a slow-drip or a quadratic path)."""

settings.register_profile(
    "agentguard-fuzz",
    derandomize=not _RANDOM,
    database=None,
    deadline=None,  # two shared cores: wall time per example is noise; hangs are caught below
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)


def budget(examples: int) -> settings:
    """This test's fixed example budget under the fuzz profile (never the global profile:
    loading a profile here would change every other hypothesis test in the session)."""
    return settings(
        settings.get_profile("agentguard-fuzz"), max_examples=max(1, int(examples * _SCALE))
    )


# -- the oracle --------------------------------------------------------------------------------


class FoundError(AssertionError):
    """A finding: the parser's outcome was not a value or a typed refusal."""


class _Hang(BaseException):
    """Raised by the alarm; a ``BaseException`` so no ``except Exception`` in a parser eats it."""


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def ring(signum: int, frame: Any) -> None:
        raise _Hang

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def hex_forms(secret: str | bytes) -> set[str]:
    """Every spelling of a secret a leak could take: the text itself, and for key material its
    hex with and without 0x (case is ignored by the search)."""
    if isinstance(secret, bytes):
        return {secret.hex()}
    forms = {secret}
    body = secret[2:] if secret[:2].lower() == "0x" else secret
    if re.fullmatch(r"[0-9a-fA-F]{16,}", body):
        forms.add(body)
    return forms


def leaked(text: str, secrets: Iterable[str | bytes]) -> str | None:
    """The first secret whose spelling appears in ``text`` (case-insensitive), else ``None``."""
    lowered = text.lower()
    for secret in secrets:
        for form in hex_forms(secret):
            if form and form.lower() in lowered:
                return form
    return None


def outcome(
    parse: Callable[..., Any],
    *args: Any,
    allowed: type[BaseException] | tuple[type[BaseException], ...] = AgentGuardError,
    secrets: Sequence[str | bytes] = (),
    **kwargs: Any,
) -> Any:
    """``parse(*args, **kwargs)``'s value, or the allowed error it raised; a finding otherwise."""
    try:
        with _alarm(HANG_SECONDS):
            return parse(*args, **kwargs)
    except _Hang:
        raise FoundError(f"{_name(parse)} hung (> {HANG_SECONDS:g} s) on this input") from None
    except allowed as exc:
        shown = f"{exc} {exc!r}"
        secret = leaked(shown, secrets)
        if secret is not None:
            raise FoundError(f"{_name(parse)}'s {type(exc).__name__} shows a secret") from exc
        return exc
    except Exception as exc:
        raise FoundError(
            f"{_name(parse)} raised {type(exc).__module__}.{type(exc).__name__}, not a typed "
            f"error: {str(exc)[:300]!r}"
        ) from exc


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


# -- values ------------------------------------------------------------------------------------

_EDGE_INTS = [0, 1, -1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**255, 2**256 - 1, 2**256, -(2**255)]


def _hexish() -> st.SearchStrategy[str]:
    return st.one_of(
        st.binary(max_size=70).map(lambda b: "0x" + b.hex()),
        st.binary(max_size=40).map(lambda b: "0X" + b.hex().upper()),
        st.binary(min_size=1, max_size=40).map(lambda b: "0x" + b.hex()[1:]),  # odd length
        st.binary(max_size=40).map(lambda b: b.hex()),
        st.sampled_from(["0x", "0x0", "0xzz", "0x" + "f" * 64, "0x" + "0" * 40, " 0x00", "0x00 "]),
    )


def _base_scalars(*, python: bool) -> st.SearchStrategy[Any]:
    floats = (
        st.floats()
        if python
        else st.floats(allow_nan=False, allow_infinity=False).filter(math.isfinite)
    )
    texts = st.text(max_size=40) if python else st.text(st.characters(codec="utf-8"), max_size=40)
    return st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from(_EDGE_INTS),
        st.integers(min_value=-(10**78), max_value=10**79),
        floats,
        texts,
        _hexish(),
        st.sampled_from(
            [
                "",
                " ",
                "allow",
                "deny",
                "success",
                "failed",
                "exact",
                "upto",
                "\x00",
                "\u202e",
                "eip155:8453",
                "base",
                "1e3",
                "-0",
                "00",
                "NaN",
            ]
        ),
    )


def _values(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = st.one_of(
        st.text(st.characters(codec="utf-8"), max_size=12),
        st.sampled_from(
            ["", "x402Version", "accepts", "amount", "scheme", "network", "intent", "result"]
        ),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.lists(st.integers(-2, 300), max_size=40),  # byte arrays, some out of range
            st.dictionaries(keys, inner, max_size=4),
        ),
        max_leaves=10,
    )


wire_values = _values(_base_scalars(python=False))
"""Any value ``strict_loads`` can return: what a parser behind it can be handed."""
python_values = _values(_base_scalars(python=True))
"""Any JSON-like Python value, NaN/Infinity and lone surrogates included: for public APIs
that take parsed documents (a caller may have used a lenient ``json.loads``)."""


# -- structured mutation ---------------------------------------------------------------------


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(doc, list) and len(doc) <= 64:  # not every byte of a byte array
        for i, value in enumerate(doc):
            found += _paths(value, (*prefix, i))
    return found


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    _get(doc, path[:-1])[path[-1]] = value
    return doc


def _twist(value: Any, draw: Callable[[st.SearchStrategy[Any]], Any], values: Any) -> Any:
    """A plausible wrong form of ``value``: what a buggy or lying peer sends instead."""
    options: list[Any] = []
    if isinstance(value, bool):
        options += [int(value), str(value).lower(), None]
    elif isinstance(value, int):
        options += [
            str(value),
            value + 1,
            value - 1,
            -value,
            value * 2**200,
            value + 2**256,
            float(value) if abs(value) < 2**53 else 1e300,
            hex(value),
            True,
            [value],
        ]
    elif isinstance(value, str):
        options += [
            value.upper(),
            value.lower(),
            value[: len(value) // 2],
            value + value,
            " " + value,
            value + "\x00",
            value * 200,
            None,
            0,
            [value],
            {"v": value},
        ]
        if value.startswith("0x") and len(value) % 2 == 0:
            options.append(list(bytes.fromhex(value[2:])) if _is_hex(value[2:]) else value[2:])
            options.append(value[2:])
        if value.isdigit() and len(value) < 100:
            options += [int(value), "0" + value, value + ".0", "-" + value, "1e" + value[:3]]
    elif isinstance(value, list):
        options += [value[:-1], value + value, value[::-1], [], {"0": value}, "0x" + "00" * 32]
        if value and all(type(b) is int and 0 <= b < 256 for b in value):
            options += ["0x" + bytes(value).hex(), [*value, 256], [*value[:-1], -1], value[:31]]
    elif isinstance(value, dict):
        options += [[], "", list(value.values()), {k: None for k in value}]
        options += [{**value, "__proto__": 1}, {k.upper(): v for k, v in value.items()}]
    elif value is None:
        options += ["", 0, False, [], {}]
    options.append(_nest(value, draw(st.integers(1, 24))))
    options.append(draw(values))
    return draw(st.sampled_from(options))


def _is_hex(text: str) -> bool:
    return re.fullmatch(r"(?:[0-9a-fA-F]{2})*", text) is not None


def _nest(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def mutated(
    draw: Callable[[st.SearchStrategy[Any]], Any],
    doc: Any,
    values: st.SearchStrategy[Any] = wire_values,
    max_edits: int = 3,
) -> Any:
    """``doc`` (a JSON document; not modified) with 1..``max_edits`` targeted edits."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, max_edits))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        target = _get(doc, path)
        edit = draw(st.sampled_from(["twist", "twist", "replace", "delete", "add", "keep"]))
        if edit == "delete" and path and isinstance(_get(doc, path[:-1]), dict | list):
            parent = _get(doc, path[:-1])
            del parent[path[-1]]
        elif edit == "add" and isinstance(target, dict):
            key = draw(
                st.sampled_from([*target.keys(), "extra", "", "x" * 300])
                if target
                else st.just("extra")
            )
            target[str(key) + draw(st.sampled_from(["", "_", "Id"]))] = draw(values)
        elif edit == "replace":
            doc = _set(doc, path, draw(values))
        elif edit == "twist":
            doc = _set(doc, path, _twist(target, draw, values))
    return doc


# -- JSON text ---------------------------------------------------------------------------------

_NUMBER = re.compile(rb"(?<![\w.\"])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


@st.composite
def json_text(draw: Callable[[st.SearchStrategy[Any]], Any], doc: Any) -> bytes:
    """``doc`` as UTF-8 JSON text, then broken the ways text breaks between two parsers."""
    raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=draw(st.booleans())).encode()
    how = draw(
        st.sampled_from(
            [
                "same",
                "truncate",
                "duplicate",
                "constant",
                "bignum",
                "deep",
                "deeper",
                "bytes",
                "bom",
                "trailing",
                "surrogate",
                "whitespace",
                "flip",
            ]
        )
    )
    if how == "truncate":
        return raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    if how == "duplicate" and raw.startswith(b"{") and len(raw) > 2:
        key = draw(
            st.sampled_from(
                [*(k.encode() for k in doc), b"x"] if isinstance(doc, dict) and doc else [b"x"]
            )
        )
        return (
            b'{"'
            + key
            + b'":'
            + draw(st.sampled_from([b"1", b"null", b'"0x00"', b"{}"]))
            + (b"," + raw[1:])
        )
    if how in ("constant", "bignum"):
        numbers = list(_NUMBER.finditer(raw))
        token = (
            draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"]))
            if how == "constant"
            else draw(st.sampled_from([b"9" * 79, b"9" * 400, b"1" * 5000, b"-" + b"9" * 100]))
        )
        if not numbers:
            return raw.replace(b"null", token, 1) if b"null" in raw else token
        match = draw(st.sampled_from(numbers))
        return raw[: match.start()] + token + raw[match.end() :]
    if how == "deep":
        n = draw(st.sampled_from([33, 65, 200]))
        return b"[" * n + raw + b"]" * n
    if how == "deeper":
        n = draw(st.sampled_from([3000, 50_000]))
        return b'{"a":' * n + b"1" + b"}" * n
    if how == "bytes":
        at = draw(st.integers(0, len(raw)))
        junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xe2\x80"]))
        return raw[:at] + junk + raw[at:]
    if how == "bom":
        return b"\xef\xbb\xbf" + raw
    if how == "trailing":
        return raw + draw(st.sampled_from([b" ", b"x", b"{}", b",", b"\n\x00"]))
    if how == "surrogate":
        return raw.replace(b'"', b'"\\ud800', 1) if b'"' in raw else b'"\\udc00"'
    if how == "whitespace":
        return b" \t\r\n" + raw.replace(b",", b" ,\n ") + b"\n"
    if how == "flip" and raw:
        at = draw(st.integers(0, len(raw) - 1))
        return raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1 :]
    return raw
