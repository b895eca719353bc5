"""A hostile gateway against s9-client's ``strict_loads``: a byte pre-scan now decides whether
integers are bounded one by one (a Python call each) or read by the C default; the decoders
are built once and shared by every thread; the surrogate walk is skipped when no ``\\u`` is
present. Every document below is judged against ff20b76's reader (the reference in
tests/unit/test_json_differential.py, verbatim): same value or same refusal, and the
hostile ones must be refused, through the real client where it matters."""

from __future__ import annotations

import json
import json.scanner
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agentguard import GatewayProtocolError
from agentguard._json import _BOUNDED, _UNBOUNDED, strict_loads
from tests.task_ids import asked_id
from tests.unit.test_json_differential import _outcome, old_strict_loads

from ._s9_client import attestation_doc, body, intent, serve

LONG = "1" * 81  # one digit past the bound
EDGE = "9" * 80  # at the bound: still read

# every place the scanner starts a number, and places it does not
_BEFORE = [
    "",
    " ",
    "\t",
    "\r",
    "\n",
    "\r\n\t ",
    "-",
    " -",
    "[",
    "[ ",
    "[\t\r\n",
    "[[[[[[",
    "[[],[[",
    "[1,",
    "[1 ,\n",
    "[1,-",
    '{"a":',
    '{"a" :',
    '{"a":\n\t',
    '{"a":-',
    '{"a":[{"b":[',
    '{"a":1,"b":',
    # not JSON whitespace: the scanner refuses these before any number
    "\f",
    "\v",
    "\u00a0",
    "\u2028",
    "\u3000",
    "\ufeff",
    "[\ufeff",
    "+",
    "[+",
    '{"a":+',
    "0",
    "[0",
    "[-0",
]
_AFTER = ["", "]", "]]]]]]", "]]]", "}", "]}]}", " ", "\n", ",1]", ".0", "e5", "E+5", "e-5", ".5e1"]


def _documents() -> Iterator[str]:
    closers = {"[": "]", "{": "}"}
    for before in _BEFORE:
        close = "".join(closers[c] for c in reversed(before) if c in closers)
        for digits in (LONG, EDGE, "1" * 200, "1" * 5000):
            yield before + digits + close
            for after in _AFTER:
                yield before + digits + after


def _same(raw: bytes | str) -> tuple[str, str]:
    old = _outcome(old_strict_loads, raw)
    assert _outcome(strict_loads, raw) == old, repr(raw[:80])
    return old


def test_every_number_position_is_judged_as_before() -> None:
    """Bytes, bytearray and text: a number the pre-scan misses would reach int() unbounded."""
    judged = 0
    refused_long = 0
    for text in _documents():
        raw = text.encode("utf-8")
        outcome = _same(raw)
        assert _outcome(strict_loads, bytearray(raw)) == outcome
        assert _same(text) == outcome
        if outcome[0] == "ValueError" and "an integer of" in outcome[1]:
            refused_long += 1
        judged += 1
    assert judged > 1000 and refused_long > 100


@pytest.mark.parametrize(
    "raw",
    [
        "[" + LONG + "]",
        "-" + LONG,
        '{"a":' + "-" + LONG + "}",
        " \t\r\n" + LONG,
        "[" * 30 + LONG + "]" * 30,
        '{"a":[1,2,{"b":[' + LONG + "]}]}",
        '["' + "x" * 1000 + '",' + LONG + "]",
        "[" + ",".join([EDGE] * 50 + [LONG]) + "]",
    ],
)
def test_a_long_integer_is_refused_before_int_reads_it(raw: str) -> None:
    """Even with Python's own 4300-digit guard switched off (a host may), the integer is
    refused by the bound, by length, never handed to int()."""
    old_limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        for doc in (raw, raw.replace("1" * 81, "1" * 200_000)):
            with pytest.raises(ValueError, match="an integer of"):
                strict_loads(doc.encode())
            with pytest.raises(ValueError, match="an integer of"):
                strict_loads(doc)
    finally:
        sys.set_int_max_str_digits(old_limit)


@pytest.mark.parametrize(
    "raw",
    [
        '"' + LONG + '"',  # digits in a string: text, not a number
        '{"' + LONG + '":1}',
        '["\\u0031' + "1" * 80 + '"]',  # a digit spelled as an escape, inside a string
        '["a: ' + LONG + '"]',  # a "number" after ": " inside a string
        "[" + EDGE + "," + EDGE + "]",
        "[-0, -0.0, 0e0, 1E400]",
        "[1e999]",
        "[-1e999]",
        "[" + "\u0661" * 81 + "]",  # Arabic-Indic digits: int() reads them, JSON does not
        "[1" + "\u0661" * 81 + "]",
        "[" + "\uff11" * 81 + "]",  # fullwidth digits
        "[00]",
        "[" + "0" * 81 + "]",
        "[-]",
        "[--1]",
        "[1.]",
        "[.1]",
        "[0x10]",
        "[Infinity]",
        "[NaN]",
        "\ufeff[1]",
        "[1]\ufeff",
    ],
)
def test_number_lookalikes_are_judged_as_before(raw: str) -> None:
    outcome = _same(raw.encode("utf-8"))
    assert _same(raw) == outcome


def test_the_c_scanner_reads_the_numbers() -> None:
    """The pre-scan counts ASCII digits only: that is right because the C scanner reads
    numbers from ASCII digits only. Python's fallback scanner matches ``\\d``, which takes
    any Unicode digit, so the pre-scan would miss 81 of U+0661: pin the assumption."""
    c_scanner = getattr(json.scanner, "c_make_scanner", None)
    assert c_scanner is not None
    for decoder in (_BOUNDED, _UNBOUNDED):
        assert type(getattr(decoder, "scan_once", None)) is c_scanner
    assert _BOUNDED.parse_int is not int and _UNBOUNDED.parse_int is int


# -- duplicate keys, surrogates ---------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"decision":"deny","decision":"allow"}',
        b'{"decision":"deny","decisio\\u006e":"allow"}',
        b'{"a\\/":1,"a/":2}',
        b'{"a":{"b":1,"\\u0062":2}}',
        b'[{"k":1},{"k":1,"k":1}]',
        b'{"\\ud83d\\ude00":1,"\xf0\x9f\x98\x80":2}',
    ],
)
def test_a_key_spelled_twice_is_refused(raw: bytes) -> None:
    assert _same(raw)[0] == "ValueError"
    with pytest.raises(ValueError, match="twice"):
        strict_loads(raw)


@pytest.mark.parametrize(
    ("raw", "refused"),
    [
        (b'["\\ud800"]', True),
        (b'{"\\udfff":1}', True),
        (b'["\\uD800x"]', True),
        (b'["\\\\ud800"]', False),  # an escaped backslash, then text "ud800"
        (b'["\\ud83d\\ude00"]', False),  # a pair: one character
        ('["\ud800"]', True),  # text (not bytes) holding the surrogate itself
        ('{"\udc00":1}', True),
        ('["é\\ud800"]', True),
        ('["é"]', False),
    ],
)
def test_lone_surrogates_are_refused_in_bytes_and_text(raw: bytes | str, refused: bool) -> None:
    outcome = _same(raw)
    assert (outcome[0] == "ValueError") is refused, outcome
    if refused:
        assert "surrogate" in outcome[1]


# -- through the client -----------------------------------------------------------------------


def _bytes_answer(edit: Any) -> Any:
    """The client's outcome for an honest answer whose body ``edit`` rewrites as text."""
    asked = intent()

    def answer(request: dict[str, Any]) -> bytes:
        att = attestation_doc(asked, task_id=asked_id(request))
        return edit(body(att, request["id"]).decode()).encode()

    try:
        return serve(answer).authorize(asked)
    except GatewayProtocolError as exc:
        return exc


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda b: b.replace('"tier": 0', '"tier": ' + "0" * 0 + "1" * 100_000), "an integer of"),
        (lambda b: b.replace('"tier": 0', '"tier":\t-' + LONG), "an integer of"),
        (lambda b: b.replace('"tier": 0', '"tier": 0, "tier": 1'), "twice"),
        (
            lambda b: b.replace(
                '"decision": "allow"', '"decision": "deny", "decisio\\u006e": "allow"'
            ),
            "twice",
        ),
        (lambda b: b.replace('"reasons": []', '"reasons": ["\\udead"]'), "surrogate"),
        (lambda b: "\ufeff" + b, "BOM"),
        (lambda b: b.replace('"tier": 0', '"tier": 0e0'), "tier"),
        (lambda b: b.replace('"tier": 0', '"tier":\f0'), "not JSON"),
    ],
)
def test_a_hostile_body_is_refused_by_the_client(edit: Any, says: str) -> None:
    outcome = _bytes_answer(edit)
    assert isinstance(outcome, GatewayProtocolError), outcome
    assert says in str(outcome)


def test_negative_zero_reads_as_zero_as_before() -> None:
    """``-0`` is JSON for the integer 0, in both readers: tier -0 is tier 0 (what was signed)."""
    outcome = _bytes_answer(lambda b: b.replace('"tier": 0', '"tier": -0'))
    assert not isinstance(outcome, Exception) and outcome.tier == 0


# -- threads ----------------------------------------------------------------------------------


def test_threads_parsing_at_once_through_the_shared_decoders_do_not_mix() -> None:
    """Eight threads on the two shared decoders, switching as often as the interpreter
    allows, each inside the Python callbacks (key hook, bounded int) the C scanner calls:
    every outcome must be the one the document has alone."""
    docs: list[bytes] = []
    for i in range(24):
        nested = {f"k{i}_{j}": [j, {"v": i * 1000 + j, "s": "x" * j}] for j in range(40)}
        docs.append(json.dumps(nested).encode())  # unbounded path
        docs.append(json.dumps({"pad": "a: " + "7" * 90, "n": nested}).encode())  # bounded path
        docs.append(b'{"a":1,"b":{"c":' + str(i).encode() + b',"c":2}}')  # refused: twice
        docs.append(b'[{"x":' + b"1" * (81 + i) + b"}]")  # refused: long
        docs.append(b'["\\ud800", {"k": ' + str(i).encode() + b"}]")  # refused: surrogate
    expected = [_outcome(strict_loads, d) for d in docs]
    wrong: list[int] = []
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:

        def run(seed: int) -> None:
            for n in range(len(docs) * 4):
                k = (seed * 31 + n * 7) % len(docs)
                if _outcome(strict_loads, docs[k]) != expected[k]:
                    wrong.append(k)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old_interval)
    assert wrong == []
    assert sum(e[0] == "value" for e in expected) == 48
