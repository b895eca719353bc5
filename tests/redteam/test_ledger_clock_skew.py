"""Red-team: shared rolling-window rows against processes whose clocks differ.

Every process passes its own ``now`` to the backend, and the SQLite and Redis backends keep a
*persistent* rolling row per agent, asset and window (a cursor; a sorted set plus a total) that
the caller's ``now - window`` advances for good. One process with a fast clock (NTP off, a VM
resumed from suspend) makes every honest process sharing the ledger forget the window.
PostgreSQL sums its buckets from each caller's own ``now`` on every call, so it holds.
Fixed: the Redis script and the SQLite backend move a shared row only up to the server's TIME
(the host's clock); a caller ahead of it gets its own further-rolled view for its check.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agentguard._exceptions import BudgetExceeded
from agentguard._intent import Spend
from agentguard.ledger import Limits, WindowCap, open_ledger
from tests.ledger.conftest import base_url, fresh_url

USDC = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
AGENT = "0x1111111111111111111111111111111111111111"
DAY = 86_400


@pytest.mark.parametrize("kind", ["sqlite", "redis", "postgres"])
def test_a_fast_clock_in_one_process_does_not_reopen_the_window_for_others(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Honest process A spends 60 of a 100/day cap. Process B, whose clock is two days ahead,
    reserves 1. A then asks for 60 more at its own (true) time: 121 in A's day, so it must be
    refused. Before the fix, B's reserve popped A's 60 from the shared row (Redis sorted set,
    SQLite cursor), so A's second 60 was allowed: 120 spent in one real day against a cap of
    100. Now a row moves for good only up to the server's (host's) clock."""
    url = fresh_url(kind, base_url(kind, request), tmp_path)
    now = time.time()
    limits = Limits(windows=[WindowCap(USDC, DAY, 100)])
    honest = open_ledger(url, clock=lambda: now, create=True)
    skewed = open_ledger(url, clock=lambda: now + 2 * DAY)
    try:
        honest.reserve(AGENT, Spend(asset=USDC, amount=60), key="a1", expires_at=now + 600,
                       limits=limits)  # fmt: skip
        honest.mark_signed("a1", "0xsent")  # signed: no clock may release it as never-signed
        skewed.reserve(AGENT, Spend(asset=USDC, amount=1), key="b1",
                       expires_at=now + 2 * DAY + 600, limits=limits)  # fmt: skip
        with pytest.raises(BudgetExceeded):
            honest.reserve(AGENT, Spend(asset=USDC, amount=60), key="a2",
                           expires_at=now + 600, limits=limits)  # fmt: skip
    finally:
        honest.close()
        skewed.close()
