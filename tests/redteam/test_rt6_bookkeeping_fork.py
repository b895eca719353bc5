"""Red team, gateway bookkeeping: a fork after gateway calls were queued.

The queue (its jobs, its lock, its worker) was copied into a forked child as it stood. Before
the fix: (1) the child's first ``submit`` started a worker that sent every call the parent
had queued a second time (the parent sends them too: not exactly once); (2) a call the
parent's worker had in flight at the fork stayed "active" in the child forever, so every
``flush`` (and interpreter exit) in the child waited its full bound; (3) a parent thread
holding the queue's lock at the fork left it held in the child, so the child's next payment
hung for ever in ``submit``, after its ledger had committed. Now a child starts with empty
queues and fresh locks; the ids the parent queued are remembered so the child never sends
them.

The authorizer is a stub that records which task ids each process sent: what is under test
is the queue, not the gateway (``tests/x402/test_deferred_commit.py`` covers the gateway).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from agentguard.pipeline import GatewayCommit
from agentguard.pipeline._bookkeeping import bookkeeper

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


HUNG = 98


class Recorder:
    """Writes ``<pid> <task>`` per sent call; the first commit blocks until ``go`` is set."""

    def __init__(self, log: Path) -> None:
        self.log, self.go, self.blocked = log, threading.Event(), threading.Event()

    def commit(self, task_id: str, outcome: str) -> None:
        if task_id == "t1":
            self.blocked.set()
            self.go.wait(30)
        with self.log.open("a") as f:
            f.write(f"{os.getpid()} {task_id}\n")

    def release(self, task_id: str) -> None:
        self.commit(task_id, "")

    def close(self) -> None:
        pass


class FakeGuard:
    def __init__(self, log: Path) -> None:
        self.authorizer = Recorder(log)


def _child(guard: FakeGuard) -> None:
    signal.signal(signal.SIGALRM, lambda *_: os._exit(HUNG))
    signal.alarm(20)  # a hang in submit ends the child, not the test run
    book = bookkeeper(guard)
    book.submit(GatewayCommit("t2", "landed"))  # the parent's, already queued
    book.submit(GatewayCommit("t3", "landed"))  # the child's own
    left = book.flush(3.0)
    os._exit(0 if left == 0 else 10 + left)


@pytest.mark.parametrize("lock_held", [False, True], ids=["idle lock", "lock held at fork"])
def test_a_forked_child_sends_only_its_own_calls_and_never_hangs(
    tmp_path: Path, lock_held: bool
) -> None:
    log = tmp_path / "sent"
    guard = FakeGuard(log)
    book = bookkeeper(guard)
    book.submit(GatewayCommit("t1", "landed"))
    assert guard.authorizer.blocked.wait(10)  # t1 in flight in the parent's worker
    book.submit(GatewayCommit("t2", "landed"))  # queued behind it
    held = threading.Event()
    release_lock = threading.Event()

    def hold_the_lock() -> None:
        with book._cond:
            held.set()
            release_lock.wait(10)

    holder = threading.Thread(target=hold_the_lock)
    if lock_held:
        holder.start()
        assert held.wait(10)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            _child(guard)
        finally:
            os._exit(99)
    release_lock.set()
    if lock_held:
        holder.join()
    _, status = os.waitpid(pid, 0)
    guard.authorizer.go.set()
    assert book.flush(10) == 0
    sent = [line.split() for line in log.read_text().splitlines()]
    by_child = sorted(task for who, task in sent if int(who) == pid)
    by_parent = sorted(task for who, task in sent if int(who) != pid)
    assert os.WIFEXITED(status)
    assert os.WEXITSTATUS(status) != HUNG, "the child hung in submit on a lock held at the fork"
    assert os.WEXITSTATUS(status) == 0, f"the child's flush left {os.WEXITSTATUS(status) - 10}"
    assert by_child == ["t3"], "the child sent the parent's queued calls again"
    assert by_parent == ["t1", "t2"]
