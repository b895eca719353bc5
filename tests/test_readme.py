"""The README's code blocks run as written, or say why not."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_the_quickstart_runs_and_signs_once() -> None:
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
    done = subprocess.run(
        [sys.executable, "-c", BLOCKS[0] + check], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("signed once")


def test_every_other_block_says_why_it_does_not_run_here() -> None:
    for block in BLOCKS[1:]:
        before = README[: README.index(block)]
        paragraph = " ".join(before.rsplit("###", 1)[-1].split())
        assert "does not run as written" in paragraph, block[:80]
