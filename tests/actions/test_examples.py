"""The examples run as written, against the local stack they start themselves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(name: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        capture_output=True, text=True, timeout=180, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_decorated() -> None:
    lines = _run("decorated.py").splitlines()
    assert lines[0] == "✓ send_email: sent 'hello' to ann@example.com"
    assert lines[1].startswith("✗ delete_account: REFUSED by policy")
    assert "delete_account(string)" in lines[1] and "offchain_calls" in lines[1]
    assert lines[2].startswith("✓ pay 2 USDC: paid, tx 0x")
    assert lines[3].startswith("✗ pay 50 USDC: REFUSED by policy")
    assert "per-transaction cap" in lines[3] and len(lines) == 4


def test_shadow() -> None:
    out = _run("shadow.py")
    assert out.startswith("sent to ann@example.com\ndeleted ann\n")  # both ran
    assert "  send_email: allow\n" in out
    assert "  delete_account: deny function delete_account(string)" in out
