"""The gateway's state in one SQLite file, with running totals in memory (one gateway process).

Concurrent requests for one policy client + agent cannot both pass a cap: ``reserve`` reads
the totals and adds the new amount as in flight in one synchronous step (the gateway runs it
on one event loop with no ``await`` in between), so every later request already sees it. A
re-registration (new windows) rebuilds the books from the file and carries the in-flight
entries over, so totals stay exact. In-flight amounts live in this process only: a crash
forgets them, which is safe because their attestations never left it.

SQLite runs in WAL mode with ``synchronous=NORMAL``: a record survives a gateway crash or
restart (not a power loss before the next checkpoint). The gateway's records go through
``record_soon``: the ``allow``s recorded by concurrent tasks share one transaction (group
commit), and each is answered only once its commit is done. Checkpoints run on a thread of
their own (``_checkpoint``), never inside a record's commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import weakref
from collections.abc import Awaitable, Iterable, Mapping
from pathlib import Path
from typing import Any

from agentguard._exceptions import GatewayStateError, TaskAlreadyRecorded
from agentguard.network.registration import Registration
from agentguard.network.state._base import SWEEP_BATCH, State
from agentguard.network.state._book import Reservation, _Book, _Entry
from agentguard.network.state._checkpoint import Checkpointer
from agentguard.network.state._compact import Packed, pack
from agentguard.network.state._model import (
    DEFAULT_WINDOWS,
    MAX_PENDING_APPROVALS,
    REQUEST_COLUMNS,
    ApprovalRequest,
    PolicyClientRecord,
    TaskRecord,
    WindowTotals,
    finished,
    policy_from_material,
    policy_material,
)
from agentguard.network.state._spec import parse_spec

__all__ = ["BOOKS_PRUNE_EVERY", "SQLiteState"]

BOOKS_PRUNE_EVERY = 60
"""Seconds between two looks for idle books to drop."""

_FINISHED = finished("?")
_INSERT_TASK = (
    "INSERT INTO tasks (task_id, policy_client, agent, asset, amount, created_at, expires_at, "
    "status, result) VALUES (?, ?, ?, ?, ?, ?, ?, 'attested', ?)"
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    policy_client TEXT NOT NULL,
    agent TEXT NOT NULL,
    asset TEXT NOT NULL,
    amount TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    outcome TEXT,
    result TEXT
);
CREATE INDEX IF NOT EXISTS tasks_by_agent ON tasks (policy_client, agent, created_at);
CREATE INDEX IF NOT EXISTS tasks_by_expiry ON tasks (status, expires_at);
CREATE TABLE IF NOT EXISTS shared_parts (
    digest TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS policies (
    code_hash TEXT PRIMARY KEY,
    material TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS registrations (
    policy_client TEXT PRIMARY KEY,
    code_hash TEXT NOT NULL,
    registration TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS policy_versions (
    policy_id TEXT PRIMARY KEY,
    code_hash TEXT NOT NULL,
    registration TEXT NOT NULL
);
INSERT OR IGNORE INTO policy_versions (policy_id, code_hash, registration)
    SELECT json_extract(registration, '$.policy_id'), code_hash, registration FROM registrations;
CREATE TABLE IF NOT EXISTS approval_requests (
    policy_client TEXT NOT NULL,
    intent_hash TEXT NOT NULL,
    intent TEXT NOT NULL,
    spend TEXT NOT NULL,
    reasons TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    approval TEXT,
    approver TEXT,
    decided_at INTEGER,
    used_by TEXT,
    PRIMARY KEY (policy_client, intent_hash)
);
"""
_CLIENTS = (
    "SELECT r.registration, p.material "
    "FROM registrations r JOIN policies p ON p.code_hash = r.code_hash"
)


class _Queued:
    """A record waiting for the next group commit; ``error``: why its row is not written."""

    __slots__ = ("error", "expires_at", "future", "packed", "reservation")

    def __init__(
        self,
        reservation: Reservation,
        expires_at: int,
        packed: Packed,
        future: asyncio.Future[None] | None,
    ) -> None:
        self.reservation = reservation
        self.expires_at = expires_at
        self.packed = packed
        self.future = future
        self.error: Exception | None = None


def client_record(row: tuple[Any, ...]) -> PolicyClientRecord:
    """A ``(registration JSON, policy material JSON)`` row, as either backend stores it."""
    return PolicyClientRecord(
        registration=Registration.from_json(json.loads(row[0])),
        policy=policy_from_material(json.loads(row[1])),
    )


class SQLiteState(State):
    """Policy clients, approvals and attested spend, persisted in one SQLite file."""

    def __init__(self, spec: str | Path) -> None:
        self.path = parse_spec(spec)[1]
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        # checkpoints on a thread, not inside the commit that crosses the threshold
        # (``_checkpoint``); an in-memory or non-WAL file keeps SQLite's own
        self._checkpoints: Checkpointer | None = None
        mode = self._db.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() == "wal":
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpoints = Checkpointer(self.path)
            weakref.finalize(self, self._checkpoints.stop)  # a state dropped unclosed
        self._books: dict[tuple[str, str], _Book] = {}
        self._stale: set[tuple[str, str]] = set()  # books to rebuild (re-registered client)
        self._parts: set[str] = set()  # shared parts known to be in the file
        self._queue: list[_Queued] = []  # records waiting for the next group commit
        # Policy clients that may hold an approved request: ``claim_approval`` asks the file
        # only for them (every task asks; almost none has one). Approvals are made only through
        # this state (``approve``; one gateway process owns the file), so the set is complete.
        self._approving: set[str] = {
            row[0]
            for row in self._db.execute(
                "SELECT DISTINCT policy_client FROM approval_requests WHERE status = 'approved'"
            )
        }
        self._pruned = 0  # when idle books were last dropped (``_expired``)

    def close(self) -> None:
        self._flush()
        if self._checkpoints is not None:
            self._checkpoints.close()
            self._checkpoints = None
        self._db.close()

    # -- policies and policy clients -----------------------------------------------------------

    def save_policy_client(self, record: PolicyClientRecord) -> None:
        registration = record.registration
        code_hash = "0x" + record.policy.code_hash.hex()
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR REPLACE INTO policies (code_hash, material) VALUES (?, ?)",
                (code_hash, json.dumps(policy_material(record.policy))),
            )
            self._db.execute(
                "INSERT OR REPLACE INTO registrations (policy_client, code_hash, registration) "
                "VALUES (?, ?, ?)",
                (registration.policy_client_hex, code_hash, json.dumps(registration.to_json())),
            )
            self._db.execute(
                "INSERT OR REPLACE INTO policy_versions (policy_id, code_hash, registration) "
                "VALUES (?, ?, ?)",
                (
                    "0x" + registration.policy_id.hex(),
                    code_hash,
                    json.dumps(registration.to_json()),
                ),
            )
        # Windows may have changed with the params: rebuild this client's books on next use,
        # carrying the amounts still in flight over (see ``_book``).
        self._stale.update(k for k in self._books if k[0] == registration.policy_client_hex)

    def policy_clients(self) -> list[PolicyClientRecord]:
        return [client_record(row) for row in self._db.execute(_CLIENTS).fetchall()]

    def policy_client(self, address: str) -> PolicyClientRecord | None:
        row = self._db.execute(
            _CLIENTS + " WHERE r.policy_client = ?", (address.lower(),)
        ).fetchone()
        return None if row is None else client_record(row)

    def policy_version(self, policy_id: str) -> PolicyClientRecord | None:
        row = self._db.execute(
            "SELECT v.registration, p.material FROM policy_versions v "
            "JOIN policies p ON p.code_hash = v.code_hash WHERE v.policy_id = ?",
            (policy_id.lower(),),
        ).fetchone()
        return None if row is None else client_record(row)

    # -- approvals -----------------------------------------------------------------------------

    def _park(self, row: tuple[Any, ...], now: int, max_pending: int) -> ApprovalRequest | None:
        client, hashed = row[0], row[1]
        held = self.approval_request(client, hashed, now)
        if self._stays(held, now):
            return held
        (live,) = self._db.execute(
            "SELECT COUNT(*) FROM approval_requests WHERE policy_client = ? AND expires_at > ? "
            "AND status IN ('pending', 'approved')",
            (client, now),
        ).fetchone()
        if live >= max_pending:
            return None
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR REPLACE INTO approval_requests (policy_client, intent_hash, intent, "
                "spend, reasons, created_at, expires_at, status) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending')",
                row,
            )
            # Finished requests (expired, used) beyond the newest ``max_pending`` go: an agent
            # parking new variations as old ones expire must not grow the file for ever.
            self._db.execute(
                f"DELETE FROM approval_requests WHERE policy_client = ? AND {_FINISHED} AND "  # noqa: S608
                "rowid NOT IN (SELECT rowid FROM approval_requests WHERE policy_client = ? AND "
                f"{_FINISHED} ORDER BY created_at DESC LIMIT ?)",
                (client, now, now, client, now, now, max_pending),
            )
        return self.approval_request(client, hashed, now)

    def approval_request(
        self, policy_client: str, intent_hash: str, now: int
    ) -> ApprovalRequest | None:
        row = self._db.execute(
            f"SELECT {REQUEST_COLUMNS} FROM approval_requests "  # noqa: S608
            "WHERE policy_client = ? AND intent_hash = ?",
            (policy_client.lower(), intent_hash.lower()),
        ).fetchone()
        return None if row is None else ApprovalRequest.from_row(row, now)

    def approval_requests(
        self,
        now: int,
        *,
        status: str | None = None,
        policy_client: str | None = None,
        per_client: int = MAX_PENDING_APPROVALS,
    ) -> list[ApprovalRequest]:
        where, args = (
            ("WHERE policy_client = ? ", (policy_client.lower(),)) if policy_client else ("", ())
        )
        rows = self._db.execute(
            f"SELECT {REQUEST_COLUMNS} FROM (SELECT *, ROW_NUMBER() OVER ("  # noqa: S608
            "PARTITION BY policy_client ORDER BY status IN ('pending', 'approved') AND "
            f"expires_at > ? DESC, created_at DESC) AS n FROM approval_requests {where}) "
            "WHERE n <= ? ORDER BY created_at DESC",
            (now, *args, per_client),
        ).fetchall()
        found = [ApprovalRequest.from_row(row, now) for row in rows]
        return [r for r in found if status is None or r.status == status]

    def approve(
        self,
        policy_client: str,
        intent_hash: str,
        *,
        approval: Mapping[str, Any],
        approver: str,
        expires_at: int,
        now: int,
    ) -> bool:
        self._approving.add(policy_client.lower())  # before the write: never missing one
        return bool(
            self._db.execute(
                "UPDATE approval_requests SET status = 'approved', approval = ?, approver = ?, "
                "decided_at = ?, expires_at = MIN(expires_at, ?) WHERE policy_client = ? AND "
                "intent_hash = ? AND status = 'pending' AND expires_at > ?",
                (
                    json.dumps(dict(approval)),
                    approver.lower(),
                    now,
                    expires_at,
                    policy_client.lower(),
                    intent_hash.lower(),
                    now,
                ),
            ).rowcount
        )

    def reject(self, policy_client: str, intent_hash: str, now: int) -> bool:
        return bool(
            self._db.execute(
                "UPDATE approval_requests SET status = 'rejected', decided_at = ? "
                "WHERE policy_client = ? AND intent_hash = ? AND status IN ('pending', "
                "'approved') AND used_by IS NULL AND expires_at > ?",
                (now, policy_client.lower(), intent_hash.lower(), now),
            ).rowcount
        )

    def claim_approval(
        self, policy_client: str, intent_hash: str, task_id: str, now: int
    ) -> dict[str, Any] | None:
        if policy_client.lower() not in self._approving:
            return None  # no approved request of this client was ever in the file
        row = self._db.execute(
            "UPDATE approval_requests SET used_by = ? WHERE policy_client = ? AND "
            "intent_hash = ? AND status = 'approved' AND used_by IS NULL AND expires_at > ? "
            "RETURNING approval",
            (task_id, policy_client.lower(), intent_hash.lower(), now),
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def unclaim_approval(self, policy_client: str, intent_hash: str, task_id: str) -> None:
        self._db.execute(
            "UPDATE approval_requests SET used_by = NULL WHERE policy_client = ? AND "
            "intent_hash = ? AND used_by = ? AND status = 'approved'",
            (policy_client.lower(), intent_hash.lower(), task_id),
        )

    def use_approval(self, policy_client: str, intent_hash: str, task_id: str) -> None:
        self._db.execute(
            "UPDATE approval_requests SET status = 'used' WHERE policy_client = ? AND "
            "intent_hash = ? AND used_by = ?",
            (policy_client.lower(), intent_hash.lower(), task_id),
        )

    # -- attested spend ------------------------------------------------------------------------

    def _book(self, key: tuple[str, str], windows: Iterable[int], now: int) -> _Book:
        """The agent's book, (re)built from the file when missing, stale or short of a window.

        A rebuild carries over the entries still in flight (reserved, not yet recorded or
        cancelled): they are in no file yet, and dropping them would let concurrent tasks
        pass a cap; they keep their identity, so their ``Reservation`` still cancels or
        records exactly them.
        """
        wanted = set(windows) | set(DEFAULT_WINDOWS)
        book = self._books.get(key)
        stale = key in self._stale
        if book is not None and not stale and wanted <= book.windows.keys():
            return book
        in_flight: list[_Entry] = []
        if book is not None:
            if not stale:
                wanted |= book.windows.keys()
            in_flight = list(book.flight)
            del self._books[key]
        self._stale.discard(key)
        book = _Book(wanted)
        book.floor = now - book.horizon  # older rows are not loaded
        rows = self._db.execute(
            "SELECT created_at, asset, amount FROM tasks "
            "WHERE policy_client = ? AND agent = ? AND status != 'released' AND created_at > ? "
            "ORDER BY created_at, rowid",
            (key[0], key[1], now - book.horizon),
        ).fetchall()
        for created_at, asset, amount in rows:
            book.load(created_at, asset, int(amount))
        for entry in in_flight:
            book.adopt(entry)
        self._books[key] = book
        return book

    def reserve(
        self,
        *,
        policy_client: str,
        agent: str,
        windows: Iterable[int],
        task_id: str,
        asset: str,
        amount: int,
        now: int,
    ) -> Reservation:
        key = (policy_client.lower(), agent.lower())
        book = self._book(key, windows, now)
        history = book.totals(now)
        entry = book.add(task_id, now, asset.lower(), amount)
        return Reservation(key=key, entry=entry, history=history)

    def totals(
        self, *, policy_client: str, agent: str, windows: Iterable[int], now: int
    ) -> dict[int, WindowTotals]:
        return self._book((policy_client.lower(), agent.lower()), windows, now).totals(now)

    def cancel(self, reservation: Reservation) -> None:
        entry = reservation.entry
        if any(item.reservation.entry is entry for item in self._queue):
            return  # queued for the file: ``_flush`` settles it
        if entry.book is not None:
            entry.book.remove(entry)

    def record(
        self,
        reservation: Reservation,
        *,
        expires_at: int,
        result: Mapping[str, Any],
    ) -> None:
        item = self._enqueue(reservation, expires_at, result, None)
        self._flush()
        if item.error is not None:
            raise item.error

    def record_soon(
        self,
        reservation: Reservation,
        *,
        expires_at: int,
        result: Mapping[str, Any],
    ) -> Awaitable[None]:
        """Group commit: the records queued while the event loop runs its ready callbacks
        are written in one transaction (one commit instead of one per ``allow``); each
        waiter learns that its own row is in the file (or why not) after that commit."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return super().record_soon(reservation, expires_at=expires_at, result=result)
        future: asyncio.Future[None] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._enqueue(reservation, expires_at, result, future)
        return future

    def _enqueue(
        self,
        reservation: Reservation,
        expires_at: int,
        result: Mapping[str, Any],
        future: asyncio.Future[None] | None,
    ) -> _Queued:
        item = _Queued(reservation, expires_at, pack(reservation.entry.task_id, result), future)
        self._queue.append(item)
        return item

    def _flush(self) -> None:
        """Write every queued record in one transaction, then settle each: counted for good
        if its row is in the file, given back if not; then wake its waiter."""
        batch, self._queue = self._queue, []
        if not batch:
            return
        db = self._db
        parts: set[str] = set()
        failed: Exception | None = None
        try:
            db.execute("BEGIN")
            for item in batch:
                packed, entry, key = item.packed, item.reservation.entry, item.reservation.key
                part = packed.shared
                if part is not None and part[0] not in self._parts and part[0] not in parts:
                    db.execute("INSERT OR IGNORE INTO shared_parts VALUES (?, ?)", part)
                    parts.add(part[0])
                try:
                    # created_at as counted now: a book rebuilt meanwhile may have moved it
                    row = (entry.task_id, *key, entry.asset, str(entry.amount), entry.created_at)
                    db.execute(_INSERT_TASK, (*row, item.expires_at, packed.text))
                except sqlite3.IntegrityError:  # the same task from another key, concurrently
                    item.error = TaskAlreadyRecorded(f"task {entry.task_id} was already recorded")
            db.execute("COMMIT")
        except Exception:  # every waiter must wake, with the gateway's own error
            with contextlib.suppress(Exception):
                db.execute("ROLLBACK")
            failed = GatewayStateError("the gateway could not write its task records")
        else:
            self._parts |= parts
            self._note(len(batch))
        for item in batch:
            if failed is not None:
                item.error = failed
            self._settle(item)

    def _note(self, records: int) -> None:
        """Tell the checkpoint thread ``records`` more are committed; once it has stopped,
        SQLite checkpoints by itself again (also noticed by the periodic sweep, for a
        gateway that writes no record any more, only approval requests)."""
        if self._checkpoints is not None and not self._checkpoints.note(records):
            self._checkpoints = None
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_autocheckpoint=1000")

    def _settle(self, item: _Queued) -> None:
        reservation, future = item.reservation, item.future
        entry = reservation.entry
        if item.error is not None:
            if entry.book is not None:
                entry.book.remove(entry)
        elif entry.book is not None and self._books.get(reservation.key) is entry.book:
            entry.book.settle(entry)
        else:  # its book was replaced meanwhile: rebuild from the file, which now has it
            self._stale.add(reservation.key)
        if future is not None and not future.done():
            if item.error is None:
                future.set_result(None)
            else:
                future.set_exception(item.error)

    def _stored(self, task_id: str) -> tuple[str, str | None] | None:
        row = self._db.execute(
            "SELECT t.result, s.body FROM tasks t LEFT JOIN shared_parts s "
            "ON s.digest = json_extract(t.result, '$.k') WHERE t.task_id = ?",
            (task_id,),
        ).fetchone()
        return None if row is None or row[0] is None else (row[0], row[1])

    def _task_rows(
        self, after: int, limit: int, policy_client: str | None
    ) -> list[tuple[Any, ...]]:
        # rowid: tasks are inserted (one writer at a time) and never deleted, so a later
        # record always has a higher rowid
        where = " AND t.policy_client = ?" if policy_client is not None else ""
        args = (after,) + ((policy_client,) if policy_client is not None else ()) + (limit,)
        return self._db.execute(
            "SELECT t.rowid, t.task_id, t.policy_client, t.agent, t.asset, t.amount, "  # noqa: S608
            "t.created_at, t.expires_at, t.status, t.result, s.body FROM tasks t "
            "LEFT JOIN shared_parts s ON s.digest = json_extract(t.result, '$.k') "
            f"WHERE t.rowid > ? AND t.result IS NOT NULL{where} ORDER BY t.rowid LIMIT ?",
            args,
        ).fetchall()

    def task(self, task_id: str) -> TaskRecord | None:
        row = self._db.execute(
            "SELECT task_id, policy_client, agent, asset, amount, created_at, expires_at, status "
            "FROM tasks WHERE task_id = ?",
            (task_id,),
        ).fetchone()
        if row is None:
            return None
        return TaskRecord(row[0], row[1], row[2], row[3], int(row[4]), row[5], row[6], row[7])

    def _attested_expiry(self, task_id: str) -> int | None:
        row = self._db.execute(
            "SELECT expires_at FROM tasks WHERE task_id = ? AND status = 'attested'", (task_id,)
        ).fetchone()
        return None if row is None else int(row[0])

    def _set_releasing(self, task_id: str) -> bool:
        return bool(
            self._db.execute(
                "UPDATE tasks SET status = 'releasing' WHERE task_id = ? AND status = 'attested'",
                (task_id,),
            ).rowcount
        )

    def _give_back(self, task_id: str, from_status: str) -> bool:
        row = self._db.execute(
            "UPDATE tasks SET status = 'released' WHERE task_id = ? AND status = ? "
            "RETURNING policy_client, agent, created_at, asset, amount",
            (task_id, from_status),
        ).fetchone()
        if row is None:
            return False
        key = (row[0], row[1])
        book = self._books.get(key)
        if book is not None and key not in self._stale:
            book.give_back(row[2], row[3], int(row[4]))
        return True

    def commit(self, task_id: str, outcome: str) -> bool:
        return bool(
            self._db.execute(
                "UPDATE tasks SET status = 'committed', outcome = ? "
                "WHERE task_id = ? AND status IN ('attested', 'releasing')",
                (outcome, task_id),
            ).rowcount
        )

    def _prune_books(self, now: int) -> None:
        """Drop the books of agents idle for longer than their longest window (nothing of
        theirs counts any more, nothing is in flight): a gateway that saw many agents once
        must not keep a book for each. A dropped book is rebuilt from the file on next use."""
        idle = [
            key
            for key, book in self._books.items()
            if not book.flight and book.last_time <= now - book.horizon
        ]
        for key in idle:
            del self._books[key]
            self._stale.discard(key)

    def _expired(
        self, now: int, statuses: tuple[str, ...], after: tuple[int, str]
    ) -> list[tuple[str, str, int]]:
        if now >= self._pruned + BOOKS_PRUNE_EVERY:
            self._pruned = now
            self._prune_books(now)
        self._note(0)  # a stopped checkpoint thread is noticed without records too
        marks = ", ".join("?" * len(statuses))
        rows = self._db.execute(
            f"SELECT task_id, status, expires_at FROM tasks WHERE status IN ({marks}) "  # noqa: S608
            "AND expires_at <= ? AND (expires_at, task_id) > (?, ?) "
            "ORDER BY expires_at, task_id LIMIT ?",
            (*statuses, now, *after, SWEEP_BATCH),
        ).fetchall()
        return [(task_id, status, expires_at) for task_id, status, expires_at in rows]
