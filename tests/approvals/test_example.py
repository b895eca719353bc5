"""``examples/approval.py`` runs end to end against the local stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "approval.py"


def test_the_approval_example_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "10 USDC to 0x" in done.stdout  # the person saw the amount in human units
    assert "person   approved it, signed by" in done.stdout
    assert "agent    transfer landed in block" in done.stdout
