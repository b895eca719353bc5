"""What a new user reads first: the help of every command and option."""

from __future__ import annotations

import argparse
import subprocess
import sys

from agentguard.cli import build_parser


def _parsers(
    parser: argparse.ArgumentParser, path: str
) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _parsers(child, f"{path} {name}")
    return found


def test_every_command_and_option_has_help() -> None:
    missing = []
    for path, parser in _parsers(build_parser(), "agentguard"):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [
                    f"{path} {choice.dest}" for choice in action._choices_actions if not choice.help
                ]
            elif not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_the_contracted_commands_exist() -> None:
    commands = {path for path, _ in _parsers(build_parser(), "agentguard")}
    for command in (
        "agentguard network up",
        "agentguard network status",
        "agentguard network down",
        "agentguard policy list",
        "agentguard policy show",
        "agentguard policy register",
        "agentguard policy simulate",
        "agentguard audit verify",
    ):
        assert command in commands


def test_the_installed_command_prints_its_version() -> None:
    from importlib.metadata import version

    done = subprocess.run(
        [sys.executable, "-m", "agentguard.cli", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"agentguard {version('agentguard')}"
