"""The SQLite state's WAL checkpoints run on their own thread, never inside a record's commit.

Seen through SQLite itself (never timed): the gateway's connection has automatic checkpoints
off, its commits write only the WAL (the database file does not grow), and the checkpoint
thread moves the pages into the file once ``RECORDS`` records are committed; the WAL stays
bounded when a commit lands during every checkpoint; if that thread stops, the state hands
checkpoints back to SQLite (noticed at a commit or at the sweep); closing the state ends the
thread, and every record is in the file after a reopen.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from pathlib import Path

import pytest

from agentguard.network.state import _checkpoint, open_state
from agentguard.network.state._sqlite import SQLiteState
from tests.network.test_state import NOW, TRUSTED, reserve, spent


def _record(state: SQLiteState, names: list[str]) -> None:
    async def scenario() -> None:
        await asyncio.gather(
            *(
                state.record_soon(
                    reserve(state, name, 1), expires_at=NOW + 300, result={"task_id": name}
                )
                for name in names
            )
        )

    asyncio.run(scenario())


def _checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "agentguard-state-checkpoint"]


def _wait_for(condition: object, what: str) -> None:
    """Polls ``condition`` (a callable) until it holds; fails after a generous bound (a
    correctness bound, not a speed check: the thread is woken at once)."""
    event = threading.Event()
    for _ in range(500):
        if condition():  # type: ignore[operator]
            return
        event.wait(0.01)
    pytest.fail(f"never happened: {what}")


def test_commits_write_only_the_wal_and_the_thread_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_checkpoint, "INTERVAL", 3600.0)  # only the record count wakes it
    path = tmp_path / "state.sqlite3"
    state = open_state(str(path))
    assert isinstance(state, SQLiteState)
    assert state._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    size = path.stat().st_size
    names = [f"t{i}" for i in range(_checkpoint.RECORDS - 1)]
    _record(state, names)
    assert path.stat().st_size == size  # one short of RECORDS: all in the WAL still
    assert Path(f"{path}-wal").stat().st_size > 0
    _record(state, ["last"])
    _wait_for(lambda: path.stat().st_size > size, "the checkpoint thread filled the file")
    assert spent(state, 60) == (_checkpoint.RECORDS, _checkpoint.RECORDS)
    state.close()
    assert not any(t.is_alive() for t in _checkpoint_threads())
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] == _checkpoint.RECORDS


def test_a_stopped_checkpoint_thread_hands_checkpoints_back_to_sqlite(tmp_path: Path) -> None:
    state = open_state(str(tmp_path / "state.sqlite3"))
    assert isinstance(state, SQLiteState)
    checkpoints = state._checkpoints
    assert checkpoints is not None
    checkpoints.close()  # as if its connection had failed
    _record(state, ["a", "b"])
    assert state._checkpoints is None
    assert state._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    assert state.stored_result("a") == {"task_id": "a"}
    state.close()


def test_a_failing_checkpoint_connection_stops_the_thread_and_records_still_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sqlite3.connect

    def refuse_checkpoints(database: str, *args: object, **kwargs: object) -> sqlite3.Connection:
        if threading.current_thread().name == "agentguard-state-checkpoint":
            raise sqlite3.OperationalError("unable to open database file")
        return real(database, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sqlite3, "connect", refuse_checkpoints)
    state = open_state(str(tmp_path / "state.sqlite3"))
    assert isinstance(state, SQLiteState)
    checkpoints = state._checkpoints
    assert checkpoints is not None
    _wait_for(lambda: not checkpoints._thread.is_alive(), "the thread gave up")
    _record(state, ["a"])
    assert state._checkpoints is None  # SQLite checkpoints by itself again
    assert state._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    assert spent(state, 60) == (1, 1)
    state.close()


def test_an_in_memory_state_keeps_sqlite_checkpoints() -> None:
    state = SQLiteState(":memory:")
    assert state._checkpoints is None
    state.close()


_REAL_CONNECT = sqlite3.connect


class _Overlapped:
    """The checkpoint thread's connection, with a commit landing during each passive
    checkpoint, as under steady load: a reader holds the snapshot the checkpoint started
    from, another connection commits, and the checkpoint can copy only up to that snapshot
    (what a commit made while the thread copies leaves behind, without timing anything)."""

    done = 0  # passive checkpoints made

    def __init__(self, db: sqlite3.Connection, path: str) -> None:
        self._db, self._path = db, path

    def execute(self, sql: str) -> sqlite3.Cursor:
        if "PASSIVE" not in sql:
            return self._db.execute(sql)
        with contextlib.closing(_REAL_CONNECT(self._path, isolation_level=None)) as reader:
            reader.execute("BEGIN")
            reader.execute("SELECT COUNT(*) FROM tasks").fetchone()  # the snapshot
            with contextlib.closing(_REAL_CONNECT(self._path, isolation_level=None)) as writer:
                writer.execute("INSERT INTO noise VALUES (randomblob(3000))")
            rows = self._db.execute(sql).fetchall()
            reader.execute("COMMIT")
        _Overlapped.done += 1
        return self._db.execute("SELECT ?, ?, ?", rows[0])

    def close(self) -> None:
        self._db.close()


def test_the_wal_stays_bounded_when_commits_land_during_every_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack (a host keeping the gateway busy): the WAL restarts from its beginning only
    at a write that finds every frame copied; with commits landing during each checkpoint
    none ever does, and the WAL grew by every record for as long as the load lasted (80 MB
    in 10 s at ~900 records/s, 1.5 GB in 8 s flat out; SQLite's own checkpoints: 4 MB)."""
    path = tmp_path / "state.sqlite3"

    def overlapped(database: str, *args: object, **kwargs: object) -> object:
        db = _REAL_CONNECT(database, *args, **kwargs)  # type: ignore[arg-type]
        if threading.current_thread().name == "agentguard-state-checkpoint":
            return _Overlapped(db, database)
        return db

    monkeypatch.setattr(_checkpoint, "INTERVAL", 3600.0)  # only the record count wakes it
    monkeypatch.setattr(_checkpoint, "WAL_LIMIT", 1000)  # reached in two rounds
    with contextlib.closing(_REAL_CONNECT(path)) as setup:
        setup.execute("CREATE TABLE noise (body BLOB)")
    monkeypatch.setattr(sqlite3, "connect", overlapped)
    state = open_state(str(path))
    assert isinstance(state, SQLiteState)
    checkpoints = state._checkpoints
    assert checkpoints is not None
    _Overlapped.done = 0
    largest = 0
    for round_ in range(24):
        for i in range(_checkpoint.RECORDS):  # a commit each, as under steady load
            _record(state, [f"r{round_}-{i}"])
        _wait_for(lambda made=round_ + 1: _Overlapped.done >= made, "a checkpoint")
        largest = max(largest, Path(f"{path}-wal").stat().st_size)
    assert checkpoints._thread.is_alive()
    page = state._db.execute("PRAGMA page_size").fetchone()[0]
    assert largest <= 4 * _checkpoint.WAL_LIMIT * (24 + page)  # frames: a header and a page
    state.close()
    with _REAL_CONNECT(path) as other:
        assert other.execute("SELECT COUNT(*) FROM tasks").fetchone()[0] == 24 * _checkpoint.RECORDS


def test_a_stopped_thread_is_noticed_without_records(tmp_path: Path) -> None:
    """Attack: the thread stopped (a failed checkpoint) and no task is allowed any more, only
    parked for approval (a write each): the state noticed only at a record's commit, so the
    WAL grew without bound. The gateway's periodic sweep notices too."""
    state = open_state(str(tmp_path / "state.sqlite3"))
    assert isinstance(state, SQLiteState)
    checkpoints = state._checkpoints
    assert checkpoints is not None
    checkpoints.close()  # as if its connection had failed
    state.sweep_expired(NOW, None, TRUSTED)
    assert state._checkpoints is None
    assert state._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    state.close()
