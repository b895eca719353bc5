"""SQLite group commit: the records of concurrent tasks share one transaction, and a waiter
learns its record is written only once that transaction is committed.

Counted with SQLite's own statement trace (never timed): how many COMMITs, what another
connection sees before and after, what counts in the totals when a row is a duplicate, when
the whole commit fails, and when a waiter stops waiting. Every test also runs the same calls
on the backend's base behaviour (``State.record_soon`` = ``record``: written at once), where
the outcome must be the same.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agentguard._exceptions import GatewayStateError, TaskAlreadyRecorded
from agentguard.network.state import State, open_state
from tests.network.test_state import AGENT, CLIENT, NOW, reserve, spent


def _rows(path: Path) -> int:
    with sqlite3.connect(path) as other:
        (count,) = other.execute("SELECT COUNT(*) FROM tasks").fetchone()
    return int(count)


def _commits(state: State) -> list[str]:
    seen: list[str] = []
    state._db.set_trace_callback(  # type: ignore[attr-defined]
        lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None
    )
    return seen


def _result(task_id: str) -> dict[str, Any]:
    return {"task_id": task_id, "n": [1, 2, {"b": 1, "a": 2}]}


def test_concurrent_records_share_one_commit_and_are_written_before_their_waiters_wake(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.sqlite3"
    state = open_state(str(path))
    commits = _commits(state)

    async def scenario() -> None:
        waits = [
            state.record_soon(
                reserve(state, f"t{i}", 1), expires_at=NOW + 300, result=_result(f"t{i}")
            )
            for i in range(20)
        ]
        assert _rows(path) == 0  # nothing written yet: no waiter may have been answered
        assert not any(asyncio.ensure_future(w).done() for w in waits)
        await asyncio.gather(*waits)
        assert _rows(path) == 20  # all in the file once the waiters wake

    asyncio.run(scenario())
    assert len(commits) == 1
    assert spent(state, 60) == (20, 20)
    for i in range(20):
        assert state.stored_result(f"t{i}") == _result(f"t{i}")
    reopened = open_state(str(path))  # the file alone holds them (a restart's view)
    assert spent(reopened, 60) == (20, 20)


def test_a_duplicate_in_the_batch_fails_alone_and_counts_once(tmp_path: Path) -> None:
    state = open_state(str(tmp_path / "state.sqlite3"))

    async def scenario() -> list[Any]:
        first = reserve(state, "same", 3)
        other = reserve(state, "other", 4)
        again = reserve(state, "same", 3)  # the same task from another API key
        assert spent(state, 60) == (3, 10)  # all three in flight
        waits = [
            state.record_soon(r, expires_at=NOW + 300, result=_result(r.entry.task_id))
            for r in (first, other, again)
        ]
        outcome = await asyncio.gather(*waits, return_exceptions=True)
        state.cancel(again)  # what the gateway does after TaskAlreadyRecorded: a no-op now
        return outcome

    outcome = asyncio.run(scenario())
    assert outcome[0] is None and outcome[1] is None
    assert isinstance(outcome[2], TaskAlreadyRecorded)
    assert spent(state, 60) == (2, 7)


def test_a_failed_commit_wakes_every_waiter_with_the_gateways_error_and_counts_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.sqlite3"
    state = open_state(str(path))
    real = state._db  # type: ignore[attr-defined]

    class FailingCommit:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def execute(self, sql: str, *args: Any) -> Any:
            if sql == "COMMIT":
                raise sqlite3.OperationalError("disk I/O error")
            return real.execute(sql, *args)

    state._db = FailingCommit()  # type: ignore[attr-defined]

    async def scenario() -> list[Any]:
        waits = [
            state.record_soon(reserve(state, f"t{i}", 2), expires_at=NOW + 300, result={})
            for i in range(5)
        ]
        return await asyncio.gather(*waits, return_exceptions=True)

    outcome = asyncio.run(scenario())
    assert all(isinstance(o, GatewayStateError) for o in outcome)
    assert "disk" not in str(outcome[0])  # the gateway's own error, not SQLite's
    assert spent(state, 60) == (0, 0)
    assert _rows(path) == 0
    state._db = real  # type: ignore[attr-defined]
    with pytest.raises(GatewayStateError):  # the synchronous ``record`` fails the same way
        state._db = FailingCommit()  # type: ignore[attr-defined]
        state.record(reserve(state, "sync", 2), expires_at=NOW + 300, result={})
    state._db = real  # type: ignore[attr-defined]
    assert spent(state, 60) == (0, 0)


def test_a_waiter_that_stops_waiting_leaves_its_record_counted(tmp_path: Path) -> None:
    """A gateway task cancelled while it waits for the commit: its row is written anyway, so
    it must stay counted (``cancel`` of a queued reservation is a no-op)."""
    path = tmp_path / "state.sqlite3"
    state = open_state(str(path))

    async def scenario() -> None:
        held = reserve(state, "gone", 9)

        async def gateway_task() -> None:
            await state.record_soon(held, expires_at=NOW + 300, result={})

        task = asyncio.ensure_future(gateway_task())
        await asyncio.sleep(0)  # queued, waiting
        task.cancel()
        state.cancel(held)  # a careless caller: must not give back a queued record
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert _rows(path) == 1
    assert spent(state, 60) == (1, 9)
    assert state.task("gone") is not None


def test_records_and_totals_agree_with_the_immediate_path_on_a_seeded_mix(
    tmp_path: Path,
) -> None:
    """Differential: the same seeded mix of reservations, records (some duplicates), cancels
    and re-registrations through ``record_soon`` in batches and through ``record`` one at a
    time leaves the same rows and the same totals."""
    import random

    def run(spec: Path, batched: bool) -> tuple[list[Any], list[tuple[int, int]]]:
        state = open_state(str(spec))
        rng = random.Random(11)
        seen: list[tuple[int, int]] = []

        async def scenario() -> None:
            for step in range(40):
                pending = []
                for _ in range(rng.randint(1, 6)):
                    task_id = f"t{rng.randint(0, 60)}"
                    held = reserve(state, task_id, rng.randint(1, 50), now=NOW + step)
                    if rng.random() < 0.2:
                        state.cancel(held)
                        continue
                    if batched:
                        pending.append(
                            (
                                held,
                                state.record_soon(
                                    held, expires_at=NOW + 300, result=_result(task_id)
                                ),
                            )
                        )
                    else:
                        try:
                            state.record(held, expires_at=NOW + 300, result=_result(task_id))
                        except TaskAlreadyRecorded:
                            state.cancel(held)
                    if rng.random() < 0.1:
                        state._stale.add((CLIENT, AGENT))  # type: ignore[attr-defined]
                for held, wait in pending:
                    try:
                        await wait
                    except TaskAlreadyRecorded:
                        state.cancel(held)
                seen.append(spent(state, 60, now=NOW + step))

        asyncio.run(scenario())
        rows = state._db.execute(  # type: ignore[attr-defined]
            "SELECT task_id, amount, created_at, result FROM tasks ORDER BY task_id"
        ).fetchall()
        return rows, seen

    immediate = run(tmp_path / "a.sqlite3", batched=False)
    batched = run(tmp_path / "b.sqlite3", batched=True)
    assert batched == immediate
    assert len(immediate[0]) > 20
