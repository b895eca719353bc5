"""Red team, ``Guard.flush(timeout)``: "wait as long as it takes" is a valid request.

Before the fix ``flush(math.inf)`` (or any timeout beyond the platform's ``time_t``) raised
``OverflowError`` from the lock wait: a dependency's exception out of a public agentguard
call, after which a caller's ``close()`` logic never ran. Now it waits until the queue is
empty. The authorizer is a stub (the queue is under test, not the gateway).
"""

from __future__ import annotations

import math
import threading

import pytest

from agentguard.pipeline import GatewayCommit
from agentguard.pipeline._bookkeeping import Bookkeeper


class Slow:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.go = threading.Event()

    def commit(self, task_id: str, outcome: str) -> None:
        self.go.wait(10)
        self.sent.append(task_id)


class FakeGuard:
    def __init__(self) -> None:
        self.authorizer = Slow()


@pytest.mark.parametrize("timeout", [math.inf, 1e30])
def test_flush_without_a_bound_waits_until_sent(timeout: float) -> None:
    guard = FakeGuard()
    book = Bookkeeper(guard)
    book.submit(GatewayCommit("0x" + "01" * 32, "landed"))
    threading.Timer(0.2, guard.authorizer.go.set).start()
    assert book.flush(timeout) == 0
    assert guard.authorizer.sent == ["0x" + "01" * 32]
