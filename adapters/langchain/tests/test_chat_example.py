"""``examples/chat_opengradient.py`` runs on the local stack and says what happened."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "chat_opengradient.py"


def test_the_chat_opengradient_example_pays_proves_refuses_and_reconciles() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "✓ 'what is an attestation?' → 'You said: what is an attestation?'" in out
    assert "paid up to 0.1 OPG in upto session" in out
    assert "(the server reports a charge of 0.000018 OPG; attestation task" in out
    assert out.count("TEE proof verified=True") == 2
    assert "budget refused: BudgetExceeded" in out
    assert "the ledger counts 0.000039 OPG (charged 0.000039 OPG)" in out
    assert "every answer was paid under attestation" in out
