"""``agentguard audit verify`` on a file that is no audit log says so, and a tampered log still
reads as tampered."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentguard import NotAnAuditLog
from agentguard._audit_cli import check_is_audit_log
from agentguard.audit import AuditLog

from .conftest import cli

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "content",
    [b"# notes\nhello\n", b'{"a": 1}\n', b"\x00\xff\xfe binary\n", b"[1, 2, 3]\n"],
)
def test_a_file_that_is_not_an_audit_log_says_so(tmp_path: Path, content: bytes) -> None:
    """Before: exit 1 and "TAMPERED at entry seq 1", as if an audit log had been edited."""
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    done = cli("audit", "verify", str(path))
    assert done.returncode == 2
    assert "is not an agentguard audit log" in done.stderr
    assert "TAMPERED" not in done.stderr + done.stdout and "Traceback" not in done.stderr
    with pytest.raises(NotAnAuditLog):
        check_is_audit_log(path)


def test_a_log_whose_first_entry_was_edited_is_still_tampered(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.append("authorized", {"amount": 1000})
    log.append("signed", {"amount": 1000})
    log.close()
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0].replace(b'{"amount":1000}', b'{"amount": 9000}') + lines[1])
    done = cli("audit", "verify", str(path))
    assert done.returncode == 1
    assert "TAMPERED at entry seq 1" in done.stderr


def test_a_log_whose_every_line_was_replaced_still_fails(tmp_path: Path) -> None:
    """An attacker who overwrites the whole log gets a non-zero exit either way."""
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"nothing happened\n")
    assert cli("audit", "verify", str(path)).returncode != 0


def test_a_deeply_nested_line_is_no_entry_and_no_crash(tmp_path: Path) -> None:
    """Found by the audit fuzz suite: json.loads on 100,000 "[" raised RecursionError (not
    a typed error) from the not-an-audit-log check."""
    path = tmp_path / "deep.jsonl"
    path.write_bytes(b"[" * 100_000 + b"\n")
    with pytest.raises(NotAnAuditLog):
        check_is_audit_log(path)
