"""The ledger and the used-attestation record on PostgreSQL (psycopg 3), for many hosts.

* Every change to an agent's budget runs in one transaction that first takes a transaction-
  scoped advisory lock on that agent (``pg_advisory_xact_lock``): two ``reserve`` calls for one
  agent, from any process on any host, run one after the other, and each reads the caps'
  sums with a fresh snapshot taken after the previous one committed (READ COMMITTED). So check
  and insert are one step. Other agents are not blocked.
* Sums are recomputed from the reservations (``numeric(78,0)``: exact to 2^256) on each
  ``reserve``, over a partial index of the counted rows: only rows inside the window are read.
* ``bind``, ``mark_signed``, ``commit`` and ``release`` lock the one row (``FOR UPDATE``); they
  only ever lower what counts, so they cannot make a concurrent ``reserve`` too loose. Nor can
  giving back expired unsigned holds (every ``reserve`` does, for all agents, as SQLite does).
* A dropped connection, a server that is down or restarting, a timeout: ``LedgerUnavailable``
  (whether the call took effect is unknown; whatever it may have reserved keeps counting). The
  next call reconnects. A deadlock or serialization failure is retried.
* ``namespace`` (a schema) lets several ledgers share one database.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace as _replace
from typing import Any, TypeVar

from agentguard._exceptions import (
    AgentGuardError,
    AttestationReplayed,
    ConfigurationError,
    LedgerUnavailable,
    MissingExtra,
    ReservationError,
)
from agentguard._redact import register_secret
from agentguard.ledger._backend import ReserveRequest, Usage
from agentguard.ledger._limits import Limits, per_tx_refusal, rate_refusal, window_refusal
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

__all__ = ["PostgresBackend", "PostgresReplayGuard"]

_NAMESPACE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_T = TypeVar("_T")
_RETRIES = 20
_COLUMNS = (
    "key, agent, asset, amount, reserved, recipient, state, created_at, expires_at, "
    "updated_at, reference, outcome, reason, actions, task_id"
)
_BIGINT_MAX = 2**63 - 1
_EXPIRED = "state = 'reserved' AND expires_at <= %s"


def _schema(ns: str) -> tuple[str, ...]:
    return (
        f'CREATE SCHEMA IF NOT EXISTS "{ns}"',
        f"""CREATE TABLE IF NOT EXISTS "{ns}".reservations (
            seq         bigserial NOT NULL,
            key         text PRIMARY KEY,
            agent       text NOT NULL,
            asset       text NOT NULL,
            amount      numeric(78, 0) NOT NULL,
            reserved    numeric(78, 0) NOT NULL,
            recipient   text,
            state       text NOT NULL
                CHECK (state IN ('reserved', 'signed', 'committed', 'released')),
            created_at  double precision NOT NULL,
            expires_at  double precision NOT NULL,
            updated_at  double precision NOT NULL,
            reference   text,
            outcome     text,
            reason      text,
            actions     integer NOT NULL,
            task_id     text UNIQUE)""",
        f'CREATE INDEX IF NOT EXISTS counted ON "{ns}".reservations '
        "(agent, created_at) INCLUDE (asset, amount, actions) WHERE state <> 'released'",
        f'CREATE INDEX IF NOT EXISTS by_agent ON "{ns}".reservations (agent, created_at, seq)',
        f'CREATE INDEX IF NOT EXISTS unsigned ON "{ns}".reservations (expires_at) '
        "WHERE state = 'reserved'",
        f"CREATE INDEX IF NOT EXISTS signed ON \"{ns}\".reservations (seq) WHERE state = 'signed'",
        # What each second of each agent's spending still counts: the caps sum these buckets
        # (and the rows of the one bucket a window boundary cuts), not every reservation.
        f"""CREATE TABLE IF NOT EXISTS "{ns}".buckets (
            agent       text NOT NULL,
            asset       text NOT NULL,
            second      bigint NOT NULL,
            total       numeric(78, 0) NOT NULL,
            count       integer NOT NULL,
            PRIMARY KEY (agent, asset, second))""",
        f'CREATE INDEX IF NOT EXISTS buckets_by_agent ON "{ns}".buckets (agent, second)',
        f"""CREATE TABLE IF NOT EXISTS "{ns}".used_attestations (
            task_id     bytea PRIMARY KEY,
            expires_at  bigint NOT NULL)""",
    )


def _row(row: Any) -> Reservation:
    return Reservation(
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
        action=bool(row[13]),
        task_id=row[14],
    )


def _namespace(value: str) -> str:
    if not isinstance(value, str) or not _NAMESPACE.fullmatch(value):
        raise ConfigurationError(
            "namespace must be a lowercase identifier (a-z, 0-9, _; at most 63 characters)"
        )
    return value


def _paged(
    db: Any, query: str, args: tuple[Any, ...], page: int = 8
) -> Iterator[tuple[float, Any]]:
    """(created_at, value) of ``query``'s rows oldest first, fetched a page at a time: a
    refusal's wording reads only as far as it needs to say when room frees up."""
    after: tuple[float, int] = (float("-inf"), 0)
    while True:
        rows = db.execute(
            query + " AND (created_at, seq) > (%s, %s) ORDER BY created_at, seq LIMIT %s",
            (*args, *after, page),
        ).fetchall()
        for at, _, value in rows:
            yield at, value
        if len(rows) < page:
            return
        after, page = (rows[-1][0], rows[-1][1]), min(page * 4, 1024)


class _Postgres:
    """One connection per process (reopened after a fork or a failure), used under a lock.

    Shared by the ledger and the reference gateway's state (``what`` names the store in
    messages; ``schema`` makes its tables; ``unavailable``/``invalid`` are its error types)."""

    def __init__(
        self,
        url: str,
        namespace: str,
        *,
        what: str = "ledger",
        schema: Callable[[str], tuple[str, ...]] = _schema,
        unavailable: type[AgentGuardError] = LedgerUnavailable,
        invalid: type[AgentGuardError] = ReservationError,
    ) -> None:
        try:
            import psycopg
            from psycopg.conninfo import conninfo_to_dict
        except ImportError:  # tests/cli/test_missing_extra.py
            raise MissingExtra(
                "postgres", ["psycopg"], needed_by=f"a postgresql:// {what}"
            ) from None
        self._psycopg = psycopg
        self.unique_violation: type[Exception] = psycopg.errors.UniqueViolation
        self.what, self._schema = what, schema
        self._unavailable_error, self._invalid = unavailable, invalid
        try:
            info = conninfo_to_dict(url)
        except psycopg.Error:
            raise ConfigurationError(f"the PostgreSQL {what} URL is malformed") from None
        if info.get("password"):
            register_secret(str(info["password"]))
        self.where = f"{info.get('host', 'localhost')}:{info.get('port', 5432)}"
        self._url = url
        self.ns = _namespace(namespace)
        self._lock = threading.Lock()
        self._conn: Any = None
        self._pid = os.getpid()
        self._ready = False

    def _connect(self) -> Any:
        conn = self._psycopg.connect(
            self._url,
            autocommit=True,
            connect_timeout=5,
            application_name=f"agentguard-{self.what}",
        )
        conn.execute("SET statement_timeout = 30000")
        if not self._ready:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(7305692157613245)")
                for statement in self._schema(self.ns):
                    conn.execute(statement)
            self._ready = True
        return conn

    def run(self, body: Callable[[Any], _T], *, transaction: bool = True) -> _T:
        """``body(connection)`` inside one transaction; retried on a deadlock or serialization
        failure, ``LedgerUnavailable`` when the server cannot be reached."""
        errors = self._psycopg.errors
        with self._lock:
            if os.getpid() != self._pid:  # a connection never crosses a fork
                self._conn, self._pid = None, os.getpid()
            reconnected = False
            for attempt in range(_RETRIES):
                fresh = self._conn is None or self._conn.closed
                try:
                    if fresh:
                        self._conn = self._connect()
                    if not transaction:  # one statement: atomic by itself, one round trip
                        return body(self._conn)
                    with self._conn.transaction():
                        return body(self._conn)
                except (
                    errors.SerializationFailure,
                    errors.DeadlockDetected,
                    errors.UniqueViolation,  # a racing reserve of the same key: see reserve
                ):
                    time.sleep(0.001 * (attempt + 1))
                except UnicodeError:  # a lone surrogate in caller text
                    raise self._invalid(
                        f"the {self.what} stores text as UTF-8; this call's text is not"
                    ) from None
                except errors.DataError as exc:  # e.g. a NUL character PostgreSQL cannot store
                    raise self._invalid(
                        f"the PostgreSQL {self.what} cannot store this value "
                        f"({type(exc).__name__}); nothing was recorded"
                    ) from None
                except self._psycopg.OperationalError:
                    # A connection broken since its last use (the server restarted): once more
                    # on a new one. Every operation is idempotent, so a lost answer is safe too.
                    self._drop()
                    if fresh or reconnected:
                        raise self._unavailable("cannot connect, or the connection broke") from None
                    reconnected = True
                except self._psycopg.Error as exc:
                    self._drop()
                    raise self._unavailable(type(exc).__name__) from None
            raise self._unavailable_error(
                f"the PostgreSQL {self.what} at {self.where} stayed contended"
            )

    def _unavailable(self, what: str) -> AgentGuardError:
        return self._unavailable_error(
            f"the PostgreSQL {self.what} at {self.where} failed ({what}); "
            "the call may or may not have taken effect"
        )

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._drop()


class PostgresBackend:
    """``LedgerBackend`` on a PostgreSQL database shared by every process and host using it."""

    def __init__(self, url: str, *, namespace: str = "agentguard") -> None:
        self._db = _Postgres(url, namespace)
        t = f'"{self._db.ns}".reservations'
        self._table = t
        self._buckets = b = f'"{self._db.ns}".buckets'
        self._first = (
            f"SELECT e.expired, {', '.join('r.' + c for c in _COLUMNS.split(', '))} "  # noqa: S608
            "FROM (SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))) AS l, "
            f"(SELECT EXISTS (SELECT 1 FROM {t} WHERE state = 'reserved' AND expires_at <= %s) "
            f"AS expired) AS e LEFT JOIN {t} AS r ON r.key = %s"
        )
        self._insert = (
            f"WITH held AS (INSERT INTO {t} (key, agent, asset, amount, reserved, recipient, "  # noqa: S608
            "state, created_at, expires_at, updated_at, actions) "
            "VALUES (%s, %s, %s, %s, %s, %s, 'reserved', %s, %s, %s, %s) RETURNING 1) "
            f"INSERT INTO {b} AS b SELECT %s, %s, %s, %s, %s FROM held "
            "ON CONFLICT (agent, asset, second) DO UPDATE "
            "SET total = b.total + EXCLUDED.total, count = b.count + EXCLUDED.count"
        )
        self._select = f"SELECT {_COLUMNS} FROM {t} WHERE "  # noqa: S608 - validated identifier
        self._db.run(lambda _: None)  # create the schema, or fail now

    @property
    def namespace(self) -> str:
        return self._db.ns

    def _load(self, db: Any, reservation_id: str, *, lock: bool = True) -> Reservation:
        row = db.execute(
            self._select + "key = %s" + (" FOR UPDATE" if lock else ""), (reservation_id,)
        ).fetchone()
        if row is None:
            raise ReservationError(f"no reservation with id {reservation_id!r} in this ledger")
        return _row(row)

    def _release_where(
        self, db: Any, where: str, args: tuple[Any, ...], reason: str, now: float
    ) -> list[Reservation]:
        held = [
            _row(row)
            for row in db.execute(
                self._select + where + " AND state <> 'released' ORDER BY key FOR UPDATE", args
            ).fetchall()
        ]
        if not held:
            return []
        db.execute(
            f"UPDATE {self._table} SET state = 'released', amount = 0, reason = %s, "  # noqa: S608
            "updated_at = %s WHERE key = ANY(%s)",
            (reason, now, [r.id for r in held]),
        )
        for r in held:
            self._count(db, r, -r.amount, -int(r.action))
        return [
            _replace(r, state="released", amount=0, reason=reason, updated_at=now) for r in held
        ]

    def _count(self, db: Any, r: Reservation, delta: int, count_delta: int) -> None:
        """Apply a change of what ``r`` counts to its second's bucket."""
        if delta or count_delta:
            db.execute(
                f"INSERT INTO {self._buckets} AS b VALUES (%s, %s, %s, %s, %s) "  # noqa: S608
                "ON CONFLICT (agent, asset, second) DO UPDATE "
                "SET total = b.total + EXCLUDED.total, count = b.count + EXCLUDED.count",
                (r.agent, r.asset, math.floor(r.created_at), delta, count_delta),
            )

    # -- LedgerBackend -----------------------------------------------------------------------

    def reserve(self, request: ReserveRequest, limits: Limits, now: float) -> Reservation:
        def body(db: Any) -> Reservation:
            # One round trip: the agent's lock, whether any hold expired, the key's reservation.
            # (This statement's snapshot predates the lock: a racing reserve of the same key
            # makes the INSERT below fail, and the whole call is retried.)
            first = db.execute(self._first, (self._lock_key(request.agent), now, request.key))
            expired, *row = first.fetchone()
            if row[0] is not None:
                return check_same_spend(_row(row), request)
            if expired:
                self._release_where(db, _EXPIRED, (now,), "expired before it was signed", now)
            self._check(db, request, limits, now)
            reservation = new_reservation(request, now)
            r, actions = reservation, int(request.action)
            db.execute(
                self._insert,
                (
                    *(r.key, r.agent, r.asset, r.amount, r.amount, r.recipient),
                    *(now, r.expires_at, now, actions),
                    *(r.agent, r.asset, math.floor(now), r.amount, actions),
                ),
            )
            return reservation

        return self._db.run(body)

    def _lock_key(self, agent: str) -> str:
        return f"{self._db.ns}/{agent}"

    def _check(self, db: Any, request: ReserveRequest, limits: Limits, now: float) -> None:
        agent, asset, amount = request.agent, request.asset, request.amount
        cap = limits.per_tx.get(asset)
        if cap is not None and amount > cap:
            raise per_tx_refusal(agent, asset, amount, cap, limits.amount_text(asset))
        windows = limits.windows_for(asset)
        rates = limits.rate if request.action else ()  # a fee is not another action
        scopes: list[tuple[str | None, float]] = [(asset, now - w.window_seconds) for w in windows]
        scopes += [(None, now - c.window_seconds) for c in rates]
        counted = self._counted(db, agent, scopes)
        t = self._table
        for window, (used, _) in zip(windows, counted, strict=False):
            if used + amount > window.max_amount:
                rows = _paged(
                    db,
                    f"SELECT created_at, seq, amount FROM {t} WHERE agent = %s AND "  # noqa: S608
                    "created_at > %s AND state <> 'released' AND asset = %s",
                    (agent, now - window.window_seconds, asset),
                )
                in_window = ((at, int(spent)) for at, spent in rows)
                raise window_refusal(
                    agent, window, used, amount, in_window, now, limits.amount_text(asset)
                )
        for rate, (_, count) in zip(rates, counted[len(windows) :], strict=True):
            if count + 1 > rate.max_count:
                rows = _paged(
                    db,
                    f"SELECT created_at, seq, 0 FROM {t} WHERE agent = %s AND "  # noqa: S608
                    "created_at > %s AND state <> 'released' AND actions > 0",
                    (agent, now - rate.window_seconds),
                )
                raise rate_refusal(agent, rate, count, (at for at, _ in rows), now)

    def _counted(
        self, db: Any, agent: str, scopes: list[tuple[str | None, float]]
    ) -> list[tuple[int, int]]:
        """For each (asset or None for all, since): the (amount, actions) ``agent`` counts after
        ``since``, in one round trip: whole seconds from their buckets, the second ``since``
        cuts from its rows."""
        if not scopes:
            return []
        parts, args = [], []
        for i, (asset, since) in enumerate(scopes):
            edge = math.floor(since)
            scope, arg = ("AND asset = %s", (asset,)) if asset is not None else ("", ())
            parts.append(
                f"SELECT {i}, coalesce(sum(total), 0), coalesce(sum(count), 0) "  # noqa: S608 - identifiers validated
                f"FROM {self._buckets} WHERE agent = %s {scope} AND second > %s UNION ALL "
                f"SELECT {i}, coalesce(sum(amount), 0), coalesce(sum(actions), 0) "
                f"FROM {self._table} WHERE agent = %s {scope} AND state <> 'released' "
                "AND created_at > %s AND created_at < %s"
            )
            args += [agent, *arg, edge, agent, *arg, since, edge + 1]
        totals = [(0, 0)] * len(scopes)
        for i, amount, count in db.execute(" UNION ALL ".join(parts), args).fetchall():
            totals[i] = (totals[i][0] + int(amount), totals[i][1] + int(count))
        return totals

    def bind(self, reservation_id: str, task_id: str, expires_at: float, now: float) -> Reservation:
        def body(db: Any) -> Reservation:
            r = self._load(db, reservation_id)
            same = check_bind(r, task_id, expires_at, now)
            if same is not None:
                return same
            other = db.execute(
                f"SELECT key FROM {self._table} WHERE task_id = %s",  # noqa: S608
                (task_id,),
            ).fetchone()
            if other is not None:  # one attestation backs one action, once
                raise AttestationReplayed(replayed_message(task_id, other[0]))
            try:
                with db.transaction():  # a savepoint: a racing bind of the same task loses here
                    db.execute(
                        f"UPDATE {self._table} SET task_id = %s, expires_at = %s, "  # noqa: S608
                        "updated_at = %s WHERE key = %s",
                        (task_id, expires_at, now, r.id),
                    )
            except self._db.unique_violation:
                raise AttestationReplayed(replayed_message(task_id, "another")) from None
            return _replace(r, task_id=task_id, expires_at=expires_at, updated_at=now)

        return self._db.run(body)

    def mark_signed(self, reservation_id: str, reference: str, now: float) -> Reservation:
        def body(db: Any) -> Reservation:
            r = self._load(db, reservation_id)
            same = check_mark_signed(r, reference, now)
            if same is not None:
                return same
            db.execute(
                f"UPDATE {self._table} SET state = 'signed', reference = %s, updated_at = %s "  # noqa: S608
                "WHERE key = %s",
                (reference, now, r.id),
            )
            return _replace(r, state="signed", reference=reference, updated_at=now)

        return self._db.run(body)

    def commit(
        self, reservation_id: str, outcome: str, amount: int | None, now: float
    ) -> Reservation:
        def body(db: Any) -> Reservation:
            r = self._load(db, reservation_id)
            same, final = check_commit(r, outcome, amount)
            if same is not None:
                return same
            db.execute(
                f"UPDATE {self._table} SET state = 'committed', amount = %s, outcome = %s, "  # noqa: S608
                "updated_at = %s WHERE key = %s",
                (final, outcome, now, r.id),
            )
            self._count(db, r, final - r.amount, 0)
            return _replace(r, state="committed", amount=final, outcome=outcome, updated_at=now)

        return self._db.run(body)

    def release(self, reservation_id: str, reason: str, now: float) -> Reservation:
        def body(db: Any) -> Reservation:
            r = self._load(db, reservation_id)
            same = check_release(r)
            if same is not None:
                return same
            return self._release_where(db, "key = %s", (r.id,), reason, now)[0]

        return self._db.run(body)

    def get(self, reservation_id: str) -> Reservation:
        return self._db.run(
            lambda db: self._load(db, reservation_id, lock=False), transaction=False
        )

    def expire(self, now: float) -> list[Reservation]:
        return self._db.run(
            lambda db: self._release_where(
                db, _EXPIRED, (now,), "expired before it was signed", now
            )
        )

    def signed(self) -> list[Reservation]:
        rows = self._db.run(
            lambda db: db.execute(self._select + "state = 'signed' ORDER BY seq").fetchall(),
            transaction=False,
        )
        return [_row(row) for row in rows]

    def usage(self, agent: str, window_seconds: int, now: float) -> Usage:
        rows = self._db.run(
            lambda db: db.execute(
                f"SELECT asset, amount, actions FROM {self._table} "  # noqa: S608
                "WHERE agent = %s AND created_at > %s AND state <> 'released'",
                (agent, now - window_seconds),
            ).fetchall(),
            transaction=False,
        )
        spent: dict[str, int] = {}
        for asset, amount, _ in rows:
            spent[asset] = spent.get(asset, 0) + int(amount)
        return Usage(count=sum(actions for _, _, actions in rows), spent=spent)

    def close(self) -> None:
        self._db.close()


class PostgresReplayGuard:
    """``ReplayGuard`` on PostgreSQL: an attestation is claimed once across every process and
    host sharing the database (a primary-key insert; the loser of a race sees the winner's row).
    Rows are kept a day past their expiry, so a clock a little ahead cannot reopen one."""

    def __init__(self, url: str, *, namespace: str = "agentguard", keep: int = 86_400) -> None:
        self._db = _Postgres(url, namespace)
        self._table = f'"{self._db.ns}".used_attestations'
        self._keep = keep
        self._next_prune = 0.0
        self._db.run(lambda _: None)

    def claim(self, task_id: bytes, expires_at: int) -> bool:
        now = time.time()
        keep_until = min(max(int(expires_at), int(now)) + self._keep, _BIGINT_MAX)

        def body(db: Any) -> bool:
            if now >= self._next_prune:
                # the server's clock, not this host's: a host whose clock runs ahead must not
                # forget claims of attestations still valid elsewhere
                db.execute(
                    f"DELETE FROM {self._table} "  # noqa: S608
                    "WHERE expires_at < extract(epoch from now())::bigint"
                )
            row = db.execute(
                f"INSERT INTO {self._table} (task_id, expires_at) VALUES (%s, %s) "  # noqa: S608
                "ON CONFLICT (task_id) DO NOTHING RETURNING 1",
                (bytes(task_id), keep_until),
            ).fetchone()
            return row is not None

        claimed = self._db.run(body, transaction=False)
        if now >= self._next_prune:
            self._next_prune = now + 60
        return claimed

    def close(self) -> None:
        self._db.close()
