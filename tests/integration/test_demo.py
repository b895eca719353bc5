"""``make demo`` (``examples/demo.py``) runs end to end on the local stack it starts, and every
step ends as the policy says: read from its output, as a person watching it would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.py"
SHOP = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
REFUSED = "✗ tool   transfer → the model reads: "


@pytest.fixture(scope="module")
def lines() -> list[str]:
    done = subprocess.run(
        [sys.executable, str(DEMO)],
        capture_output=True, text=True, timeout=300, cwd=DEMO.parents[1], check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [line.strip() for line in done.stdout.splitlines()]


def _after(lines: list[str], first: str) -> list[str]:
    """The lines from the first one starting with ``first`` on."""
    starts = [i for i, line in enumerate(lines) if line.startswith(first)]
    assert starts, f"no line starts with {first!r}"
    return lines[starts[0] :]


def test_the_vault_steps_end_as_the_policy_says(lines: list[str]) -> None:
    marks = [line[:1] for line in lines if line.startswith(("✓ buy", "✗ buy", "✓ send", "✗ send"))]
    assert marks == ["✓", "✗", "✗", "✓", "✗"]
    assert "✓ the vault reverted: AgentVault: InsufficientQuorum(valid=0, threshold=2)" in lines
    assert "shop received 9.00 USDC; the vault holds 91.00 USDC" in lines
    assert lines[-1] == "every outcome matched the policy."


def test_the_langchain_agent_lands_within_the_cap_and_reads_the_refusal(lines: list[str]) -> None:
    step = _after(lines, "a LangChain agent with the guarded toolkit")
    assert any(line.startswith(f"✓ tool   transfer → the model reads: Sent 2 USDC to {SHOP}")
               for line in step)  # fmt: skip
    (refusal,) = [line.removeprefix(REFUSED) for line in step if line.startswith(REFUSED)]
    # the cap in human units, and nothing signed
    assert refusal.startswith("REFUSED by the local spend budget; nothing was done.")
    assert "Cap per call: 5 USDC;" in refusal and "this call needs: 8 USDC." in refusal
    (answer,) = [line for line in step if line.startswith("model  answers:")]
    assert answer.endswith(refusal)  # the model's next turn read the tool's result
    assert "the shop received 2 USDC from the agent's tools" in step


def test_the_approved_transfer_waits_for_a_person_and_lands(lines: list[str]) -> None:
    step = _after(lines, "a transfer above an approval threshold waits for a person")
    seen = _after(step, "person   sees a pending request 0x")
    assert seen[1] == "amount     8 USDC" and seen[2] == f"recipient  {SHOP}"
    assert seen[3].startswith("reason     ") and "approval threshold" in seen[3]
    assert seen[4].startswith("expires    ") and seen[4].endswith(" min)")
    landed = _after(seen, "person   approved it, signed by 0x")
    assert landed[1].startswith("✓ the approved transfer landed: tx 0x")
    assert landed[2] == "the shop received 8 USDC"
