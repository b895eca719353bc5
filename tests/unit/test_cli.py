"""The top-level command: what a new user types first."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from agentguard.cli import main


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"agentguard {version('agentguard')}"


def test_help_names_every_command_group(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "Let an AI agent spend money safely" in out
    for group in ("network", "approvals", "audit"):
        assert f"agentguard {group}" in out
    assert "``" not in out  # a user-facing text, not a developer docstring
