"""The asyncio bookkeeping worker's sleep (``_bookkeeping._Alarm``): it ends when its time is
up or when rung, whichever comes first; a ring while nobody sleeps wakes nothing later (the
worker reads the queue before each sleep); a cancelled sleep leaves no timer behind; and a
submit that lands while the worker lingers still goes in the same round."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentguard.pipeline import _bookkeeping
from agentguard.pipeline._steps import GatewayCommit


def test_a_sleep_ends_when_its_time_is_up() -> None:
    async def run() -> float:
        alarm = _bookkeeping._Alarm()
        start = time.monotonic()
        await alarm.sleep(0.05)
        return time.monotonic() - start

    assert 0.04 <= asyncio.run(run()) < 2.0


def test_a_ring_ends_a_sleep_at_once_and_an_earlier_ring_is_not_kept() -> None:
    async def run() -> tuple[float, float]:
        alarm = _bookkeeping._Alarm()
        alarm.ring()  # nobody sleeps: wakes nothing, now or later
        start = time.monotonic()
        await alarm.sleep(0.05)
        unrung = time.monotonic() - start
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, alarm.ring)
        start = time.monotonic()
        await alarm.sleep(30.0)
        return unrung, time.monotonic() - start

    unrung, rung = asyncio.run(run())
    assert unrung >= 0.04
    assert rung < 5.0


def test_a_cancelled_sleep_leaves_no_timer_and_rings_nothing() -> None:
    async def run() -> int:
        alarm = _bookkeeping._Alarm()
        sleeper = asyncio.ensure_future(alarm.sleep(30.0))
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        before = sum(not h.cancelled() for h in loop._scheduled)  # type: ignore[attr-defined]
        sleeper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeper
        alarm.ring()  # after the sleep ended: harmless
        assert alarm._waiter is None
        return before - sum(not h.cancelled() for h in loop._scheduled)  # type: ignore[attr-defined]

    assert asyncio.run(run()) == 1  # the sleep's own timer, cancelled with it


class _Authorizer:
    def __init__(self) -> None:
        self.rounds: list[list[tuple[str, str]]] = []

    async def commit(self, task_id: str, outcome: str) -> None:
        self.rounds.append([(task_id, outcome)])

    async def commit_many(self, commits: list[tuple[str, str]]) -> list[Exception | None]:
        self.rounds.append(list(commits))
        return [None] * len(commits)


class _Guard:
    def __init__(self) -> None:
        self.authorizer = _Authorizer()


def test_commits_submitted_while_the_worker_lingers_share_its_round() -> None:
    async def run() -> list[list[tuple[str, str]]]:
        guard = _Guard()
        book = _bookkeeping.AsyncBookkeeper(guard)
        book.linger = 0.2
        for i in range(5):
            book.submit(GatewayCommit(task_id=f"0x{i:064x}", outcome="settled"))
            await asyncio.sleep(0.01)
        deadline = time.monotonic() + 5
        while book.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert book.pending == 0
        return guard.authorizer.rounds

    rounds = asyncio.run(run())
    assert [len(r) for r in rounds] == [5]
    assert [t for r in rounds for t, _ in r] == [f"0x{i:064x}" for i in range(5)]
