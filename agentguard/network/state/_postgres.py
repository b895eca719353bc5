"""The gateway's state in PostgreSQL (psycopg 3): one database shared by every gateway replica.

* ``reserve`` runs in one transaction that first takes a transaction-scoped advisory lock on
  the (policy client, agent) pair (``pg_advisory_xact_lock``), then reads the totals with a
  snapshot taken after the previous holder committed (READ COMMITTED), then inserts the task as
  ``reserved`` (in flight, counted). So two replicas never both pass a window cap: the second
  sees the first's amount. Other pairs are not blocked.
* Totals are sums of per-second buckets (``counted``: exact ``numeric``), kept in the same
  transaction as every change of what counts (reserve, cancel, give back), so a reserve reads
  at most one row per second and asset inside its longest window, not every task.
* An in-flight row carries its reservation's random ``holder`` token: only that reservation
  records or cancels it. A replica that died mid-task leaves its row counted; the sweep drops
  it after ``STALE_RESERVATION`` seconds (its attestation never left the gateway: a record
  after that finds the row gone and fails, so the task answers an error, never an allow).
* Approvals change in single conditional statements (row locks), so claim and use are single
  use across replicas; parking takes the client's advisory lock.
* Server down, restarting or unreachable: ``StateUnavailable`` (the gateway answers an error,
  never an allow); the next call reconnects, nothing to repair.
* ``?namespace=NAME`` (a schema; default ``agentguard_gateway``) keeps several gateways, or a
  gateway and a ledger, apart in one database.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from agentguard._exceptions import (
    GatewayStateError,
    StateUnavailable,
    TaskAlreadyRecorded,
)
from agentguard.ledger._postgres import _Postgres
from agentguard.network.state._base import SWEEP_BATCH, State
from agentguard.network.state._book import Reservation, _Entry
from agentguard.network.state._compact import pack
from agentguard.network.state._model import (
    DEFAULT_WINDOWS,
    MAX_PENDING_APPROVALS,
    REQUEST_COLUMNS,
    ApprovalRequest,
    PolicyClientRecord,
    TaskRecord,
    WindowTotals,
    finished,
    policy_material,
)
from agentguard.network.state._spec import parse_spec
from agentguard.network.state._sqlite import client_record

__all__ = ["DEFAULT_NAMESPACE", "STALE_RESERVATION", "PostgresState"]

DEFAULT_NAMESPACE = "agentguard_gateway"
STALE_RESERVATION = 600
"""Seconds after which an in-flight reservation no replica settled is dropped: well past the
longest task (``MAX_TIMEOUT``) and any clock difference between replicas."""
_FINISHED = finished("%s")
_NUMBERED = 10_000  # records given a ``seq`` per read at most (the rest on the next read)
_TASK_COLUMNS = "task_id, policy_client, agent, asset, amount, created_at, expires_at, status"


def _schema(ns: str) -> tuple[str, ...]:
    return (
        f'CREATE SCHEMA IF NOT EXISTS "{ns}"',
        f"""CREATE TABLE IF NOT EXISTS "{ns}".tasks (
            task_id       text PRIMARY KEY,
            policy_client text NOT NULL,
            agent         text NOT NULL,
            asset         text NOT NULL,
            amount        numeric NOT NULL,
            created_at    bigint NOT NULL,
            expires_at    bigint NOT NULL,
            status        text NOT NULL CHECK (status IN
                ('reserved', 'attested', 'releasing', 'committed', 'released')),
            holder        text,
            outcome       text,
            result        text)""",
        f'CREATE INDEX IF NOT EXISTS tasks_by_expiry ON "{ns}".tasks (status, expires_at)',
        # the auditors' cursor (see ``_task_rows``); added to a state made before it existed
        f'ALTER TABLE "{ns}".tasks ADD COLUMN IF NOT EXISTS seq bigint',
        f'CREATE SEQUENCE IF NOT EXISTS "{ns}".task_seq',
        f'CREATE UNIQUE INDEX IF NOT EXISTS tasks_by_seq ON "{ns}".tasks (seq)',
        f"""CREATE TABLE IF NOT EXISTS "{ns}".counted (
            policy_client text NOT NULL,
            agent         text NOT NULL,
            second        bigint NOT NULL,
            asset         text NOT NULL,
            total         numeric NOT NULL,
            count         bigint NOT NULL,
            PRIMARY KEY (policy_client, agent, second, asset))""",
        f"""CREATE TABLE IF NOT EXISTS "{ns}".shared_parts (
            digest text PRIMARY KEY,
            body   text NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS "{ns}".policies (
            code_hash text PRIMARY KEY,
            material  text NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS "{ns}".registrations (
            policy_client text PRIMARY KEY,
            code_hash     text NOT NULL,
            registration  text NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS "{ns}".policy_versions (
            policy_id     text PRIMARY KEY,
            code_hash     text NOT NULL,
            registration  text NOT NULL)""",
        f'INSERT INTO "{ns}".policy_versions (policy_id, code_hash, registration) '  # noqa: S608
        "SELECT registration::json ->> 'policy_id', code_hash, registration "
        f'FROM "{ns}".registrations ON CONFLICT (policy_id) DO NOTHING',
        f"""CREATE TABLE IF NOT EXISTS "{ns}".approval_requests (
            policy_client text NOT NULL,
            intent_hash   text NOT NULL,
            intent        text NOT NULL,
            spend         text NOT NULL,
            reasons       text NOT NULL,
            created_at    bigint NOT NULL,
            expires_at    bigint NOT NULL,
            status        text NOT NULL,
            approval      text,
            approver      text,
            decided_at    bigint,
            used_by       text,
            PRIMARY KEY (policy_client, intent_hash))""",
    )


class PostgresState(State):
    """Policy clients, approvals and attested spend in a PostgreSQL database that any number
    of gateway replicas share (see the module docstring)."""

    shared = True

    def __init__(self, spec: str) -> None:
        """``spec``: ``postgresql://USER@HOST/DB[?namespace=NAME]``. Its password is registered
        as a secret (masked in every log line) and no error quotes the URL, only host:port;
        the user and database names are not secrets (masking them would mask common words)."""
        _, url, namespace = parse_spec(spec)
        self._db = _Postgres(
            url,
            namespace or DEFAULT_NAMESPACE,
            what="gateway state",
            schema=_schema,
            unavailable=StateUnavailable,
            invalid=GatewayStateError,
        )
        ns = self._db.ns
        self.namespace = ns
        t, c = f'"{ns}".tasks', f'"{ns}".counted'
        self._t, self._c, self._a = t, c, f'"{ns}".approval_requests'
        self._parts_table = f'"{ns}".shared_parts'
        self._parts: set[str] = set()
        # Take rows out of what counts: ``{rows}`` is a data-modifying CTE returning them.
        self._uncount = (
            "WITH gone AS ({rows} RETURNING policy_client, agent, asset, amount, created_at) "  # noqa: S608
            f"UPDATE {c} AS c SET total = c.total - g.amount, count = c.count - g.n "
            "FROM (SELECT policy_client, agent, asset, created_at, sum(amount) AS amount, "
            "count(*) AS n FROM gone GROUP BY 1, 2, 3, 4) AS g "
            "WHERE c.policy_client = g.policy_client AND c.agent = g.agent "
            "AND c.second = g.created_at AND c.asset = g.asset RETURNING 1"
        )
        self._insert = (
            f"WITH held AS (INSERT INTO {t} (task_id, policy_client, agent, asset, amount, "  # noqa: S608
            "created_at, expires_at, status, holder) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, 'reserved', %s) "
            "ON CONFLICT (task_id) DO NOTHING RETURNING 1) "
            f"INSERT INTO {c} AS c SELECT %s, %s, %s, %s, %s, 1 FROM held "
            "ON CONFLICT (policy_client, agent, second, asset) DO UPDATE "
            "SET total = c.total + EXCLUDED.total, count = c.count + 1 RETURNING 1"
        )
        self._clients = (
            f'SELECT r.registration, p.material FROM "{ns}".registrations r '  # noqa: S608
            f'JOIN "{ns}".policies p ON p.code_hash = r.code_hash'
        )
        self._db.run(lambda _: None)  # create the schema, or fail now

    def close(self) -> None:
        self._db.close()

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """One statement, atomic by itself; its rows (none for a statement without)."""

        def body(db: Any) -> list[tuple[Any, ...]]:
            cursor = db.execute(sql, args)
            return list(cursor.fetchall()) if cursor.description is not None else []

        return self._db.run(body, transaction=False)

    def _changed(self, sql: str, args: tuple[Any, ...]) -> bool:
        return self._db.run(lambda db: bool(db.execute(sql, args).rowcount), transaction=False)

    def _lock(self, db: Any, *parts: str) -> None:
        db.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            ("/".join((self.namespace, *parts)),),
        )

    # -- policies and policy clients -----------------------------------------------------------

    def save_policy_client(self, record: PolicyClientRecord) -> None:
        registration = record.registration
        code_hash = "0x" + record.policy.code_hash.hex()
        ns = self.namespace

        def body(db: Any) -> None:
            db.execute(
                f'INSERT INTO "{ns}".policies (code_hash, material) VALUES (%s, %s) '  # noqa: S608
                "ON CONFLICT (code_hash) DO UPDATE SET material = EXCLUDED.material",
                (code_hash, json.dumps(policy_material(record.policy))),
            )
            db.execute(
                f'INSERT INTO "{ns}".registrations (policy_client, code_hash, registration) '  # noqa: S608
                "VALUES (%s, %s, %s) ON CONFLICT (policy_client) DO UPDATE "
                "SET code_hash = EXCLUDED.code_hash, registration = EXCLUDED.registration",
                (registration.policy_client_hex, code_hash, json.dumps(registration.to_json())),
            )
            db.execute(
                f'INSERT INTO "{ns}".policy_versions (policy_id, code_hash, registration) '  # noqa: S608
                "VALUES (%s, %s, %s) ON CONFLICT (policy_id) DO UPDATE "
                "SET code_hash = EXCLUDED.code_hash, registration = EXCLUDED.registration",
                (
                    "0x" + registration.policy_id.hex(),
                    code_hash,
                    json.dumps(registration.to_json()),
                ),
            )

        self._db.run(body)

    def policy_clients(self) -> list[PolicyClientRecord]:
        return [client_record(row) for row in self._run(self._clients)]

    def policy_client(self, address: str) -> PolicyClientRecord | None:
        rows = self._run(self._clients + " WHERE r.policy_client = %s", (address.lower(),))
        return client_record(rows[0]) if rows else None

    def policy_version(self, policy_id: str) -> PolicyClientRecord | None:
        ns = self.namespace
        rows = self._run(
            f'SELECT v.registration, p.material FROM "{ns}".policy_versions v '  # noqa: S608
            f'JOIN "{ns}".policies p ON p.code_hash = v.code_hash WHERE v.policy_id = %s',
            (policy_id.lower(),),
        )
        return client_record(rows[0]) if rows else None

    # -- approvals -----------------------------------------------------------------------------

    def _park(self, row: tuple[Any, ...], now: int, max_pending: int) -> ApprovalRequest | None:
        client, hashed = row[0], row[1]
        a = self._a

        def body(db: Any) -> ApprovalRequest | None:
            self._lock(db, "approvals", client)
            held = self._request(db, client, hashed, now)
            if self._stays(held, now):
                return held
            (live,) = db.execute(
                f"SELECT COUNT(*) FROM {a} WHERE policy_client = %s AND expires_at > %s "  # noqa: S608
                "AND status IN ('pending', 'approved')",
                (client, now),
            ).fetchone()
            if live >= max_pending:
                return None
            db.execute(
                f"INSERT INTO {a} (policy_client, intent_hash, intent, spend, reasons, "  # noqa: S608
                "created_at, expires_at, status) VALUES (%s, %s, %s, %s, %s, %s, %s, 'pending') "
                "ON CONFLICT (policy_client, intent_hash) DO UPDATE SET intent = "
                "EXCLUDED.intent, spend = EXCLUDED.spend, reasons = EXCLUDED.reasons, "
                "created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at, "
                "status = 'pending', approval = NULL, approver = NULL, decided_at = NULL, "
                "used_by = NULL",
                row,
            )
            # Finished requests beyond the newest ``max_pending`` go (see the SQLite backend).
            db.execute(
                f"DELETE FROM {a} WHERE policy_client = %s AND {_FINISHED} AND intent_hash "  # noqa: S608
                f"NOT IN (SELECT intent_hash FROM {a} WHERE policy_client = %s AND "
                f"{_FINISHED} ORDER BY created_at DESC LIMIT %s)",
                (client, now, now, client, now, now, max_pending),
            )
            return self._request(db, client, hashed, now)

        return self._db.run(body)

    def _request(
        self, db: Any, policy_client: str, intent_hash: str, now: int
    ) -> ApprovalRequest | None:
        row = db.execute(
            f"SELECT {REQUEST_COLUMNS} FROM {self._a} "  # noqa: S608
            "WHERE policy_client = %s AND intent_hash = %s",
            (policy_client.lower(), intent_hash.lower()),
        ).fetchone()
        return None if row is None else ApprovalRequest.from_row(row, now)

    def approval_request(
        self, policy_client: str, intent_hash: str, now: int
    ) -> ApprovalRequest | None:
        return self._db.run(
            lambda db: self._request(db, policy_client, intent_hash, now), transaction=False
        )

    def approval_requests(
        self,
        now: int,
        *,
        status: str | None = None,
        policy_client: str | None = None,
        per_client: int = MAX_PENDING_APPROVALS,
    ) -> list[ApprovalRequest]:
        where, args = (
            ("WHERE policy_client = %s ", (policy_client.lower(),)) if policy_client else ("", ())
        )
        rows = self._run(
            f"SELECT {REQUEST_COLUMNS} FROM (SELECT *, ROW_NUMBER() OVER ("  # noqa: S608
            "PARTITION BY policy_client ORDER BY (status IN ('pending', 'approved') AND "
            f"expires_at > %s) DESC, created_at DESC) AS n FROM {self._a} {where}) AS q "
            "WHERE n <= %s ORDER BY created_at DESC",
            (now, *args, per_client),
        )
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
        return self._changed(
            f"UPDATE {self._a} SET status = 'approved', approval = %s, approver = %s, "  # noqa: S608
            "decided_at = %s, expires_at = LEAST(expires_at, %s) WHERE policy_client = %s AND "
            "intent_hash = %s AND status = 'pending' AND expires_at > %s",
            (
                json.dumps(dict(approval)),
                approver.lower(),
                now,
                expires_at,
                policy_client.lower(),
                intent_hash.lower(),
                now,
            ),
        )

    def reject(self, policy_client: str, intent_hash: str, now: int) -> bool:
        return self._changed(
            f"UPDATE {self._a} SET status = 'rejected', decided_at = %s "  # noqa: S608
            "WHERE policy_client = %s AND intent_hash = %s AND status IN ('pending', "
            "'approved') AND used_by IS NULL AND expires_at > %s",
            (now, policy_client.lower(), intent_hash.lower(), now),
        )

    def claim_approval(
        self, policy_client: str, intent_hash: str, task_id: str, now: int
    ) -> dict[str, Any] | None:
        rows = self._run(
            f"UPDATE {self._a} SET used_by = %s WHERE policy_client = %s AND "  # noqa: S608
            "intent_hash = %s AND status = 'approved' AND used_by IS NULL AND expires_at > %s "
            "RETURNING approval",
            (task_id, policy_client.lower(), intent_hash.lower(), now),
        )
        return dict(json.loads(rows[0][0])) if rows else None

    def unclaim_approval(self, policy_client: str, intent_hash: str, task_id: str) -> None:
        self._run(
            f"UPDATE {self._a} SET used_by = NULL WHERE policy_client = %s AND "  # noqa: S608
            "intent_hash = %s AND used_by = %s AND status = 'approved'",
            (policy_client.lower(), intent_hash.lower(), task_id),
        )

    def use_approval(self, policy_client: str, intent_hash: str, task_id: str) -> None:
        self._run(
            f"UPDATE {self._a} SET status = 'used' WHERE policy_client = %s AND "  # noqa: S608
            "intent_hash = %s AND used_by = %s",
            (policy_client.lower(), intent_hash.lower(), task_id),
        )

    # -- attested spend ------------------------------------------------------------------------

    def _totals_query(
        self, key: tuple[str, str], windows: Iterable[int], now: int
    ) -> tuple[list[int], str, tuple[Any, ...]]:
        """(windows, SQL, args): each asset's sum and count per window, in one statement."""
        wanted = sorted(set(windows) | set(DEFAULT_WINDOWS))
        sums = ", ".join(
            "sum(total) FILTER (WHERE second > %s), sum(count) FILTER (WHERE second > %s)"
            for _ in wanted
        )
        args: list[Any] = []
        for seconds in wanted:
            args += [now - seconds, now - seconds]
        sql = (
            f"SELECT asset, {sums} FROM {self._c} WHERE policy_client = %s AND agent = %s "  # noqa: S608
            "AND second > %s GROUP BY asset"
        )
        return wanted, sql, (*args, *key, now - wanted[-1])

    @staticmethod
    def _window_totals(wanted: list[int], rows: list[Any]) -> dict[int, WindowTotals]:
        totals: dict[int, WindowTotals] = {}
        for i, seconds in enumerate(wanted):
            count, spent = 0, {}
            for row in rows:
                n = int(row[2 + 2 * i] or 0)
                if n:
                    count += n
                    spent[row[0]] = int(row[1 + 2 * i] or 0)
            totals[seconds] = WindowTotals(count=count, spent=spent)
        return totals

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
        asset = asset.lower()
        holder = uuid.uuid4().hex

        wanted, totals, args = self._totals_query(key, windows, now)
        lock = "/".join((self.namespace, *key))

        def body(db: Any) -> Reservation:
            # One round trip: the pipeline sends the lock, the totals (a statement that starts,
            # and so takes its snapshot, once the lock is held) and the in-flight row, in one
            # transaction; the row is inserted whatever the totals say (the operators judge).
            with db.pipeline(), db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (lock,))
                read = db.execute(totals, args)
                held = db.execute(
                    self._insert,
                    (task_id, *key, asset, amount, now, now, holder, *key, now, asset, amount),
                )
            # None: a concurrent request for this very task holds the row (and counts it)
            return Reservation(
                key=key,
                entry=_Entry(task_id, now, asset, amount),
                history=self._window_totals(wanted, read.fetchall()),
                holder=holder if held.fetchone() is not None else "",
            )

        return self._db.run(body, transaction=False)

    def totals(
        self, *, policy_client: str, agent: str, windows: Iterable[int], now: int
    ) -> dict[int, WindowTotals]:
        wanted, sql, args = self._totals_query((policy_client.lower(), agent.lower()), windows, now)
        return self._window_totals(wanted, self._run(sql, args))

    def cancel(self, reservation: Reservation) -> None:
        """Also when the database is down the task answers (a denial stays a denial): its
        row then stays counted until the sweep drops it as stale."""
        if not reservation.holder:
            return
        rows = f"DELETE FROM {self._t} WHERE task_id = %s AND status = 'reserved' AND holder = %s"  # noqa: S608
        with contextlib.suppress(StateUnavailable):
            self._run(
                self._uncount.format(rows=rows), (reservation.entry.task_id, reservation.holder)
            )

    def record(
        self,
        reservation: Reservation,
        *,
        expires_at: int,
        result: Mapping[str, Any],
    ) -> None:
        task_id = reservation.entry.task_id
        packed = pack(task_id, result)
        part = packed.shared if packed.shared and packed.shared[0] not in self._parts else None
        update = (
            f"UPDATE {self._t} SET status = 'attested', expires_at = %s, result = %s, "  # noqa: S608
            "holder = NULL WHERE task_id = %s AND status = 'reserved' AND holder = %s RETURNING 1"
        )
        args: tuple[Any, ...] = (expires_at, packed.text, task_id, reservation.holder)
        if part is not None:  # one statement: the part and the record commit together
            update = (
                f"WITH part AS (INSERT INTO {self._parts_table} VALUES (%s, %s) "  # noqa: S608
                f"ON CONFLICT (digest) DO NOTHING) {update}"
            )
            args = (*part, *args)
        if reservation.holder and self._run(update, args):
            if part is not None:
                self._parts.add(part[0])
            return
        found = self._run(f"SELECT status FROM {self._t} WHERE task_id = %s", (task_id,))  # noqa: S608
        if found and found[0][0] != "reserved":
            raise TaskAlreadyRecorded(f"task {task_id} was already recorded")
        raise GatewayStateError(
            f"task {task_id} is no longer in flight (another request holds it, or its "
            "reservation was dropped as stale); it was not recorded, so it must not be allowed"
        )

    def _stored(self, task_id: str) -> tuple[str, str | None] | None:
        rows = self._run(
            f"SELECT t.result, s.body FROM {self._t} t LEFT JOIN {self._parts_table} s "  # noqa: S608
            "ON s.digest = (t.result::json ->> 'k') WHERE t.task_id = %s "
            "AND t.status <> 'reserved'",
            (task_id,),
        )
        return (rows[0][0], rows[0][1]) if rows and rows[0][0] is not None else None

    def _task_rows(
        self, after: int, limit: int, policy_client: str | None
    ) -> list[tuple[Any, ...]]:
        """A record gets its ``seq`` here, when first read, not when written: replicas record
        concurrently and commit in any order, so a number taken while recording could become
        visible after a higher one a reader already passed. Numbering only committed records,
        one reader at a time (an advisory lock held to the commit), keeps every later number
        higher than any a reader has seen; the gateway's hot path is not slowed."""
        t, ns = self._t, self.namespace
        client = " AND t.policy_client = %s" if policy_client is not None else ""
        args = (after,) + ((policy_client,) if policy_client is not None else ()) + (limit,)

        def body(db: Any) -> list[tuple[Any, ...]]:
            self._lock(db, "task_seq")
            db.execute(
                f"UPDATE {t} AS t SET seq = q.n FROM (SELECT task_id, "  # noqa: S608
                f"nextval('\"{ns}\".task_seq') AS n FROM (SELECT task_id FROM {t} "
                "WHERE seq IS NULL AND status <> 'reserved' ORDER BY created_at, task_id "
                f"LIMIT {_NUMBERED}) AS o) AS q WHERE t.task_id = q.task_id"
            )
            return list(
                db.execute(
                    f"SELECT t.seq, t.task_id, t.policy_client, t.agent, t.asset, t.amount, "  # noqa: S608
                    "t.created_at, t.expires_at, t.status, t.result, s.body FROM "
                    f"{t} t LEFT JOIN {self._parts_table} s ON s.digest = (t.result::json ->> "
                    f"'k') WHERE t.seq > %s AND t.result IS NOT NULL{client} "
                    "ORDER BY t.seq LIMIT %s",
                    args,
                ).fetchall()
            )

        return self._db.run(body)

    def task(self, task_id: str) -> TaskRecord | None:
        rows = self._run(
            f"SELECT {_TASK_COLUMNS} FROM {self._t} "  # noqa: S608
            "WHERE task_id = %s AND status <> 'reserved'",
            (task_id,),
        )
        if not rows:
            return None
        r = rows[0]
        return TaskRecord(r[0], r[1], r[2], r[3], int(r[4]), int(r[5]), int(r[6]), r[7])

    def _attested_expiry(self, task_id: str) -> int | None:
        rows = self._run(
            f"SELECT expires_at FROM {self._t} WHERE task_id = %s AND status = 'attested'",  # noqa: S608
            (task_id,),
        )
        return int(rows[0][0]) if rows else None

    def _set_releasing(self, task_id: str) -> bool:
        return self._changed(
            f"UPDATE {self._t} SET status = 'releasing' "  # noqa: S608
            "WHERE task_id = %s AND status = 'attested'",
            (task_id,),
        )

    def _give_back(self, task_id: str, from_status: str) -> bool:
        rows = f"UPDATE {self._t} SET status = 'released' WHERE task_id = %s AND status = %s"  # noqa: S608
        return bool(self._run(self._uncount.format(rows=rows), (task_id, from_status)))

    def commit(self, task_id: str, outcome: str) -> bool:
        return self._changed(
            f"UPDATE {self._t} SET status = 'committed', outcome = %s "  # noqa: S608
            "WHERE task_id = %s AND status IN ('attested', 'releasing')",
            (outcome, task_id),
        )

    def drop_stale(self, now: int) -> int:
        """Stop counting in-flight reservations older than ``STALE_RESERVATION`` (a replica
        died mid-task); returns how many (buckets) changed."""
        rows = f"DELETE FROM {self._t} WHERE status = 'reserved' AND expires_at <= %s"  # noqa: S608
        return len(self._run(self._uncount.format(rows=rows), (now - STALE_RESERVATION,)))

    def _expired(
        self, now: int, statuses: tuple[str, ...], after: tuple[int, str]
    ) -> list[tuple[str, str, int]]:
        self.drop_stale(now)
        rows = self._run(
            f"SELECT task_id, status, expires_at FROM {self._t} WHERE status = ANY(%s) "  # noqa: S608
            "AND expires_at <= %s AND (expires_at, task_id) > (%s, %s) "
            "ORDER BY expires_at, task_id LIMIT %s",
            (list(statuses), now, *after, SWEEP_BATCH),
        )
        return [(task_id, status, expires_at) for task_id, status, expires_at in rows]
