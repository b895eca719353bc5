"""Red team, gateway bookkeeping: make the dedupe window forget a task id, then queue a second
commit and a release for that (landed, committed) task. The queue sends them (it no longer
remembers), and the real reference gateway refuses both: the task stays committed, counted
once. Held: the window is an optimisation, the gateway's state is the guarantee.
"""

from __future__ import annotations

import pytest

from agentguard.network import ReferenceNetwork
from agentguard.pipeline import GatewayCommit, GatewayRelease, _bookkeeping
from agentguard.pipeline._bookkeeping import bookkeeper
from tests.redteam.test_rt6_commit_release_race import _assert_committed, _task
from tests.x402.conftest import connect


def test_a_forgotten_task_id_sent_again_is_refused(
    network: ReferenceNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_bookkeeping, "_REMEMBERED", 1)
    with connect(network) as guard:
        sent: list[tuple[str, str]] = []
        real_commit, real_release = guard.authorizer.commit, guard.authorizer.release

        def commit(task_id: str, outcome: str) -> None:
            sent.append(("commit", task_id))
            real_commit(task_id, outcome)

        def release(task_id: str) -> None:
            sent.append(("release", task_id))
            real_release(task_id)

        guard.authorizer.commit = commit  # type: ignore[method-assign]
        guard.authorizer.release = release  # type: ignore[method-assign]
        book = bookkeeper(guard)
        book.rounds = 1
        landed, other = _task(guard), _task(guard)
        book.submit(GatewayCommit(landed, "0x" + "ab" * 32))
        assert book.flush(30) == 0
        book.submit(GatewayCommit(other, "0x" + "cd" * 32))  # pushes `landed` out of memory
        assert book.flush(30) == 0
        book.submit(GatewayCommit(landed, "again"))
        assert book.flush(30) == 0
        book.submit(GatewayRelease(landed))  # the same id: still the dedupe's job...
        assert book.flush(30) == 0
        assert ("commit", landed) in sent[2:], "the forgotten id was not sent again"
        _assert_committed(guard, landed)  # ...and the gateway's: still committed
