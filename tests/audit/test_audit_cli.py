"""``agentguard audit verify|show`` as a user runs it: a real subprocess."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from agentguard._audit_cli import verify_command
from agentguard.audit import AuditLog

pytestmark = pytest.mark.integration


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentguard.cli", "audit", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    for i, kind in enumerate(["authorized", "signed", "sent", "committed"]):
        log.append(kind, {"i": i, "amount": 1000 + i})
    return path


def test_verify_intact_then_tampered(log_path: Path) -> None:
    ok = cli("verify", str(log_path))
    assert ok.returncode == 0, ok.stderr
    assert f"intact: 4 entries, head {AuditLog(log_path).head()}" in ok.stdout

    log_path.write_bytes(log_path.read_bytes().replace(b'"amount":1001', b'"amount":9001'))
    bad = cli("verify", str(log_path))
    assert bad.returncode == 1
    assert "TAMPERED at entry seq 2 (line 2)" in bad.stderr
    assert "does not match its hash (edited)" in bad.stderr
    assert bad.stdout == ""


def test_verify_against_an_anchored_head_and_a_missing_file(log_path: Path) -> None:
    head = AuditLog(log_path).head()
    assert cli("verify", str(log_path), "--head", head).returncode == 0
    log_path.write_bytes(b"".join(log_path.read_bytes().splitlines(keepends=True)[:3]))
    cut = cli("verify", str(log_path), "--head", head)
    assert cut.returncode == 1 and "cut from the end" in cut.stderr
    missing = cli("verify", str(log_path.with_name("nope.jsonl")))
    assert missing.returncode == 2 and "cannot read audit log" in missing.stderr


def test_show_last(log_path: Path) -> None:
    out = cli("show", str(log_path), "--last", "2")
    assert out.returncode == 0
    rows = out.stdout.splitlines()
    assert len(rows) == 2
    assert rows[0].split()[0] == "3" and "sent" in rows[0] and '"amount":1002' in rows[0]
    assert rows[1].split()[0] == "4" and "committed" in rows[1]


def test_handler_directly(log_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert verify_command(argparse.Namespace(path=log_path, head=None)) == 0
    log_path.write_bytes(log_path.read_bytes().replace(b'"i":3', b'"i":4'))
    assert verify_command(argparse.Namespace(path=log_path, head=None)) == 1
    assert "TAMPERED at entry seq 4" in capsys.readouterr().err


def test_a_duplicate_key_rewrite_is_tampering_to_verify_and_damage_to_show(log_path: Path) -> None:
    """Issue 14.3 from the command line: ``"amount":9001`` sits in the text (what grep finds),
    while a parser keeps the genuine value after it, so the re-hashed entry used to verify."""
    head = AuditLog(log_path).head()
    text = log_path.read_bytes()
    log_path.write_bytes(text.replace(b'"amount":1001', b'"amount":9001,"amount":1001'))
    bad = cli("verify", str(log_path), "--head", head)
    assert bad.returncode == 1
    assert "TAMPERED at entry seq 2 (line 2): it repeats the key 'amount'" in bad.stderr
    rows = cli("show", str(log_path), "--last", "4").stdout.splitlines()
    assert rows[1].split()[0] == "?" and "damaged line (it repeats the key 'amount'" in rows[1]
    assert [r.split()[0] for r in rows] == ["1", "?", "3", "4"]
