"""Every usage or configuration mistake is one line and exit 2, never a traceback; a
challenger never creates a file or tables where ``--state`` points."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agentguard.cli import main

CASES = [
    "no source", "a missing state file", "a state that is not SQLite", "another SQLite database",
    "a gateway without a key", "an unreachable gateway", "an audit log without policy material",
    "a missing audit log", "a bad registration file", "a deep JSON file",
    "a policy dir that is a file", "a negative cursor", "a zero limit",
]  # fmt: skip


def _bad(tmp_path: Path) -> dict[str, list[str]]:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE x (a)")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "bad.json").write_text('{"registration": {}, "policy": {}}')
    (tmp_path / "notjson").mkdir()
    (tmp_path / "notjson" / "x.json").write_text("[" * 100_000)
    (tmp_path / "audit.jsonl").write_text("")
    return {
        "no source": [],
        "a missing state file": ["--state", str(tmp_path / "missing.db")],
        "a state that is not SQLite": ["--state", str(Path(__file__))],
        "another SQLite database": ["--state", str(other)],
        "a gateway without a key": ["--gateway", "http://127.0.0.1:9/"],
        "an unreachable gateway": ["--gateway", "http://127.0.0.1:9/", "--api-key", "k"],
        "an audit log without policy material": ["--audit", str(tmp_path / "audit.jsonl")],
        "a missing audit log": ["--audit", str(tmp_path / "none.jsonl"), "--policy-dir", str(tmp_path / "dir")],
        "a bad registration file": ["--audit", str(tmp_path / "audit.jsonl"), "--policy-dir", str(tmp_path / "dir")],
        "a deep JSON file": ["--audit", str(tmp_path / "audit.jsonl"), "--policy-dir", str(tmp_path / "notjson")],
        "a policy dir that is a file": ["--audit", str(tmp_path / "audit.jsonl"), "--policy-dir", str(other)],
        "a negative cursor": ["--state", str(other), "--after", "-1"],
        "a zero limit": ["--state", str(other), "--limit", "0"],
    }  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_mistakes_are_one_line_and_exit_2(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENTGUARD_API_KEY", raising=False)
    cases = _bad(tmp_path)
    assert sorted(cases) == sorted(CASES)
    argv = cases[case]
    assert main(["challenge", "run", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("agentguard: ") and "Traceback" not in err
    assert not (tmp_path / "missing.db").exists()
    with sqlite3.connect(tmp_path / "other.db") as db:
        tables = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    assert tables == [("x",)]


def test_without_the_network_extra_the_challenger_names_it(tmp_path: Path) -> None:
    """`agentguard challenge` is listed without regopy installed; running it names the extra."""
    import subprocess
    import sys

    code = (
        "import sys\nsys.modules['regopy'] = None\nfrom agentguard.cli import main\n"
        "sys.exit(main(['challenge', 'verify', 'record.json']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 2 and "'network' extra" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_package_exports_what_it_loads_lazily() -> None:
    import agentguard.challenge as challenge

    assert set(challenge.__all__) == {
        *challenge._LAZY,
        "ChallengeError",
        "ChallengeRetry",
        "NotAChallengeRecord",
    }
    for name in challenge.__all__:
        assert getattr(challenge, name) is not None
