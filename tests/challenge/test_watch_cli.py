"""`agentguard challenge watch` refuses its mistakes with exit status 2 and a message, before
it reads or writes anything: no state file is ever created, no key is ever echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentguard.cli import main


def watch(*args: str) -> int:
    return main(["challenge", "watch", *args])


def test_a_state_that_does_not_exist_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "state.sqlite3"
    assert watch("--state", str(missing), "--cursor", str(tmp_path / "c"), "--once") == 2
    assert not missing.exists() and not (tmp_path / "c").exists()
    assert "no gateway state" in capsys.readouterr().err


def test_mistakes_are_refused_and_secrets_never_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENTGUARD_API_KEY", raising=False)
    state = ["--state", str(tmp_path / "state.sqlite3"), "--cursor", str(tmp_path / "c")]
    assert watch(*state, "--operator", "0x" + "11" * 20) == 2
    assert "--operator and --threshold go together" in capsys.readouterr().err
    key = tmp_path / "guardian.key"
    secret = "ab" * 31 + "cd"
    key.write_text(secret + "\n")
    assert watch(*state, "--rpc", "http://127.0.0.1:9", "--guardian-key-file", str(key)) == 2
    assert "name them" in capsys.readouterr().err
    key.write_text("not a key " + secret[:20])
    code = watch(
        *state,
        "--rpc",
        "http://127.0.0.1:9",
        "--vault",
        "0x" + "22" * 20,
        "--guardian-key-file",
        str(key),
    )
    out = capsys.readouterr()
    assert code == 2 and secret[:20] not in out.err + out.out
    assert watch("--gateway", "http://127.0.0.1:9", "--cursor", str(tmp_path / "c")) == 2
    assert "--api-key" in capsys.readouterr().err
