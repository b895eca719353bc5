"""The gateway's expiry sweep asks its usage check off the event loop (``gateway._sweep``).

Before the fix the sweep called the check (blocking web3 calls, 5 s timeout each, up to 1,000
tasks a pass) on the loop: one slow RPC node stalled every authorization meanwhile."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from agentguard.network.gateway._sweep import Sweeper
from agentguard.network.state import PENDING, Pending, State, TaskRecord, open_state
from agentguard.network.state import _base as state_base
from agentguard.network.state import _sqlite as state_sqlite
from tests.network.test_state import NOW, TRUSTED, allow, spent
from tests.redteam._s9_net import UNIT, Net, agent, params

Answer = bool | Pending | None


class Blocking:
    """A usage check that hangs (a slow node) until the test lets it answer "used"."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.answer = threading.Event()
        self.asked: Counter[str] = Counter()

    def was_used(self, task: TaskRecord) -> bool:
        self.asked[task.task_id] += 1
        self.entered.set()
        self.answer.wait(60)  # the test lets it answer (or its finally does)
        return True


def test_a_blocked_usage_check_does_not_hold_back_an_authorization(tmp_path: Path) -> None:
    net = Net(tmp_path)
    check = Blocking()
    net.gateway.usage_check = check

    async def scenario() -> tuple[bool, int]:
        await net.ask("first", params(0))  # an allow, recorded: expired an hour later
        sweep = asyncio.ensure_future(net.gateway.sweep_once(now=time.time() + 3600))
        assert await asyncio.to_thread(check.entered.wait, 5)
        answer = await net.ask("second", params(1))  # served while the check hangs
        assert json.loads(answer)["status"] == "success"
        blocked = not sweep.done()
        check.answer.set()
        return blocked, await sweep

    try:
        blocked, released = net.run(scenario())
        assert blocked  # the authorization was answered while the pass still waited
        assert released == 0  # the check said used: committed, still counted
        assert net.spent(agent(0)) == (1, UNIT)
    finally:
        check.answer.set()
        net.close()


def test_sweep_passes_do_not_overlap(tmp_path: Path) -> None:
    """Two passes at once would read the same batch and ask each task twice."""
    state = open_state(str(tmp_path / "state.sqlite3"))
    for i in range(3):
        allow(state, f"t{i}", 1, expires_in=10)
    check = Blocking()
    sweeper = Sweeper()

    async def two_passes() -> list[int]:
        both = asyncio.gather(
            *(sweeper.sweep(state, NOW + 11, _checks(check), TRUSTED) for _ in range(2))
        )
        assert await asyncio.to_thread(check.entered.wait, 5)
        await asyncio.sleep(0.05)  # the second pass would start now if it could
        check.answer.set()
        return list(await both)

    try:
        assert asyncio.run(two_passes()) == [0, 0]
        assert check.asked == {"t0": 1, "t1": 1, "t2": 1}
        assert all(state.task(f"t{i}").status == "committed" for i in range(3))  # type: ignore[union-attr]
    finally:
        check.answer.set()
        sweeper.close()
        state.close()


def _checks(check: object):  # type: ignore[no-untyped-def]
    return lambda task: lambda: check.was_used(task)  # type: ignore[attr-defined]


class Scripted:
    """Answers by task id: ``raise`` for a node error."""

    def __init__(self, answers: dict[str, Answer | str]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def was_used(self, task: TaskRecord) -> Answer:
        self.asked.append(task.task_id)
        answer = self.answers[task.task_id]
        if answer == "raise":
            raise ConnectionError(f"node down for {task.task_id}")
        assert not isinstance(answer, str)
        return answer


def _statuses(state: State, ids: list[str]) -> dict[str, str | None]:
    return {i: (t.status if (t := state.task(i)) else None) for i in ids}


@pytest.mark.parametrize("seed", range(6))
def test_the_sweep_off_the_loop_settles_as_the_synchronous_sweep(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Differential: seeded random tasks (expired or not, released or not) and answers (used,
    unused, cannot tell, pending, a node error), small batches so the cursor pages: the same
    statuses and give-backs, pass after pass, as ``State.sweep_expired``."""
    rng = random.Random(seed)
    monkeypatch.setattr(state_base, "SWEEP_BATCH", 4)
    monkeypatch.setattr(state_sqlite, "SWEEP_BATCH", 4)
    old, new = (open_state(str(tmp_path / f"{n}.sqlite3")) for n in ("old", "new"))
    ids = [f"t{i:02d}" for i in range(rng.randint(1, 14))]
    choices: list[Answer | str] = [True, False, None, PENDING, "raise"]
    answers = {i: rng.choice(choices) for i in ids}
    for i in ids:
        expires_in, amount = rng.choice([5, 10, 10, 50]), rng.randint(1, 9)
        for state in (old, new):
            allow(state, i, amount, expires_in=expires_in)
    for i in ids:
        if rng.random() < 0.5:
            for state in (old, new):
                state.release(i, NOW, trusted=False)
    with_check = rng.random() < 0.8
    clock = [0.0]
    sweeper = Sweeper(clock=lambda: clock[0])

    try:
        for now in (NOW + 11, NOW + 11, NOW + 60):
            check_old, check_new = Scripted(answers), Scripted(answers)
            seed_trust = rng.random()
            try:
                got_old = old.sweep_expired(
                    now,
                    check_old if with_check else None,
                    _coin(seed_trust),
                )
            except ConnectionError:
                got_old = None
            got_new = asyncio.run(
                sweeper.sweep(
                    new,
                    now,
                    _checks(check_new) if with_check else None,
                    _coin(seed_trust),
                )
            )
            assert _statuses(old, ids) == _statuses(new, ids)
            assert spent(old, 60, now) == spent(new, 60, now)
            assert check_old.asked == check_new.asked
            if got_old is not None:
                assert got_new == got_old
            clock[0] += BACKOFF_PAST
    finally:
        sweeper.close()
        old.close()
        new.close()


def _coin(seed: float) -> Callable[[str], bool]:
    """``trusted``, by a seeded coin: the same calls get the same answers."""
    rng = random.Random(seed)
    return lambda policy_client: rng.random() < 0.5


BACKOFF_PAST = 1_000.0  # past any backoff: each pass asks every failing task again


def test_a_failing_task_backs_off_and_is_logged_once_per_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = open_state(str(tmp_path / "state.sqlite3"))
    allow(state, "bad", 1, expires_in=10)
    allow(state, "good", 1, expires_in=10)
    check = Scripted({"bad": "raise", "good": None})
    clock = [0.0]
    sweeper = Sweeper(clock=lambda: clock[0])
    asked_bad = []
    try:
        with caplog.at_level(logging.WARNING, logger="agentguard"):
            for _ in range(12):  # one pass a second, as the gateway sweeps
                asyncio.run(sweeper.sweep(state, NOW + 11, _checks(check), TRUSTED))
                asked_bad.append(check.asked.count("bad"))
                clock[0] += 1.0
        # asked at 0 s, then 1, 2, 4 s after each failure: at 0, 1, 3, 7 (and again at 15)
        assert [
            step for step in range(12) if asked_bad[step] > (asked_bad[step - 1] if step else 0)
        ] == [0, 1, 3, 7]
        warnings = [r for r in caplog.records if "usage check failed" in r.getMessage()]
        assert len(warnings) == 4
        assert state.task("bad").status == "attested"  # type: ignore[union-attr]  # still counted
        assert check.asked.count("good") == 12  # others are asked every pass
    finally:
        sweeper.close()
        state.close()


class Stopping:
    """A usage check whose code lets a ``StopIteration`` out (a ``next()`` on an empty
    iterator): an asyncio future cannot carry it, so the pass never heard back (the loop only
    logged a ``TypeError``) and, holding the pass lock, stopped every later sweep for good."""

    def was_used(self, task: TaskRecord) -> bool:
        if task.task_id == "odd":
            return next(iter(()))
        return True


def test_a_check_raising_stop_iteration_fails_its_task_not_the_sweep(tmp_path: Path) -> None:
    state = open_state(str(tmp_path / "state.sqlite3"))
    allow(state, "odd", 1, expires_in=10)
    allow(state, "plain", 1, expires_in=11)
    sweeper = Sweeper()

    async def one_pass() -> int:  # a hang turns into a failure, not a stuck test run
        return await asyncio.wait_for(
            sweeper.sweep(state, NOW + 12, _checks(Stopping()), TRUSTED), 60
        )

    try:
        assert asyncio.run(one_pass()) == 0
        assert _statuses(state, ["odd", "plain"]) == {"odd": "attested", "plain": "committed"}
        assert asyncio.run(one_pass()) == 0  # the next pass is not locked out
    finally:
        sweeper.close()
        state.close()
