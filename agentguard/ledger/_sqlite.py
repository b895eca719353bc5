"""The embedded ledger backend: one SQLite file shared by every thread and process using it.

* ``BEGIN IMMEDIATE`` takes the write lock *before* the caps are read, so two writers can never
  both see "room left" and both insert: check and insert are one step, across processes.
* WAL: readers do not block the writer, and a process killed mid-call leaves either the whole
  change or none of it (SQLite rolls an unfinished transaction back on the next open).
* ``synchronous=NORMAL`` (the default) keeps every committed change across process crashes;
  ``FULL`` also keeps the last few across power loss, at the price of an fsync per call.
* Amounts are canonical decimal TEXT: SQLite's INTEGER stops at 2^63 and REAL is inexact.
  Every sum is done in Python ints.
* Rolling sums are not rescanned on every call: the ``windows`` table keeps, per agent, asset and
  window length, the counted total and a cursor (the newest reservation already out of the
  window). Rolling moves the cursor past what left the window and subtracts it, so a reserve costs
  amortised O(1) however many spends a window holds. A reservation counts in a window row iff it
  sits after that row's cursor in (created_at, seq) order; releases and partial commits adjust
  exactly the window rows that count it. ``usage`` recomputes from scratch, independently.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Literal

from agentguard._exceptions import ConfigurationError, ReservationError
from agentguard.ledger._backend import ReserveRequest, Usage
from agentguard.ledger._limits import Limits, per_tx_refusal, rate_refusal, window_refusal
from agentguard.ledger._reservation import Reservation

__all__ = ["SQLiteBackend"]

_SCHEMA_VERSION = 1
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS reservations (
        seq         INTEGER PRIMARY KEY,
        id          TEXT NOT NULL UNIQUE,
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
        reason      TEXT)""",
    "CREATE INDEX IF NOT EXISTS by_agent ON reservations (agent, created_at, seq)",
    "CREATE INDEX IF NOT EXISTS by_asset ON reservations (agent, asset, created_at, seq)",
    "CREATE INDEX IF NOT EXISTS unsigned ON reservations (expires_at) WHERE state = 'reserved'",
    "CREATE INDEX IF NOT EXISTS signed ON reservations (seq) WHERE state = 'signed'",
    # asset '' is the all-assets row used by rate caps (its total stays '0').
    """CREATE TABLE IF NOT EXISTS windows (
        agent       TEXT NOT NULL,
        asset       TEXT NOT NULL,
        seconds     INTEGER NOT NULL,
        total       TEXT NOT NULL,
        count       INTEGER NOT NULL,
        cursor_at   REAL NOT NULL,
        cursor_seq  INTEGER NOT NULL,
        PRIMARY KEY (agent, asset, seconds)) WITHOUT ROWID""",
)
_COLUMNS = (
    "id, key, agent, asset, amount, reserved, recipient, state, created_at, expires_at, "
    "updated_at, reference, outcome, reason, seq"
)
# Queries built once from the constants above (no caller data is ever formatted into SQL).
_SELECT = f"SELECT {_COLUMNS} FROM reservations WHERE "  # noqa: S608
_BY_KEY = _SELECT + "key = ?"
_BY_ID = _SELECT + "id = ?"
_SIGNED = _SELECT + "state = 'signed' ORDER BY seq"
_EXPIRED = _SELECT + "state = 'reserved' AND expires_at <= ?"


def _scoped(scope: str) -> tuple[str, str, str]:
    """(last row out of the window, counted amounts after the cursor, rows leaving) for a scope."""
    return (
        f"SELECT created_at, seq FROM reservations WHERE {scope} AND created_at <= ? "  # noqa: S608
        "ORDER BY created_at DESC, seq DESC LIMIT 1",
        f"SELECT amount FROM reservations WHERE {scope} AND state != 'released' "  # noqa: S608
        "AND (created_at, seq) > (?, ?)",
        f"SELECT created_at, seq, amount, state FROM reservations WHERE {scope} "  # noqa: S608
        "AND (created_at, seq) > (?, ?) AND created_at <= ? ORDER BY created_at, seq",
    )


_ASSET_QUERIES = _scoped("agent = ? AND asset = ?")
_AGENT_QUERIES = _scoped("agent = ?")
_ORIGIN = (float("-inf"), 0)
_ALL_ASSETS = ""

Position = tuple[float, int]


def _row(row: Any) -> tuple[Reservation, Position]:
    reservation = Reservation(
        id=row[0],
        key=row[1],
        agent=row[2],
        asset=row[3],
        amount=int(row[4]),
        reserved=int(row[5]),
        recipient=row[6],
        state=row[7],
        created_at=row[8],
        expires_at=row[9],
        updated_at=row[10],
        reference=row[11],
        outcome=row[12],
        reason=row[13],
    )
    return reservation, (row[8], row[14])


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
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
        except sqlite3.Error as exc:
            raise ConfigurationError(f"cannot open ledger database {self.path!r}: {exc}") from None
        self._conn, self._pid, self._lock = conn, os.getpid(), threading.Lock()
        with self._tx() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise ConfigurationError(
                    f"ledger database {self.path!r} has schema version {version}; "
                    f"this agentguard understands {_SCHEMA_VERSION}"
                )
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

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- LedgerBackend -----------------------------------------------------------------------

    def reserve(self, request: ReserveRequest, limits: Limits, now: float) -> Reservation:
        with self._tx() as db:
            row = db.execute(_BY_KEY, (request.key,)).fetchone()
            if row is not None:
                existing, _ = _row(row)
                if (existing.agent, existing.asset, existing.reserved) != (
                    request.agent,
                    request.asset,
                    request.amount,
                ):
                    raise ReservationError(
                        f"key {request.key!r} already reserved {existing.reserved} of "
                        f"{existing.asset} for agent {existing.agent}, not this spend; "
                        "each authorization needs its own key"
                    )
                return existing
            self._expire(db, now)
            self._check(db, request, limits, now)
            reservation = Reservation(
                id=uuid.uuid4().hex,
                key=request.key,
                agent=request.agent,
                asset=request.asset,
                amount=request.amount,
                reserved=request.amount,
                recipient=request.recipient,
                state="reserved",
                created_at=now,
                expires_at=request.expires_at,
                updated_at=now,
            )
            cursor = db.execute(
                "INSERT INTO reservations (id, key, agent, asset, amount, reserved, recipient, "
                "state, created_at, expires_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    reservation.id,
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
                ),
            )
            assert cursor.lastrowid is not None
            self._adjust(db, reservation, (now, cursor.lastrowid), request.amount, 1)
            return reservation

    def mark_signed(self, reservation_id: str, reference: str, now: float) -> Reservation:
        with self._tx() as db:
            r, _ = self._load(db, reservation_id)
            if r.state == "signed" and r.reference == reference:
                return r
            if r.state != "reserved":
                raise ReservationError(
                    f"reservation {r.id} is {r.state}; only a reserved one can be marked signed"
                )
            if now >= r.expires_at:
                raise ReservationError(
                    f"reservation {r.id} expired at {r.expires_at:.0f}; do not sign on it"
                )
            db.execute(
                "UPDATE reservations SET state = 'signed', reference = ?, updated_at = ? "
                "WHERE id = ?",
                (reference, now, r.id),
            )
            return replace(r, state="signed", reference=reference, updated_at=now)

    def commit(
        self, reservation_id: str, outcome: str, amount: int | None, now: float
    ) -> Reservation:
        with self._tx() as db:
            r, position = self._load(db, reservation_id)
            final = r.reserved if amount is None else amount
            if final > r.reserved:
                raise ReservationError(
                    f"reservation {r.id} holds {r.reserved}; it cannot commit {final}"
                )
            if r.state == "committed":
                if (r.outcome, r.amount) == (outcome, final):
                    return r
                raise ReservationError(
                    f"reservation {r.id} was already committed ({r.amount}, {r.outcome!r})"
                )
            if r.state == "released":
                raise ReservationError(
                    f"reservation {r.id} was released ({r.reason}); it cannot be committed"
                )
            db.execute(
                "UPDATE reservations SET state = 'committed', amount = ?, outcome = ?, "
                "updated_at = ? WHERE id = ?",
                (str(final), outcome, now, r.id),
            )
            self._adjust(db, r, position, final - r.amount, 0)
            return replace(r, state="committed", amount=final, outcome=outcome, updated_at=now)

    def release(self, reservation_id: str, reason: str, now: float) -> Reservation:
        with self._tx() as db:
            r, position = self._load(db, reservation_id)
            if r.state == "released":
                return r
            if r.state == "committed":
                raise ReservationError(
                    f"reservation {r.id} was committed ({r.outcome!r}); a spend that happened "
                    "cannot be released"
                )
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
                "SELECT asset, amount FROM reservations "
                "WHERE agent = ? AND created_at > ? AND state != 'released'",
                (agent, now - window_seconds),
            ).fetchall()
        spent: dict[str, int] = {}
        for asset, amount in rows:
            spent[asset] = spent.get(asset, 0) + int(amount)
        return Usage(count=len(rows), spent=spent)

    # -- inside a transaction ----------------------------------------------------------------

    def _load(self, db: sqlite3.Connection, reservation_id: str) -> tuple[Reservation, Position]:
        row = db.execute(_BY_ID, (reservation_id,)).fetchone()
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
            "updated_at = ? WHERE id = ?",
            (reason, now, r.id),
        )
        self._adjust(db, r, position, -r.amount, -1)
        return replace(r, state="released", amount=0, reason=reason, updated_at=now)

    def _expire(self, db: sqlite3.Connection, now: float) -> list[Reservation]:
        rows = db.execute(_EXPIRED, (now,)).fetchall()
        return [
            self._release(db, r, position, "expired before it was signed", now)
            for r, position in map(_row, rows)
        ]

    def _check(
        self, db: sqlite3.Connection, request: ReserveRequest, limits: Limits, now: float
    ) -> None:
        agent, asset, amount = request.agent, request.asset, request.amount
        cap = limits.per_tx.get(asset)
        if cap is not None and amount > cap:
            raise per_tx_refusal(agent, asset, amount, cap)
        for window in limits.windows_for(asset):
            total, _, cursor = self._roll(db, agent, asset, window.window_seconds, now)
            if total + amount > window.max_amount:
                rows = db.execute(
                    "SELECT created_at, amount FROM reservations WHERE agent = ? AND asset = ? "
                    "AND state != 'released' AND (created_at, seq) > (?, ?) "
                    "ORDER BY created_at, seq",
                    (agent, asset, *cursor),
                )
                in_window = ((at, int(spent)) for at, spent in rows)
                raise window_refusal(agent, window, total, amount, in_window, now)
        for rate in limits.rate:
            _, count, cursor = self._roll(db, agent, _ALL_ASSETS, rate.window_seconds, now)
            if count + 1 > rate.max_count:
                rows = db.execute(
                    "SELECT created_at FROM reservations WHERE agent = ? "
                    "AND state != 'released' AND (created_at, seq) > (?, ?) "
                    "ORDER BY created_at, seq",
                    (agent, *cursor),
                )
                raise rate_refusal(agent, rate, count, (at for (at,) in rows), now)

    def _roll(
        self, db: sqlite3.Connection, agent: str, asset: str, seconds: int, now: float
    ) -> tuple[int, int, Position]:
        """Bring one window row up to ``now``; return its (total, count, cursor)."""
        last_out, counted, leaving_q = _ASSET_QUERIES if asset else _AGENT_QUERIES
        args: tuple[str, ...] = (agent, asset) if asset else (agent,)
        boundary = now - seconds
        row = db.execute(
            "SELECT total, count, cursor_at, cursor_seq FROM windows "
            "WHERE agent = ? AND asset = ? AND seconds = ?",
            (agent, asset, seconds),
        ).fetchone()
        if row is None:  # first time this window length is asked for: count from scratch
            last = db.execute(last_out, (*args, boundary)).fetchone()
            cursor: Position = (last[0], last[1]) if last else _ORIGIN
            amounts = db.execute(counted, (*args, *cursor)).fetchall()
            total = sum(int(a) for (a,) in amounts) if asset else 0
            db.execute(
                "INSERT INTO windows VALUES (?, ?, ?, ?, ?, ?, ?)",
                (agent, asset, seconds, str(total), len(amounts), *cursor),
            )
            return total, len(amounts), cursor
        total, count, cursor = int(row[0]), row[1], (row[2], row[3])
        leaving = db.execute(leaving_q, (*args, *cursor, boundary)).fetchall()
        if leaving:
            for _, _, amount, state in leaving:
                if state != "released":
                    total -= int(amount) if asset else 0
                    count -= 1
            cursor = (leaving[-1][0], leaving[-1][1])
            db.execute(
                "UPDATE windows SET total = ?, count = ?, cursor_at = ?, cursor_seq = ? "
                "WHERE agent = ? AND asset = ? AND seconds = ?",
                (str(total), count, *cursor, agent, asset, seconds),
            )
        return total, count, cursor

    def _adjust(
        self,
        db: sqlite3.Connection,
        r: Reservation,
        position: Position,
        delta: int,
        count_delta: int,
    ) -> None:
        """Apply a change of one reservation to every window row that counts it."""
        rows = db.execute(
            "SELECT asset, seconds, total, count, cursor_at, cursor_seq FROM windows "
            "WHERE agent = ? AND asset IN (?, '')",
            (r.agent, r.asset),
        ).fetchall()
        for asset, seconds, total, count, cursor_at, cursor_seq in rows:
            if position > (cursor_at, cursor_seq):
                db.execute(
                    "UPDATE windows SET total = ?, count = ? "
                    "WHERE agent = ? AND asset = ? AND seconds = ?",
                    (
                        str(int(total) + delta) if asset else "0",
                        count + count_delta,
                        r.agent,
                        asset,
                        seconds,
                    ),
                )
