"""The SQLite backend's books (running totals in memory), bucketed per second and asset.

A differential against a brute-force count (every task's created_at, asset, amount and fate,
summed per window from scratch) over a seeded mix of reservations, cancels, records (at once
and group-committed), duplicates, give-backs, rebuilds and time jumps; then what the books
hold: no object per recorded task, so their memory is flat however many tasks they count.
"""

from __future__ import annotations

import asyncio
import gc
import random
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from agentguard._exceptions import TaskAlreadyRecorded
from agentguard.network.state import State, open_state

CLIENT = "0x" + "cc" * 20
AGENTS = ["0x" + "a1" * 20, "0x" + "a2" * 20]
ASSETS = ["0x" + "11" * 20, "0x" + "22" * 20]
WINDOWS = (60, 3600)
NOW = 1_764_000_000


class Oracle:
    """Every task and whether it counts; totals summed from scratch."""

    def __init__(self) -> None:
        self.tasks: dict[int, tuple[str, int, str, int]] = {}  # agent, at, asset, amount
        self.counted: set[int] = set()

    def totals(self, agent: str, now: int) -> dict[int, tuple[int, dict[str, int]]]:
        out: dict[int, tuple[int, dict[str, int]]] = {}
        for window in (*WINDOWS, 86400):
            count, spent = 0, dict[str, int]()
            for number in self.counted:
                who, at, asset, amount = self.tasks[number]
                if who == agent and at > now - window:
                    count += 1
                    spent[asset] = spent.get(asset, 0) + amount
            out[window] = (count, {a: v for a, v in spent.items() if v})
        return out


def _totals(state: State, agent: str, now: int) -> dict[int, tuple[int, dict[str, int]]]:
    got = state.totals(policy_client=CLIENT, agent=agent, windows=WINDOWS, now=now)
    return {w: (t.count, {a: v for a, v in t.spent.items() if v}) for w, t in got.items()}


@pytest.mark.parametrize("seed", range(6))
def test_the_books_agree_with_a_count_from_scratch(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    state = open_state(str(tmp_path / "state.sqlite3"))
    oracle = Oracle()
    now = NOW
    recorded: dict[str, int] = {}  # task id -> its reservation's serial

    async def scenario() -> None:
        nonlocal now
        serial = 0  # one per reservation: the oracle's key (task ids repeat: duplicates)
        for step in range(300):
            now += rng.choice([0, 0, 0, 1, 1, 2, 5, 30, 61, 700, 3601])
            batch: list[tuple[Any, Any, int]] = []
            for n in range(rng.randint(1, 5)):
                agent, asset = rng.choice(AGENTS), rng.choice(ASSETS)
                task_id = rng.choice([f"s{step}-{n}", f"dup{rng.randint(0, 30)}"])
                amount = rng.choice([0, 1, 7, 10**6, rng.randint(1, 10**9)])
                held = state.reserve(
                    policy_client=CLIENT,
                    agent=agent,
                    windows=WINDOWS,
                    task_id=task_id,
                    asset=asset,
                    amount=amount,
                    now=now,
                )
                serial += 1
                oracle.tasks[serial] = (agent, now, asset, amount)
                oracle.counted.add(serial)  # in flight: counted
                fate = rng.random()
                if fate < 0.25:
                    state.cancel(held)
                    oracle.counted.discard(serial)
                elif fate < 0.6:
                    try:
                        state.record(held, expires_at=now + 300, result={"id": task_id})
                    except TaskAlreadyRecorded:
                        state.cancel(held)
                        oracle.counted.discard(serial)
                    else:
                        recorded[task_id] = serial
                else:
                    wait = state.record_soon(held, expires_at=now + 300, result={"id": task_id})
                    batch.append((held, wait, serial))
                if rng.random() < 0.1:  # a re-registration: rebuilt from the file
                    state._stale.add((CLIENT, agent))  # type: ignore[attr-defined]
                    state.totals(policy_client=CLIENT, agent=agent, windows=WINDOWS, now=now)
            for _held, wait, number in batch:  # written already by a ``record`` since
                if wait.done() and isinstance(wait.exception(), TaskAlreadyRecorded):
                    oracle.counted.discard(number)  # a duplicate counts no more
            for agent in AGENTS:  # group-committed ones still in flight
                assert _totals(state, agent, now) == oracle.totals(agent, now), step
            for held, wait, number in batch:
                try:
                    await wait
                except TaskAlreadyRecorded:
                    state.cancel(held)
                    oracle.counted.discard(number)
                else:
                    recorded[held.entry.task_id] = number
            if recorded and rng.random() < 0.3:  # given back (released, or unused at expiry)
                task_id = rng.choice(sorted(recorded))
                if state._give_back(task_id, "attested"):
                    oracle.counted.discard(recorded[task_id])
            for agent in AGENTS:
                assert _totals(state, agent, now) == oracle.totals(agent, now), step

    asyncio.run(scenario())
    assert len(recorded) > 100
    reopened = open_state(str(tmp_path / "state.sqlite3"))  # from the file alone, as a restart
    for agent in AGENTS:
        assert _totals(reopened, agent, now) == oracle.totals(agent, now)


def test_zero_amounts_leave_their_windows_without_error(tmp_path: Path) -> None:
    """Two zero spends of one asset aging out of a window together (the per-task books failed
    here: the second removal found the asset's sum already gone)."""
    state = open_state(str(tmp_path / "state.sqlite3"))
    for n in range(2):
        held = state.reserve(
            policy_client=CLIENT,
            agent=AGENTS[0],
            windows=(60,),
            task_id=f"zero{n}",
            asset=ASSETS[0],
            amount=0,
            now=NOW,
        )
        state.record(held, expires_at=NOW + 300, result={})
    late = state.totals(policy_client=CLIENT, agent=AGENTS[0], windows=(60,), now=NOW + 61)
    assert late[60].count == 0 and not late[60].spent


def test_the_books_hold_nothing_per_recorded_task(tmp_path: Path) -> None:
    """Thousands of allows in a few seconds: a handful of buckets, no object per task, and
    the memory Python allocates for the books does not grow with the count."""
    state = open_state(str(tmp_path / "state.sqlite3"))

    async def allow(n: int, now: int) -> None:
        held = state.reserve(
            policy_client=CLIENT,
            agent=AGENTS[0],
            windows=(3600, 86400),
            task_id=f"0x{n:064x}",
            asset=ASSETS[n % 2],
            amount=1000 + n,
            now=now,
        )
        await state.record_soon(held, expires_at=now + 300, result={})

    async def run(first: int, count: int) -> None:
        for start in range(first, first + count, 50):
            await asyncio.gather(*(allow(n, NOW + n // 1000) for n in range(start, start + 50)))

    asyncio.run(run(0, 2000))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    asyncio.run(run(2000, 6000))
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    book = state._books[CLIENT, AGENTS[0]]  # type: ignore[attr-defined]
    assert not book.flight
    assert len(book.buckets) <= 2 * 8 * 2  # seconds x assets, interleaved
    totals = state.totals(policy_client=CLIENT, agent=AGENTS[0], windows=(3600,), now=NOW + 8)
    assert totals[3600].count == 8000
    assert grown < 8 * 6000  # the per-task books held ~450 bytes for each


def test_books_of_idle_agents_are_dropped_and_rebuilt_exactly(tmp_path: Path) -> None:
    """A gateway that saw many agents once keeps no book for each: the sweep drops the books
    of agents idle past their longest window; one seen again is rebuilt from the file."""
    state = open_state(str(tmp_path / "state.sqlite3"))
    agents = [f"0x{n:040x}" for n in range(1, 201)]
    for n, agent in enumerate(agents):
        held = state.reserve(
            policy_client=CLIENT,
            agent=agent,
            windows=(60,),
            task_id=f"t{n}",
            asset=ASSETS[0],
            amount=n,
            now=NOW,
        )
        state.record(held, expires_at=NOW + 300, result={})
    busy = state.reserve(
        policy_client=CLIENT,
        agent=agents[0],
        windows=(60,),
        task_id="flying",
        asset=ASSETS[0],
        amount=5,
        now=NOW + 86400,
    )
    assert len(state._books) == 200  # type: ignore[attr-defined]
    state.sweep_expired(NOW + 86400 + 1, None, lambda _: True)
    assert list(state._books) == [(CLIENT, agents[0])]  # type: ignore[attr-defined]
    state.sweep_expired(NOW + 3 * 86400, None, lambda _: True)  # in flight: kept
    assert list(state._books) == [(CLIENT, agents[0])]  # type: ignore[attr-defined]
    state.record(busy, expires_at=NOW + 86400 + 300, result={})
    late = state.totals(policy_client=CLIENT, agent=agents[7], windows=(60,), now=NOW + 30)
    assert late[86400].count == 1 and late[86400].spent == {ASSETS[0]: 7}  # from the file
