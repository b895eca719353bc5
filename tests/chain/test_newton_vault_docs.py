"""docs/architecture.md's "Deploying a Newton-mode vault" block runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()


def test_the_newton_vault_deployment_block_runs() -> None:
    section = DOC[DOC.index("Deploying a Newton-mode vault") :]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    done = subprocess.run(
        [sys.executable, "-c", block.group(1)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.fullmatch(r"Newton vault 0x[0-9a-fA-F]{40}", done.stdout.strip())
