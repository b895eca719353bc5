"""A refusal must not leave the ledger handle stuck on an old view of the budget."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from agentguard._exceptions import BudgetExceeded
from agentguard._intent import Spend
from agentguard.ledger import Ledger, Limits, RateCap, WindowCap

LIMITS = {
    "window": Limits(windows=[WindowCap("usdc", 3600, 3)]),
    "rate": Limits(rate=[RateCap(3600, 3)]),
}


@pytest.mark.parametrize("cap", ["window", "rate"])
def test_a_kept_refusal_does_not_wedge_the_handle(
    cap: str, open_shared: Callable[..., Ledger]
) -> None:
    """Before: SQLite's refusal wording read the window through a cursor it never closed, and
    the exception (kept by the caller, as any agent loop that logs it does) kept the cursor
    alive, so the connection stayed on its old snapshot past the ROLLBACK. Once another
    process wrote, every later call of that handle failed at once with sqlite3's raw
    "database is locked" (not an agentguard error), for good: 8 processes x 16 threads racing
    one cap lost dozens of calls. The handle must keep working and see the other's change."""
    a, b = open_shared(), open_shared()
    limits = LIMITS[cap]

    def reserve(ledger: Ledger, key: str) -> str:
        spend = Spend(asset="usdc", amount=1)
        return ledger.reserve("ag", spend, key=key, expires_at=time.time() + 60, limits=limits).id

    for i in range(3):
        reserve(a, f"k{i}")
    with pytest.raises(BudgetExceeded) as kept:
        reserve(a, "k3")
    b.release("k0", "given back by another process")
    assert reserve(a, "k4")  # sees the room b made, and can write
    assert kept.value.cap == 3
