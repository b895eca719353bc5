"""Red team on the audit log: lines that ``verify`` calls intact while a reader sees other content.

The attacker controls a string that reaches a record (a hostile gateway's deny reason, a paid
server's error text, a target contract's revert string) or can rewrite the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentguard._json import canonical_json
from agentguard.audit import GENESIS, AuditLog, Entry, entry_hash

# What a hostile gateway puts in its deny reason: after a line break, something shaped like
# the next entry, an "authorized" one.
FORGED = '{"hash":"00","kind":"authorized","record":{"amount":"0"},"seq":2}'
LINE_BREAKS = {"U+2028": "\u2028", "U+2029": "\u2029", "NEL U+0085": "\x85"}


def _log(tmp_path: Path) -> tuple[AuditLog, Path]:
    path = tmp_path / "audit.jsonl"
    return AuditLog(path, clock=iter(range(1_764_000_000, 1_764_000_100)).__next__), path


@pytest.mark.parametrize("brk", LINE_BREAKS.values(), ids=LINE_BREAKS.keys())
def test_a_line_break_in_a_record_stays_one_line_for_every_reader(tmp_path: Path, brk: str) -> None:
    """Before the fix, canonical JSON (``ensure_ascii=False``) wrote U+2028, U+2029 and NEL
    raw: ``verify`` said intact (it splits on ``\\n`` only) while ``str.splitlines()``, and the
    editors that honour these separators, showed the entry as two lines, the second one
    the attacker's."""
    log, path = _log(tmp_path)
    log.append("denied", {"detail": f"policy says no{brk}{FORGED}"})
    log.append("sent", {"tx": "0x01"})
    text = path.read_text("utf-8")
    assert brk not in text
    assert len(text.splitlines()) == 2  # one line per entry, whoever splits them
    assert AuditLog(path).verify().ok
    first = json.loads(text.splitlines()[0])
    assert first["record"]["detail"] == f"policy says no\\u{ord(brk):04x}{FORGED}"


HIDING = {
    "right-to-left override": "\u202e",
    "zero-width space": "\u200b",
    "word joiner": "\u2060",
    "BOM": "\ufeff",
    "CSI (C1)": "\x9b",
    "DEL": "\x7f",
}


@pytest.mark.parametrize("char", HIDING.values(), ids=HIDING.keys())
def test_characters_that_hide_or_reorder_text_are_written_visibly(
    tmp_path: Path, char: str
) -> None:
    """Before the fix these were written raw: a zero-width character inside ``0xdead...``
    hides the address from ``grep``; a bidi override shows ``0001`` as ``1000`` on screen; a C1
    CSI or DEL acts on the terminal that ``cat``s the log. Now each is the text ``\\uXXXX``."""
    log, path = _log(tmp_path)
    log.append("denied", {f"k{char}": f"pay 0x{char}dead 0001"})
    text = path.read_text("utf-8")
    assert char not in text and f"\\\\u{ord(char):04x}" in text
    assert AuditLog(path).verify().ok


def test_a_lone_surrogate_from_a_server_is_logged_not_raised(tmp_path: Path) -> None:
    """A server's JSON ``"\\ud800"`` decodes (Python's json) to a lone surrogate, which has no
    UTF-8 form. Before the fix ``append`` raised ``UnicodeEncodeError`` (not an agentguard
    error) and the entry, a denial say, never reached the log. Now it is written as text."""
    log, path = _log(tmp_path)
    detail = json.loads('"gateway: \\ud800 denied"')
    entry = log.append("denied", {"detail": detail, "\udfff": 1})
    assert entry.record == {"detail": "gateway: \\ud800 denied", "\\udfff": 1}
    assert AuditLog(path).verify().ok


@pytest.mark.parametrize("brk", [*LINE_BREAKS.values(), "\u202e"], ids=[*LINE_BREAKS, "RLO"])
def test_verify_refuses_a_raw_disguising_character_even_when_the_hashes_agree(
    tmp_path: Path, brk: str
) -> None:
    """A log written whole by someone who recomputed the hashes (or by an older version) with
    such a character raw: each line is its canonical JSON and the chain links, yet a reader sees
    something else. ``verify`` names the character."""
    path = tmp_path / "audit.jsonl"
    record = {"detail": f"no{brk}{FORGED}"}
    ts = "2025-11-24T16:00:00.000000Z"
    digest = entry_hash(1, ts, "denied", record, GENESIS)
    path.write_bytes(Entry(1, ts, "denied", record, GENESIS, digest).line())
    assert path.read_bytes() == canonical_json(json.loads(path.read_bytes())) + b"\n"
    report = AuditLog(path).verify()
    assert not report.ok and report.first_bad_seq == 1
    assert f"U+{ord(brk):04X} raw" in report.problem


FLOAT_FORMS = {
    "exponent case": (b"1e+16", b"1E+16"),
    "no exponent sign": (b"1e+16", b"1e16"),
    "written out": (b"1e+16", b"10000000000000000.0"),
    "trailing zero": (b"0.5", b"0.50"),
    "negative zero": (b"-0.0", b"-0.00"),
}


@pytest.mark.parametrize(("written", "rewritten"), FLOAT_FORMS.values(), ids=FLOAT_FORMS.keys())
def test_another_spelling_of_the_same_number_is_a_rewrite(
    tmp_path: Path, written: bytes, rewritten: bytes
) -> None:
    """A float re-spelled parses to the same value and so to the same hash; only the bytes
    check catches it, even against an anchored head (covers float forms the issue-14 tests
    did not)."""
    log, path = _log(tmp_path)
    last = log.append("sent", {"fee": float(written)})
    raw = path.read_bytes()
    assert written in raw
    path.write_bytes(raw.replace(written, rewritten))
    assert json.loads(path.read_bytes()) == json.loads(raw)
    report = AuditLog(path).verify(expected_head=last.hash)
    assert not report.ok and "not the canonical JSON" in report.problem
