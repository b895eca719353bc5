"""Red team of session 9's SQLite books: buckets per second and asset, give-back through
``UPDATE ... RETURNING`` (the bucket found by the file row's second), idle books dropped by
the sweep and rebuilt from the file, group commit. Every attack checks the live books against
the truth: a fresh state rebuilt from the file alone (plus what is still in flight)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agentguard.network.state import State, open_state
from agentguard.network.state._book import Reservation
from agentguard.network.state._sqlite import BOOKS_PRUNE_EVERY

CLIENT = "0x" + "cc" * 20
AGENT = "0x" + "a1" * 20
USDC = "0x" + "11" * 20
WINDOWS = (60, 3600)
T = 1_764_000_000


def _reserve(state: State, task_id: str, amount: int, now: int, asset: str = USDC) -> Reservation:
    return state.reserve(
        policy_client=CLIENT,
        agent=AGENT,
        windows=WINDOWS,
        task_id=task_id,
        asset=asset,
        amount=amount,
        now=now,
    )


def _spent(state: State, now: int, asset: str = USDC) -> dict[int, tuple[int, int]]:
    totals = state.totals(policy_client=CLIENT, agent=AGENT, windows=WINDOWS, now=now)
    return {w: (t.count, t.spent.get(asset, 0)) for w, t in totals.items()}


def _from_file(path: Path, now: int, asset: str = USDC) -> dict[int, tuple[int, int]]:
    fresh = open_state(str(path))
    try:
        return _spent(fresh, now, asset)
    finally:
        fresh.close()


def _record(state: State, task_id: str, amount: int, now: int, asset: str = USDC) -> None:
    held = _reserve(state, task_id, amount, now, asset)
    state.record(held, expires_at=now + 300, result={"task_id": task_id})


def test_window_edges_count_exactly_what_the_file_says(tmp_path: Path) -> None:
    """Spends at T, T+1, T+59, T+60: at each later second the 60 s window holds exactly the
    records with created_at > now - 60, in the live books and in a rebuild."""
    path = tmp_path / "s.sqlite3"
    state = open_state(str(path))
    for n, at in enumerate((T, T + 1, T + 59, T + 60)):
        _record(state, f"t{n}", 10**n, at)
    for now in (T + 60, T + 61, T + 119, T + 120, T + 3599, T + 3600, T + 3660):
        assert _spent(state, now) == _from_file(path, now), now
    assert _spent(state, T + 3661) == {60: (0, 0), 3600: (0, 0), 86400: (4, 1111)}
    state.close()


def test_many_assets_in_one_second_and_each_given_back(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    state = open_state(str(path))
    assets = ["0x" + f"{n:040x}" for n in range(1, 301)]
    for n, asset in enumerate(assets):
        _record(state, f"a{n}", n + 1, T, asset)
    for n in range(len(assets[::2])):
        assert state._give_back(f"a{2 * n}", "attested")
        assert not state._give_back(f"a{2 * n}", "attested")
    for asset in assets[:6]:
        assert _spent(state, T + 1, asset) == _from_file(path, T + 1, asset)
    count = state.totals(policy_client=CLIENT, agent=AGENT, windows=WINDOWS, now=T + 1)[60]
    assert count.count == 150
    assert sum(count.spent.values()) == sum(n + 1 for n in range(1, 300, 2))
    state.close()


def test_a_give_back_finds_its_own_second_not_a_newer_one(tmp_path: Path) -> None:
    """Records in consecutive seconds of two assets; each give-back must leave exactly the
    other records counted (never a neighbour's bucket, never twice)."""
    path = tmp_path / "s.sqlite3"
    state = open_state(str(path))
    other = "0x" + "22" * 20
    for n in range(10):
        _record(state, f"u{n}", 100 + n, T + n // 2)
        _record(state, f"o{n}", 1000 + n, T + n // 2, other)
    for n in (0, 3, 4, 9):
        assert state._give_back(f"u{n}", "attested")
    for now in (T + 5, T + 61, T + 62, T + 64):
        assert _spent(state, now) == _from_file(path, now)
        assert _spent(state, now, other) == _from_file(path, now, other)
    state.close()


def test_a_give_back_after_the_clock_stepped_back_gives_back_nothing_it_did_not_count(
    tmp_path: Path,
) -> None:
    """R recorded at T; the books are read a day later (its bucket leaves every window and
    is dropped); the clock steps back to T and X is reserved (a new bucket at T, since the
    old one has left); R is then given back. R counts in no window any more, so X's 5 must
    still count: R's 10 may not be taken from X's bucket."""
    path = tmp_path / "s.sqlite3"
    state = open_state(str(path))
    _record(state, "R", 10, T)
    later = T + 86400 + 1
    assert _spent(state, later)[86400] == (0, 0)
    held = _reserve(state, "X", 5, T)  # the clock stepped back
    assert state._give_back("R", "attested")
    assert _spent(state, T) == {60: (1, 5), 3600: (1, 5), 86400: (1, 5)}  # was (0, -5) each
    state.record(held, expires_at=T + 300, result={"task_id": "X"})
    assert _spent(state, T) == {60: (1, 5), 3600: (1, 5), 86400: (1, 5)}
    # X's own give-back cannot tell X's bucket from R's dropped one: it gives back nothing
    # (counted until it leaves its windows: fail closed); the file no longer counts it
    assert state._give_back("X", "attested")
    assert _spent(state, T) == {60: (1, 5), 3600: (1, 5), 86400: (1, 5)}
    assert _from_file(path, T) == {60: (0, 0), 3600: (0, 0), 86400: (0, 0)}
    state.close()


def test_the_sweep_never_drops_a_book_with_work_in_flight(tmp_path: Path) -> None:
    """An agent idle past every window but with a reservation in flight, or a record queued
    for the group commit, when the sweep looks for idle books: the book stays, and what it
    holds is counted once, in the books and in the file."""
    path = tmp_path / "s.sqlite3"
    state = open_state(str(path))
    _record(state, "old", 7, T)
    late = T + 86400 + BOOKS_PRUNE_EVERY + 5
    in_flight = _reserve(state, "flight", 3, late)

    async def scenario() -> None:
        queued = _reserve(state, "queued", 4, late)
        wait = state.record_soon(queued, expires_at=late + 300, result={"task_id": "queued"})
        state.sweep_expired(late + 1, None, lambda _task: False)
        assert (CLIENT, AGENT) in state._books  # type: ignore[attr-defined]
        await wait

    asyncio.run(scenario())
    assert _spent(state, late + 1)[60] == (2, 7)  # in flight 3 + recorded 4
    state.cancel(in_flight)
    assert _spent(state, late + 1)[60] == (1, 4)
    assert _spent(state, late + 1) == _from_file(path, late + 1)
    state.close()


def test_an_idle_book_dropped_by_the_sweep_is_rebuilt_without_forgetting(tmp_path: Path) -> None:
    """Records across a day, the book read then left idle past its longest window, dropped by
    the sweep; what still counts (the day window of a 86400 horizon is gone too) and a later
    give-back of a dropped record both agree with the file."""
    path = tmp_path / "s.sqlite3"
    state = open_state(str(path))
    for n in range(5):
        _record(state, f"d{n}", 2**n, T + n * 20_000)
    last = T + 4 * 20_000
    idle = last + 86400 + 1
    state.sweep_expired(idle, None, lambda _task: False)
    state.sweep_expired(idle + BOOKS_PRUNE_EVERY, None, lambda _task: False)
    assert (CLIENT, AGENT) not in state._books  # type: ignore[attr-defined]
    assert _spent(state, idle) == _from_file(path, idle)
    _record(state, "fresh", 1000, idle)
    assert state._give_back("d4", "attested")
    assert (
        _spent(state, idle)
        == _from_file(path, idle)
        == {
            60: (1, 1000),
            3600: (1, 1000),
            86400: (1, 1000),
        }
    )
    state.close()
