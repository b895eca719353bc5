"""Fuzz: the audit log reader (``agentguard audit verify`` / ``show``) on a file anyone with
write access may have edited, and the writer on records carrying a server's words.

``parse_line`` documents ``ValueError`` for a damaged line; ``verify`` always answers with a
``VerifyReport`` (a damaged file is a finding *about the file*, never a crash); the CLI exits
0, 1 or 2; ``append`` after damage refuses with ``ConfigurationError``. Whatever ``append``
accepted, ``verify`` must find intact.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard._audit_cli import show_command, verify_command
from agentguard._exceptions import ConfigurationError
from agentguard.audit import AuditLog, VerifyReport, parse_line, verify_lines

from .hostile import budget, mutated, outcome, python_values, wire_values


def _sample_lines() -> list[bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.jsonl"
        with AuditLog(path, clock=lambda: 1_764_000_000.0) as log:  # same bytes every run
            log.append("decision", {"decision": "allow", "task_id": "0x" + "ab" * 32})
            log.append("payment", {"amount": "10000", "reasons": ["ok", "üñí"], "n": 2**60})
            log.append("outcome", {"status": "landed", "nested": {"a": [1, 2.5, None, True]}})
        return path.read_bytes().splitlines(keepends=True)


LINES = _sample_lines()
ENTRIES = [json.loads(line) for line in LINES]


def _deep_line(depth: int) -> bytes:
    entry = dict(ENTRIES[0])
    return (
        json.dumps({**entry, "record": "X"}, sort_keys=True, separators=(",", ":"))
        .replace('"X"', '{"a":' * depth + "1" + "}" * depth)
        .encode()
        + b"\n"
    )


@st.composite
def _damaged_files(draw: Any) -> list[bytes]:
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["mutate", "raw", "drop", "swap", "cut", "deep", "bytes"]))
        if how == "mutate":
            doc = draw(mutated(ENTRIES[at % len(ENTRIES)], wire_values))
            text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            lines[at] = text.encode("utf-8", "surrogatepass") + b"\n"
        elif how == "raw":
            lines[at] = draw(st.binary(max_size=200)) + draw(st.sampled_from([b"\n", b""]))
        elif how == "drop":
            del lines[at]
        elif how == "swap" and len(lines) > 1:
            lines[0], lines[-1] = lines[-1], lines[0]
        elif how == "cut":
            lines[at] = lines[at][: draw(st.integers(0, len(lines[at])))]
        elif how == "deep":
            lines[at] = _deep_line(draw(st.sampled_from([40, 3000, 20_000])))
        elif how == "bytes":
            pos = draw(st.integers(0, max(0, len(lines[at]) - 1)))
            junk = draw(st.sampled_from([b"\xff", b"\xe2\x80\xae", b"\r", b" ", b"\\u0041"]))
            lines[at] = lines[at][:pos] + junk + lines[at][pos:]
        if not lines:
            lines = [b"\n"]
    return lines


def test_the_sample_log_is_intact() -> None:
    assert verify_lines(iter(LINES)).ok and len(LINES) == 3


@budget(300)
@given(_damaged_files())
def test_verify_reports_every_damage(lines: list[bytes]) -> None:
    for line in lines:
        outcome(parse_line, line, allowed=ValueError)
    report = outcome(verify_lines, iter(lines), allowed=())
    assert isinstance(report, VerifyReport)
    if lines != LINES[: len(lines)]:
        assert not report.ok or lines == LINES


def test_a_deeply_nested_line_is_a_damaged_line(tmp_path: Path) -> None:
    """Found by ``test_verify_reports_every_damage``'s ``deep`` edit: before the fix,
    ``parse_line`` let ``json.loads``'s ``RecursionError`` out, so ``verify`` raised and
    ``agentguard audit verify`` died with a traceback (not exit 1) on an edited file, and
    ``append`` after it raised instead of refusing with ``ConfigurationError``."""
    lines = [LINES[0], _deep_line(3000)]
    report = verify_lines(iter(lines))
    assert not report.ok and report.line == 2 and "nests too deeply" in report.problem
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"".join(lines))
    assert verify_command(argparse.Namespace(path=path, head=None)) == 1
    with AuditLog(path) as log, pytest.raises(ConfigurationError, match="damaged entry"):
        log.append("note", {"after": "damage"})


def test_a_line_nested_past_the_c_stack_is_refused_not_a_crash(tmp_path: Path) -> None:
    """Before the fix, in any process that imported web3 (py_ecc raises the recursion limit
    to 100,000) ``json.loads`` recursed 200,000 levels into an edited line and the process
    died with SIGSEGV: an ``AuditLog.append`` (which reads the last line) or ``audit verify``
    crashed instead of refusing. Run in a child so the crash, if it comes back, is seen."""
    path = tmp_path / "audit.jsonl"
    path.write_bytes(LINES[0] + _deep_line(200_000))
    code = (
        "import sys; sys.setrecursionlimit(100_000)\n"
        "from agentguard.audit import AuditLog\n"
        f"print(AuditLog({str(path)!r}).verify())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-500:]
    assert "TAMPERED at entry seq 2" in done.stdout and "nests too deeply" in done.stdout


def test_append_refuses_a_record_it_could_not_read_back(tmp_path: Path) -> None:
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(70):
        inner["a"] = {}
        inner = inner["a"]
    with AuditLog(tmp_path / "audit.jsonl") as log:
        with pytest.raises(ConfigurationError, match="nest at most"):
            log.append("note", deep)
        log.append("note", {"shallow": [[["ok"]]]})
    assert AuditLog(tmp_path / "audit.jsonl").verify().entries == 1


@budget(60)
@given(_damaged_files())
def test_cli_and_append_on_a_damaged_file(lines: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.jsonl"
        path.write_bytes(b"".join(lines))
        args = argparse.Namespace(path=path, head=None, last=5)
        assert outcome(verify_command, args, allowed=()) in (0, 1, 2)  # 2: not an audit log
        assert outcome(show_command, args, allowed=()) == 0
        with AuditLog(path) as log:
            appended = outcome(log.append, "note", {"after": "damage"}, allowed=ConfigurationError)
        if not isinstance(appended, ConfigurationError):
            assert AuditLog(path).verify().ok or not AuditLog(path).verify(None).ok


@budget(150)
@given(st.dictionaries(st.text(max_size=12), python_values, max_size=5))
def test_what_append_writes_verify_accepts(record: dict[str, Any]) -> None:
    """Records carry a server's words (reasons, errors); the log must stay verifiable."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.jsonl"
        with AuditLog(path) as log:
            entry = outcome(log.append, "decision", record, allowed=ConfigurationError)
        if not isinstance(entry, ConfigurationError):
            assert AuditLog(path).verify().ok
