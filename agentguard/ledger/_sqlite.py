"""The embedded ledger backend: one SQLite file shared by every thread and process using it.

* ``BEGIN IMMEDIATE`` takes the write lock *before* the caps are read, so two writers can never
  both see "room left" and both insert: check and insert are one step, across processes.
* WAL: readers do not block the writer, and a process killed mid-call leaves either the whole
  change or none of it (SQLite rolls an unfinished transaction back on the next open).
* ``synchronous=NORMAL`` (the default) keeps every committed change across process crashes;
  ``FULL`` also keeps the last few across power loss, at the price of an fsync per call.
* A reserve changes ~5 pages and a commit ~2. With 1 KiB pages the WAL frames they append are
  small, so a 4 MB WAL holds 4000 of them and checkpoints (where the fsyncs happen) come four
  times less often than with SQLite's defaults; measured +60 % pairs/s.
* Amounts are canonical decimal TEXT: SQLite's INTEGER stops at 2^63 and REAL is inexact.
  Every sum is done in Python ints.
* Rolling sums are not rescanned on every call: the ``windows`` table keeps, per agent, asset and
  window length, the counted total, a cursor (the newest reservation already out of the window)
  and when the oldest one still in it leaves. Rolling moves the cursor past what left and
  subtracts it, so a reserve costs amortised O(1) however many spends a window holds. A
  reservation counts in a window row iff it sits after that row's cursor in (created_at, seq)
  order; releases and partial commits adjust exactly the rows that count it. ``usage``
  recomputes from the reservations alone, independently of this bookkeeping.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Literal

from agentguard._exceptions import AttestationReplayed, ConfigurationError, ReservationError
from agentguard.ledger._backend import ReserveRequest, Usage
from agentguard.ledger._limits import Limits
from agentguard.ledger._reservation import Reservation
from agentguard.ledger._transitions import (
    check_bind,
    check_commit,
    check_mark_signed,
    check_release,
    check_same_spend,
    new_reservation,
    replayed_message,
)
from agentguard.ledger._window import ORIGIN, Position, Row, Window, check_caps

__all__ = ["SQLiteBackend"]

_SCHEMA_VERSION = 2
# Version 1 files gain the two columns version 2 added (an action counts once in rate caps; a
# network fee held next to it does not; ``task_id`` is the attestation a reservation is bound to).
_MIGRATIONS = {
    1: (
        "ALTER TABLE reservations ADD COLUMN actions INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE reservations ADD COLUMN task_id TEXT",
    ),
}
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS reservations (
        seq         INTEGER PRIMARY KEY,
        key         TEXT NOT NULL UNIQUE,
        agent       TEXT NOT NULL,
        asset       TEXT NOT NULL,
        amount      TEXT NOT NULL,
        reserved    TEXT NOT NULL,
        recipient   TEXT,
        state       TEXT NOT NULL CHECK (state IN ('reserved', 'signed', 'committed', 'released')),
        created_at  REAL NOT NULL,
        expires_at  REAL NOT NULL,
        updated_at  REAL NOT NULL,
        reference   TEXT,
        outcome     TEXT,
        reason      TEXT,
        actions     INTEGER NOT NULL DEFAULT 1,
        task_id     TEXT)""",
    "CREATE INDEX IF NOT EXISTS by_agent ON reservations (agent, created_at, seq)",
    "CREATE INDEX IF NOT EXISTS unsigned ON reservations (expires_at) WHERE state = 'reserved'",
    "CREATE INDEX IF NOT EXISTS signed ON reservations (seq) WHERE state = 'signed'",
    "CREATE INDEX IF NOT EXISTS by_task ON reservations (task_id) WHERE task_id IS NOT NULL",
    # asset '' is the all-assets row used by rate caps (its total stays '0').
    # next_at: created_at of the first reservation after the cursor (NULL: none).
    """CREATE TABLE IF NOT EXISTS windows (
        agent       TEXT NOT NULL,
        asset       TEXT NOT NULL,
        seconds     INTEGER NOT NULL,
        total       TEXT NOT NULL,
        count       INTEGER NOT NULL,
        cursor_at   REAL NOT NULL,
        cursor_seq  INTEGER NOT NULL,
        next_at     REAL,
        PRIMARY KEY (agent, asset, seconds)) WITHOUT ROWID""",
)
_COLUMNS = (
    "key, agent, asset, amount, reserved, recipient, state, created_at, expires_at, "
    "updated_at, reference, outcome, reason, seq, actions, task_id"
)
# Queries built once from the constants above (no caller data is ever formatted into SQL).
_SELECT = f"SELECT {_COLUMNS} FROM reservations WHERE "  # noqa: S608
_BY_KEY = _SELECT + "key = ?"
_SIGNED = _SELECT + "state = 'signed' ORDER BY seq"
_EXPIRED = _SELECT + "state = 'reserved' AND expires_at <= ?"
# What a reserve reads first, in one statement: the row under its key (if any), then every
# unsigned hold that has expired (each part walks its own index).
_KEY_OR_EXPIRED = _BY_KEY + " UNION ALL " + _EXPIRED
_INSERT = (
    "INSERT INTO reservations (key, agent, asset, amount, reserved, recipient, state, "
    "created_at, expires_at, updated_at, actions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_WINDOWS = (
    "SELECT asset, seconds, total, count, cursor_at, cursor_seq, next_at FROM windows "
    "WHERE agent = ? AND asset IN (?, '')"
)
_SAVE_WINDOW = "INSERT OR REPLACE INTO windows VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
# The common transitions in one statement each (``UPDATE ... RETURNING``, SQLite 3.35+): the
# row changes only if the conditions under which the checked path (load, ``check_*``, update)
# would go ahead hold, and comes back as that path would return it. Anything else (a repeat, a
# refusal) finds no row and takes the checked path, which explains it.
_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)
_BIND_FAST = (
    "UPDATE reservations SET task_id = ?, expires_at = ?, updated_at = ? "  # noqa: S608
    "WHERE key = ? AND state = 'reserved' AND task_id IS NULL AND ? < expires_at "
    "AND NOT EXISTS (SELECT 1 FROM reservations WHERE task_id = ?) "
    f"RETURNING {_COLUMNS}"
)
_MARK_SIGNED_FAST = (
    "UPDATE reservations SET state = 'signed', reference = ?, updated_at = ? "  # noqa: S608
    f"WHERE key = ? AND state = 'reserved' AND ? < expires_at RETURNING {_COLUMNS}"
)
# Committing the whole reservation: in 'reserved' and 'signed' the counted amount is the
# reserved one, so no window row changes.
_COMMIT_FULL_FAST = (
    "UPDATE reservations SET state = 'committed', amount = reserved, outcome = ?, "  # noqa: S608
    f"updated_at = ? WHERE key = ? AND state IN ('reserved', 'signed') RETURNING {_COLUMNS}"
)
# Every range query walks the (agent, created_at, seq) index; one asset's rows are filtered out
# of it (a second index per asset would cost a page write per reserve and save little: each
# reservation is walked past once per window row).
_AFTER = {  # reservations after a cursor, oldest first, for one asset or for all of them
    scoped: f"SELECT created_at, seq, amount, state, actions FROM reservations WHERE {scope} "  # noqa: S608
    "AND (created_at, seq) > (?, ?) ORDER BY created_at, seq"
    for scoped, scope in ((True, "agent = ? AND asset = ?"), (False, "agent = ?"))
}
_LAST_OUT = {  # the newest reservation at or before a boundary
    scoped: f"SELECT created_at, seq FROM reservations WHERE {scope} "  # noqa: S608
    "AND created_at <= ? ORDER BY created_at DESC, seq DESC LIMIT 1"
    for scoped, scope in ((True, "agent = ? AND asset = ?"), (False, "agent = ?"))
}


def _row(row: Any) -> tuple[Reservation, Position]:
    reservation = Reservation(
        id=row[0],
        key=row[0],
        agent=row[1],
        asset=row[2],
        amount=int(row[3]),
        reserved=int(row[4]),
        recipient=row[5],
        state=row[6],
        created_at=row[7],
        expires_at=row[8],
        updated_at=row[9],
        reference=row[10],
        outcome=row[11],
        reason=row[12],
        action=bool(row[14]),
        task_id=row[15],
    )
    return reservation, (row[7], row[13])


class _Rows:
    """The reservations as rolling reads them, inside one transaction."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def after(self, agent: str, asset: str, cursor: Position) -> Generator[Row, None, None]:
        scope = (agent, asset) if asset else (agent,)
        rows = self._db.execute(_AFTER[bool(asset)], (*scope, *cursor))
        try:
            for created_at, seq, amount, state, actions in rows:
                yield created_at, seq, int(amount), state, actions
        finally:
            rows.close()  # an open cursor would keep this snapshot past the ROLLBACK

    def last_out(self, agent: str, asset: str, boundary: float) -> Position:
        scope = (agent, asset) if asset else (agent,)
        last = self._db.execute(_LAST_OUT[bool(asset)], (*scope, boundary)).fetchone()
        return (last[0], last[1]) if last else ORIGIN


class SQLiteBackend:
    """``LedgerBackend`` on one SQLite file (or ``":memory:"`` for a process-local ledger)."""

    def __init__(
        self,
        path: str | os.PathLike[str] = ":memory:",
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 30.0,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ConfigurationError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        self.path = os.fspath(path)
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._open()

    def _open(self) -> None:
        # One connection per backend per process, used under a lock: threads of one process
        # queue on the lock (cheap) instead of on SQLite's busy handler (sleeps).
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            if self.path != ":memory:":
                # Before WAL is on (a no-op for an existing file): see the module docstring.
                conn.execute("PRAGMA page_size=1024")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA wal_autocheckpoint=4000")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
        except sqlite3.Error as exc:
            raise ConfigurationError(f"cannot open ledger database {self.path!r}: {exc}") from None
        self._conn, self._pid, self._lock = conn, os.getpid(), threading.Lock()
        with self._tx() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, *_MIGRATIONS, _SCHEMA_VERSION):
                raise ConfigurationError(
                    f"ledger database {self.path!r} has schema version {version}; "
                    f"this agentguard understands up to {_SCHEMA_VERSION}"
                )
            for statement in _MIGRATIONS.get(version, ()):
                db.execute(statement)
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    @contextmanager
    def _tx(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        if os.getpid() != self._pid:  # forked: a connection must never cross a fork
            self._open()
        with self._lock:
            db = self._conn
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _fast(self, sql: str, params: tuple[Any, ...]) -> Reservation | None:
        """One ``*_FAST`` statement as its own write transaction: the changed reservation, or
        ``None`` (nothing changed: the caller takes the checked path). ``_tx`` unrolled: this
        runs on every payment. A private ``:memory:`` database has no other connection, so
        the statement's own (autocommit) transaction is atomic enough; a file takes the write
        lock first (``BEGIN IMMEDIATE``: a lone statement's read-then-write could meet another
        process's commit and fail with SQLITE_BUSY instead of waiting)."""
        if os.getpid() != self._pid:
            self._open()
        with self._lock:
            db = self._conn
            if self.path == ":memory:":
                rows = db.execute(sql, params).fetchall()  # to the end: the statement commits
            else:
                db.execute("BEGIN IMMEDIATE")
                try:
                    rows = db.execute(sql, params).fetchall()
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
        return _row(rows[0])[0] if rows else None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- LedgerBackend -----------------------------------------------------------------------

    def reserve(self, request: ReserveRequest, limits: Limits, now: float) -> Reservation:
        with self._tx() as db:
            rows = db.execute(_KEY_OR_EXPIRED, (request.key, now)).fetchall()
            for row in rows:
                if row[0] == request.key:  # asked again: the first answer, nothing expired
                    return check_same_spend(_row(row)[0], request)
            self._release_expired(db, rows, now)
            windows = self._windows(db, request.agent, request.asset)
            check_caps(_Rows(db), request, limits, windows, now)
            reservation = new_reservation(request, now)
            cursor = db.execute(
                _INSERT,
                (
                    reservation.key,
                    reservation.agent,
                    reservation.asset,
                    str(reservation.amount),
                    str(reservation.reserved),
                    reservation.recipient,
                    reservation.state,
                    now,
                    reservation.expires_at,
                    now,
                    int(request.action),
                ),
            )
            if cursor.lastrowid is None:  # sqlite3 always sets it after an INSERT
                raise ReservationError("the ledger could not record the reservation")
            position = (now, cursor.lastrowid)
            for w in windows.values():
                if w.counts(position):
                    w.add(request.amount, int(request.action))
                    w.next_at = now if w.next_at is None else min(w.next_at, now)
            self._save(db, windows.values())
            return reservation

    def mark_signed(self, reservation_id: str, reference: str, now: float) -> Reservation:
        if _RETURNING and (
            done := self._fast(_MARK_SIGNED_FAST, (reference, now, reservation_id, now))
        ):
            return done
        with self._tx() as db:
            r, _ = self._load(db, reservation_id)
            if (same := check_mark_signed(r, reference, now)) is not None:
                return same
            db.execute(
                "UPDATE reservations SET state = 'signed', reference = ?, updated_at = ? "
                "WHERE key = ?",
                (reference, now, r.id),
            )
            return replace(r, state="signed", reference=reference, updated_at=now)

    def bind(self, reservation_id: str, task_id: str, expires_at: float, now: float) -> Reservation:
        if _RETURNING and (
            done := self._fast(_BIND_FAST, (task_id, expires_at, now, reservation_id, now, task_id))
        ):
            return done
        with self._tx() as db:
            r, _ = self._load(db, reservation_id)
            if (same := check_bind(r, task_id, expires_at, now)) is not None:
                return same
            other = db.execute(
                "SELECT key FROM reservations WHERE task_id = ? AND key != ? LIMIT 1",
                (task_id, r.id),
            ).fetchone()
            if other is not None:  # one attestation backs one action, once
                raise AttestationReplayed(replayed_message(task_id, other[0]))
            db.execute(
                "UPDATE reservations SET task_id = ?, expires_at = ?, updated_at = ? WHERE key = ?",
                (task_id, expires_at, now, r.id),
            )
            return replace(r, task_id=task_id, expires_at=expires_at, updated_at=now)

    def commit(
        self, reservation_id: str, outcome: str, amount: int | None, now: float
    ) -> Reservation:
        if (
            amount is None
            and _RETURNING
            and (done := self._fast(_COMMIT_FULL_FAST, (outcome, now, reservation_id)))
        ):
            return done
        with self._tx() as db:
            r, position = self._load(db, reservation_id)
            same, final = check_commit(r, outcome, amount)
            if same is not None:
                return same
            db.execute(
                "UPDATE reservations SET state = 'committed', amount = ?, outcome = ?, "
                "updated_at = ? WHERE key = ?",
                (str(final), outcome, now, r.id),
            )
            self._adjust(db, r, position, final - r.amount, 0)
            return replace(r, state="committed", amount=final, outcome=outcome, updated_at=now)

    def release(self, reservation_id: str, reason: str, now: float) -> Reservation:
        with self._tx() as db:
            r, position = self._load(db, reservation_id)
            if (same := check_release(r)) is not None:
                return same
            return self._release(db, r, position, reason, now)

    def get(self, reservation_id: str) -> Reservation:
        with self._tx(write=False) as db:
            return self._load(db, reservation_id)[0]

    def expire(self, now: float) -> list[Reservation]:
        with self._tx() as db:
            return self._expire(db, now)

    def signed(self) -> list[Reservation]:
        with self._tx(write=False) as db:
            rows = db.execute(_SIGNED).fetchall()
        return [_row(row)[0] for row in rows]

    def usage(self, agent: str, window_seconds: int, now: float) -> Usage:
        with self._tx(write=False) as db:
            rows = db.execute(
                "SELECT asset, amount, actions FROM reservations "
                "WHERE agent = ? AND created_at > ? AND state != 'released'",
                (agent, now - window_seconds),
            ).fetchall()
        spent: dict[str, int] = {}
        for asset, amount, _ in rows:
            spent[asset] = spent.get(asset, 0) + int(amount)
        return Usage(count=sum(actions for _, _, actions in rows), spent=spent)

    # -- inside a transaction ----------------------------------------------------------------

    def _load(self, db: sqlite3.Connection, reservation_id: str) -> tuple[Reservation, Position]:
        row = db.execute(_BY_KEY, (reservation_id,)).fetchone()
        if row is None:
            raise ReservationError(f"no reservation with id {reservation_id!r} in this ledger")
        return _row(row)

    def _release(
        self,
        db: sqlite3.Connection,
        r: Reservation,
        position: Position,
        reason: str,
        now: float,
    ) -> Reservation:
        db.execute(
            "UPDATE reservations SET state = 'released', amount = '0', reason = ?, "
            "updated_at = ? WHERE key = ?",
            (reason, now, r.id),
        )
        self._adjust(db, r, position, -r.amount, -int(r.action))
        return replace(r, state="released", amount=0, reason=reason, updated_at=now)

    def _expire(self, db: sqlite3.Connection, now: float) -> list[Reservation]:
        return self._release_expired(db, db.execute(_EXPIRED, (now,)).fetchall(), now)

    def _release_expired(
        self, db: sqlite3.Connection, rows: list[Any], now: float
    ) -> list[Reservation]:
        return [
            self._release(db, r, position, "expired before it was signed", now)
            for r, position in map(_row, rows)
        ]

    def _windows(
        self, db: sqlite3.Connection, agent: str, asset: str
    ) -> dict[tuple[str, int], Window]:
        """Every window row that may count a reservation of ``agent`` in ``asset``."""
        return {
            (a, seconds): Window(agent, a, seconds, int(total), count, (at, seq), next_at)
            for a, seconds, total, count, at, seq, next_at in db.execute(_WINDOWS, (agent, asset))
        }

    def _save(self, db: sqlite3.Connection, windows: Iterable[Window]) -> None:
        rows = [w.save() for w in windows if w.dirty]
        if rows:
            db.executemany(_SAVE_WINDOW, rows)

    def _adjust(
        self,
        db: sqlite3.Connection,
        r: Reservation,
        position: Position,
        delta: int,
        count_delta: int,
    ) -> None:
        """Apply a change of one reservation to every window row that counts it."""
        if not delta and not count_delta:
            return
        windows = self._windows(db, r.agent, r.asset)
        for w in windows.values():
            if w.counts(position) and (count_delta or (delta and w.asset)):
                w.add(delta, count_delta)
        self._save(db, windows.values())
