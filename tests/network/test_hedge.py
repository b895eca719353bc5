"""The hedge's moving average (``FanOut.hedge_delay``) on a virtual clock: an operator that
accepts tasks and never answers must not raise it (each of its tasks would feed the hedge it
waited into the average, the next hedge longer, until its tasks outlast their timeout and
fail: one silent operator denying a quorum meant to tolerate it), while a quorum that is slow
because every operator is (load) still raises it, so load does not widen every task for ever.
The clock is the event loop's, moved by the test: no timings."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from agentguard.network.gateway import _fanout
from agentguard.network.gateway._fanout import HEDGE_MIN, FanOut, Vote

TIMEOUT = 1000.0  # virtual seconds: no task here runs out of time


class _Queue:
    """An operator's queue whose answers the test gives: ``asked`` holds each task's future."""

    def __init__(self) -> None:
        self.asked: list[asyncio.Future[Any]] = []
        self.sent = self.messages = 0

    def submit(self, *_: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.asked.append(future)
        return future

    def forget(self, _: Any) -> None:
        return None

    def close(self) -> None:
        return None


def _vote(link: Any, reply: Any, **_: Any) -> tuple[tuple[str, int], Vote]:
    """Every answer an allow (signatures are checked elsewhere; this is about the clock)."""
    return ("allow", 0), Vote(link, [], "0x")


@pytest.fixture
def fanout(monkeypatch: pytest.MonkeyPatch) -> tuple[FanOut, list[_Queue]]:
    monkeypatch.setattr(_fanout, "vote", _vote)
    monkeypatch.setattr(_fanout, "task_members", lambda *_: b"")
    links = [
        SimpleNamespace(address=f"0x{i:040x}", hosted=False, http=SimpleNamespace(close=None))
        for i in range(3)
    ]
    fan = FanOut(links, lambda: 0.0)  # type: ignore[arg-type]
    queues = [_Queue() for _ in links]
    for link, queue in zip(links, queues, strict=True):
        fan._queues[id(link)] = queue  # type: ignore[assignment]
    return fan, queues


def _task() -> Any:
    client = SimpleNamespace(
        address="0x" + "ab" * 20,
        policy_id=b"\x01" * 32,
        code_hash=b"\x02" * 32,
        registration_hash=b"\x03" * 32,
    )
    return SimpleNamespace(
        client=client, intent=SimpleNamespace(chain_id=1), percentage=66, timeout=TIMEOUT
    )


async def _steps() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def _on_virtual_clock(
    body: Callable[[Callable[[float], None]], Awaitable[None]],
) -> None:
    """Run ``body(advance)``; ``advance(s)`` moves the loop's clock on by ``s`` seconds."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        real = loop.time
        offset = [0.0]
        loop.time = lambda: real() + offset[0]  # type: ignore[method-assign]

        def advance(seconds: float) -> None:
            offset[0] += seconds

        await body(advance)

    asyncio.run(main())


def _ask(fan: FanOut) -> asyncio.Future[Any]:
    fan._rotation = 0  # operators 0 and 1 asked first, 2 on a widening
    return asyncio.ensure_future(
        fan.ask(_task(), b"\x04" * 32, "r", b"{}", 2**40, b"\x05" * 32, intent_json="{}")
    )


def test_an_operator_that_never_answers_does_not_raise_the_hedge(
    fanout: tuple[FanOut, list[_Queue]],
) -> None:
    fan, queues = fanout

    async def body(advance: Callable[[float], None]) -> None:
        for round_ in range(3):
            asking = _ask(fan)
            await _steps()
            queues[1].asked[round_].set_result({})  # at once; operator 0 never answers
            await _steps()
            assert len(queues[2].asked) == round_  # one vote: waiting for the hedge
            advance(100.0)  # far past any hedge
            await _steps()
            assert len(queues[2].asked) == round_ + 1  # widened to operator 2
            queues[2].asked[round_].set_result({})  # at once, once asked
            outcome = await asking
            assert outcome.decision == "allow"
            assert [vote.link for vote in outcome.votes] == [fan.links[1], fan.links[2]]
            # the quorum's answers each came at once: the 100 s waited for operator 0 is not
            # the network's usual pace (it was: 300 s, then 900 s, ...)
            assert fan.hedge_delay() == HEDGE_MIN
        assert fan.widened["slow"] == 3

    _on_virtual_clock(body)


def test_a_quorum_slow_because_everyone_is_still_raises_the_hedge(
    fanout: tuple[FanOut, list[_Queue]],
) -> None:
    """Widened for slowness, but an operator asked first answers as late as the one asked on
    the widening: its time counts, so the hedge follows the load."""
    fan, queues = fanout

    async def body(advance: Callable[[float], None]) -> None:
        asking = _ask(fan)
        await _steps()
        advance(1.0)
        await _steps()
        assert len(queues[2].asked) == 1  # widened: nobody answered within the hedge
        queues[1].asked[0].set_result({})  # 1 s after it was asked
        queues[2].asked[0].set_result({})
        outcome = await asking
        assert outcome.decision == "allow"
        assert fan.widened["slow"] == 1
        assert fan.hedge_delay() >= 3 * 1.0  # the quorum took a second: the usual pace now

    _on_virtual_clock(body)


def test_an_unhedged_quorum_sets_the_pace(fanout: tuple[FanOut, list[_Queue]]) -> None:
    fan, queues = fanout

    async def body(advance: Callable[[float], None]) -> None:
        asking = _ask(fan)
        await _steps()
        advance(0.04)  # within the 50 ms floor
        queues[0].asked[0].set_result({})
        queues[1].asked[0].set_result({})
        outcome = await asking
        assert outcome.decision == "allow"
        assert queues[2].asked == []  # not widened
        assert 3 * 0.04 <= fan.hedge_delay() < 3 * 1.0

    _on_virtual_clock(body)


def test_an_operator_answering_just_before_the_hedge_cannot_push_it_past_the_timeout(
    fanout: tuple[FanOut, list[_Queue]],
) -> None:
    """Operator 0 answers every task it is asked first just before the hedge (a valid vote,
    so it counts and raises the average), then goes silent: operators 1 and 2 still form the
    quorum within the timeout, because the hedge waits at most ``HEDGE_SHARE`` of it."""
    fan, queues = fanout
    timeout = 10.0

    async def body(advance: Callable[[float], None]) -> None:
        task = _task()
        task.timeout = timeout
        for _ in range(150):  # ~1.2x a task: unbounded, the hedge would pass 10 s by ~50
            first = [fan._rotation % 3, (fan._rotation + 1) % 3]
            counts = [len(q.asked) for q in queues]
            hedge = min(fan.hedge_delay(), timeout * _fanout.HEDGE_SHARE)
            asking = asyncio.ensure_future(_ask_task(fan, task))
            await _steps()
            for i in first:
                if i != 0:
                    queues[i].asked[counts[i]].set_result({})
            await _steps()
            if 0 in first:
                advance(hedge * 0.99)
                queues[0].asked[counts[0]].set_result({})
            assert (await asking).decision == "allow"
        assert fan.hedge_delay() > timeout * _fanout.HEDGE_SHARE  # climbed: the cap holds it
        fan._rotation = 0  # operator 0 asked first, and silent from now on
        counts = [len(q.asked) for q in queues]
        asking = asyncio.ensure_future(_ask_task(fan, task))
        await _steps()
        queues[1].asked[counts[1]].set_result({})
        advance(timeout * _fanout.HEDGE_SHARE + 0.01)
        await _steps()
        assert len(queues[2].asked) == counts[2] + 1  # widened at the capped hedge
        queues[2].asked[counts[2]].set_result({})
        outcome = await asking
        assert outcome.decision == "allow"

    _on_virtual_clock(body)


async def _ask_task(fan: FanOut, task: Any) -> Any:
    return await fan.ask(task, b"\x04" * 32, "r", b"{}", 2**40, b"\x05" * 32, intent_json="{}")
