"""``examples/langchain_agent.py`` runs (a subprocess, as a user would) and tells the story:
3 USDC lands, 8 USDC is refused and the model answers with the refusal it read.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "langchain_agent.py"


def test_the_langchain_example_runs() -> None:
    command = [sys.executable, str(EXAMPLE)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(
        line.startswith("tool:  wallet_balance [success] The wallet") and "100 USDC" in line
        for line in lines
    )
    assert any(line.startswith("tool:  transfer [success] Sent 3 USDC to") for line in lines)
    (refused,) = [line for line in lines if line.startswith("tool:  transfer [error]")]
    assert "5000000" in refused or "5 USDC" in refused
    reason = refused.removeprefix("tool:  transfer [error] ")
    assert f"model: I paid 3 USDC. I could not pay 8 USDC more: {reason}" in lines
    assert lines[-1] == "onchain: the shop holds 3 USDC"
