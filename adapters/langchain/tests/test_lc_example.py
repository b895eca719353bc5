"""``examples/langchain_agent.py`` runs (a subprocess, as a user would) and tells the story:
3 USDC lands, 8 USDC is refused and the model answers with the refusal it read.

While ``agentguard.explain`` has not landed the subprocess first installs ``lc_shim``'s
stand-in; once it exists the example runs as is.
"""

# ruff: noqa: F811 - the fixture imported from lc_stack is a parameter here

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lc_stack import core_shim  # noqa: F401 - a fixture

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "langchain_agent.py"


def test_the_langchain_example_runs(core_shim: bool) -> None:
    if not core_shim:  # the real run_call and explain exist
        command = [sys.executable, str(EXAMPLE)]
    else:
        here = str(Path(__file__).parent)
        script = (
            f"import sys, runpy; sys.path.insert(0, {here!r}); import lc_shim; lc_shim.install(); "
            f"runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')"
        )
        command = [sys.executable, "-c", script]
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
