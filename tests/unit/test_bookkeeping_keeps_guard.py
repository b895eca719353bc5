"""A commit that lingers for company outlives the guard that queued it.

The bookkeeper holds its guard weakly (a quiet guard must be collected), and a commit now waits
up to ``LINGER`` for others to share its round trip. A wallet dropped right after its last
payment used to take that commit with it: the worker found the guard collected and the gateway
never heard (tests/wallet/test_usage_check.py failed on exactly that). The stub authorizer is
the test's witness; the real gateway's side is in tests/wallet/test_usage_check.py.
"""

from __future__ import annotations

import asyncio
import gc
import weakref

from agentguard.pipeline import GatewayCommit
from agentguard.pipeline._bookkeeping import AsyncBookkeeper, Bookkeeper

TASK = "0x" + "5a" * 32


class Witness:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def commit(self, task_id: str, outcome: str) -> None:
        self.sent.append((task_id, outcome))


class FakeGuard:
    def __init__(self, witness: Witness) -> None:
        self.authorizer = witness


def test_a_dropped_guard_still_sends_its_lingering_commit_then_is_collected() -> None:
    witness = Witness()
    guard = FakeGuard(witness)
    book = Bookkeeper(guard)
    book.linger = 60.0  # longer than any gc.collect() of a big test process
    book.submit(GatewayCommit(TASK, "landed"))
    gone = weakref.ref(guard)
    del guard
    gc.collect()
    assert gone() is not None  # held while its commit waits
    assert book.flush(10) == 0  # what close() or interpreter exit does
    assert witness.sent == [(TASK, "landed")]
    gc.collect()
    assert gone() is None  # nothing outstanding: no longer held


def test_the_async_queue_keeps_its_guard_the_same_way() -> None:
    witness = Witness()

    async def main() -> weakref.ref[FakeGuard]:
        guard = FakeGuard(witness)
        book = AsyncBookkeeper(guard)
        book.linger = 60.0  # longer than any gc.collect() of a big test process
        book.submit(GatewayCommit(TASK, "landed"))
        gone = weakref.ref(guard)
        del guard
        gc.collect()
        assert gone() is not None  # held while its commit waits
        assert await book.flush(10) == 0
        await asyncio.sleep(0)
        return gone

    gone = asyncio.run(main())
    assert witness.sent == [(TASK, "landed")]
    gc.collect()
    assert gone() is None
