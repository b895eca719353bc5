"""The README's code blocks run as written, or say why not; its command lines parse."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from agentguard.cli import build_parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
[X402_BLOCK] = [b for b in BLOCKS if "serve(seller)" in b]
RUNNABLE = [BLOCKS[0], X402_BLOCK]


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_the_quickstart_runs_shows_it_worked_and_signs_once(tmp_path: Path) -> None:
    """The quickstart, as written, followed by a check of what it produced."""
    check = (
        "\nassert verified.task_id == tx.task_id\n"
        "from agentguard import AttestationReplayed\n"
        "try:\n"
        "    signer.sign_transaction(verified, nonce=1, gas=60_000, max_fee_per_gas=10**9,\n"
        "                            max_priority_fee_per_gas=10**6)\n"
        "except AttestationReplayed:\n"
        "    print('signed once')\n"
    )
    done = _run(BLOCKS[0] + check, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    allowed, signed, once = done.stdout.strip().splitlines()
    assert re.fullmatch(r"allowed: [23] of 3 operators attested task 0x[0-9a-f]{8}…", allowed)
    assert re.match(r"signed:  transaction 0x[0-9a-f]{64} ", signed)
    assert once == "signed once"


@pytest.mark.integration
def test_the_x402_block_pays_a_local_402_api_once(tmp_path: Path) -> None:
    """Before: `signer` was undefined, the network closed, and the placeholder URL ended in a
    raw httpx.ConnectError. Now it runs as written against the local stack."""
    done = _run(X402_BLOCK, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    answer, paid = done.stdout.strip().splitlines()
    assert answer == "200 Echo: hello"
    assert paid.startswith("paid over x402 upto: 0.1 OPG signed and counted")
    verify = subprocess.run(
        [sys.executable, "-m", "agentguard.cli", "audit", "verify", "audit.jsonl"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert verify.returncode == 0 and "intact" in verify.stdout, verify.stderr


def test_every_other_block_says_why_it_does_not_run_here() -> None:
    for block in BLOCKS:
        if block in RUNNABLE:
            continue
        before = README[: README.index(block)]
        paragraph = " ".join(before.rsplit("###", 1)[-1].split())
        assert "does not run as written" in paragraph, block[:80]


def _command_lines() -> list[str]:
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split("#", 1)[0].strip()
            if command.startswith("agentguard "):
                lines.append(command)
    return lines


def test_every_agentguard_command_line_in_the_readme_parses() -> None:
    """Each `agentguard ...` line is a valid command with valid options (what it does against
    a real network is tests/cli/test_network_cli.py)."""
    lines = _command_lines()
    assert len(lines) >= 7
    parser = build_parser()
    for line in lines:
        args = parser.parse_args(shlex.split(line)[1:])
        assert callable(args.handler), line


OG_README = (Path(__file__).resolve().parents[1] / "adapters/opengradient/README.md").read_text()
OG_BLOCKS = re.findall(r"```python\n(.*?)```", OG_README, re.S)


def _undefined_names(code: str) -> str:
    """ruff's undefined-name check (F821) over ``code``: empty when every name is defined."""
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "F821", "--stdin-filename", "b.py"],
        input=code,
        capture_output=True,
        text=True,
    )
    return "" if done.returncode == 0 else done.stdout


@pytest.mark.integration
def test_the_opengradient_readme_example_runs_against_the_local_server(tmp_path: Path) -> None:
    """Before: a fragment (`wallet`, `w3`, `signer`, `guard`, `ledger` undefined)."""
    done = _run(OG_BLOCKS[0], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "You said: Hello | proof verified for 0x" in out
    assert "signed maximum: 100000000000000000" in out
    assert "You said: Hi | stream verified: True" in out
    committed = re.search(r"committed: (\d+) atomic OPG", out)
    assert committed is not None and int(committed.group(1)) > 0, out


def test_the_opengradient_readme_blocks_define_every_name_or_say_why_not() -> None:
    assert _undefined_names(OG_BLOCKS[0]) == ""
    for i, block in enumerate(OG_BLOCKS[1:], start=1):
        before = " ".join(OG_README[: OG_README.index(block)].rsplit("\n\n", 2)[-2].split())
        assert "does not run as written" in before, block[:80]
        continues = "continues the one above" in before
        code = OG_BLOCKS[i - 1] + block if continues else block
        assert _undefined_names(code) == "", (block[:80], _undefined_names(code))


def test_the_undefined_name_check_finds_a_fragment() -> None:
    assert "F821" in _undefined_names("auth = X402Auth(signer=signer)\n")
