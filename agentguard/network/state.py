"""The gateway's own memory: what it attested, per policy client and agent, in one SQLite file.

Rego is stateless, so cumulative limits (daily caps, rate limits) need someone to remember
what was already allowed. Here the gateway remembers it itself, instead of trusting the agent
host to report its spending: every ``allow`` it hands out is recorded (task id, policy client,
agent = intent ``from``, asset, exact amount, time, expiry) before the attestation leaves the
gateway, and the totals policies see in ``data.wasm.history`` are computed from these records.

Accounting rules:

* An attested amount counts until it is released. ``release`` (the client says it never used
  the attestation) is accepted only while the task is ``attested``; a ``committed`` task
  stays counted. A release only marks the task ``releasing``, and the amount keeps counting
  until the attestation expires: otherwise a host could release an attestation and then still
  use it (a vault accepts it until expiry) and so spend past its cap. At expiry a
  ``UsageCheck`` (the chain, for a vault) decides; without one a ``releasing`` task is given
  back only for a trusted policy client (one whose own key signed its registration: an EOA,
  whose host could bypass the network anyway), and otherwise stays counted (``committed``).
* An attestation that expires without a commit is *not* given back on its own. The gateway
  cannot see whether the client broadcast the transaction or settled the payment before
  expiry; giving the amount back would let a host that never commits (or lies) spend past
  its cap. Only a configured ``UsageCheck`` can release it, and only when it says the
  attestation was not used. With no usage check configured, expired tasks age out of their
  windows.
* Denials record nothing.
* Concurrent requests for one policy client + agent cannot both pass a cap: ``reserve`` reads
  the totals and adds the new amount as in flight in one synchronous step (the gateway runs
  it on one event loop with no ``await`` in between), so every later request already sees it;
  an in-flight reservation is turned into a record on ``allow`` or dropped otherwise. A
  re-registration (new windows) rebuilds the books from the file and carries the in-flight
  entries over, so totals stay exact.
* An ``approval_required`` answer parks the intent as an approval request (``park_approval``:
  pending until its expiry). Only a signed approval (``agentguard.network.approvals``) moves it
  to ``approved``; a ``rejected`` one never moves again. ``claim_approval`` takes an approved
  request for one task in a single statement when the operators' input is built;
  ``unclaim_approval`` gives it back if that task is not allowed, ``use_approval`` marks it
  ``used`` once the task is. ``expired`` is not stored: a pending or approved request past its
  expiry reads as expired.

Totals are kept as running sums per window in memory (mirroring the file, loaded lazily per
agent), so a request costs O(1) amortized however many tasks an agent has.
SQLite runs in WAL mode with ``synchronous=NORMAL``: a record survives a gateway crash or
restart (not a power loss before the next checkpoint).
"""

from __future__ import annotations

import enum
import json
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from agentguard._exceptions import ConfigurationError
from agentguard.network.registration import Registration
from agentguard.policies import Policy

__all__ = [
    "DEFAULT_WINDOWS",
    "PENDING",
    "ApprovalRequest",
    "Pending",
    "PolicyClientRecord",
    "Reservation",
    "State",
    "TaskRecord",
    "UsageCheck",
    "WindowTotals",
    "policy_from_material",
    "policy_from_spec",
    "policy_material",
]

DEFAULT_WINDOWS = (3600, 86400)
MAX_PENDING_APPROVALS = 1000  # live approval requests per policy client

TaskStatus = Literal["attested", "releasing", "committed", "released"]

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
CREATE TABLE IF NOT EXISTS policies (
    code_hash TEXT PRIMARY KEY,
    material TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS registrations (
    policy_client TEXT PRIMARY KEY,
    code_hash TEXT NOT NULL,
    registration TEXT NOT NULL
);
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


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    policy_client: str
    agent: str
    asset: str
    amount: int
    created_at: int
    expires_at: int
    status: TaskStatus


_REQUEST_COLUMNS = (
    "policy_client, intent_hash, intent, spend, reasons, created_at, expires_at, status, "
    "approver, used_by"
)


CLAIM_GRACE = 300
"""How long past its approval's expiry a task's claim on it is honoured: longer than any task
runs and than operators' clocks may lag. A claim a crashed gateway never settled ends then."""
# A request nothing will change any more: used, or past its expiry (and any claim's grace).
_FINISHED = (
    "(status = 'used' OR (expires_at <= ? AND "
    f"(used_by IS NULL OR expires_at + {CLAIM_GRACE} <= ?)))"
)


@dataclass(frozen=True)
class ApprovalRequest:
    """A parked intent waiting for (or past) a human decision. ``status`` reads as of ``now``."""

    policy_client: str
    intent_hash: str
    intent: dict[str, Any]
    spend: dict[str, Any]
    reasons: list[str]
    created_at: int
    expires_at: int
    status: str
    approver: str | None
    used_by: str | None

    @classmethod
    def from_row(cls, row: tuple[Any, ...], now: int) -> ApprovalRequest:
        status, expires_at, used_by = row[7], row[6], row[9]
        if (
            status in ("pending", "approved")
            and expires_at <= now
            and (used_by is None or expires_at + CLAIM_GRACE <= now)
        ):
            status = "expired"
        return cls(
            policy_client=row[0],
            intent_hash=row[1],
            intent=json.loads(row[2]),
            spend=json.loads(row[3]),
            reasons=json.loads(row[4]),
            created_at=row[5],
            expires_at=row[6],
            status=status,
            approver=row[8],
            used_by=row[9],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "policy_client": self.policy_client,
            "intent_hash": self.intent_hash,
            "intent": self.intent,
            "spend": self.spend,
            "reasons": self.reasons,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "status": self.status,
            "approver": self.approver,
        }


class Pending(enum.Enum):
    """The attestation may still be usable where it is enforced: decide at a later sweep."""

    PENDING = "pending"


PENDING = Pending.PENDING


class UsageCheck(Protocol):
    """Says whether an expired, uncommitted attestation was used (True), not used (False),
    cannot tell (None), or cannot tell *yet* (``PENDING``: the chain's clock has not reached
    the expiry, so it could still be used; the task stays as it is until a later sweep).
    Only ``False`` gives the amount back."""

    def was_used(self, task: TaskRecord) -> bool | Pending | None: ...


@dataclass(frozen=True)
class WindowTotals:
    count: int
    spent: Mapping[str, int]


@dataclass(frozen=True)
class PolicyClientRecord:
    """A registered policy client: its owner-signed registration and the policy code."""

    registration: Registration
    policy: Policy


def policy_material(policy: Policy) -> dict[str, Any]:
    """The wire/storage form of a policy: what operators evaluate and hash."""
    return {
        "name": policy.name,
        "entrypoint": policy.entrypoint,
        "modules": dict(policy.modules),
        "params_schema": dict(policy.params_schema),
        "description": policy.description,
    }


def policy_from_material(material: Mapping[str, Any]) -> Policy:
    modules = material.get("modules")
    entrypoint = material.get("entrypoint")
    if not isinstance(entrypoint, str) or not entrypoint:
        raise ValueError("policy.entrypoint must be a non-empty string like 'package.rule'")
    if (
        not isinstance(modules, dict)
        or not modules
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in modules.items())
    ):
        raise ValueError("policy.modules must map file names to Rego source text")
    schema = material.get("params_schema", {})
    if not isinstance(schema, dict):
        raise ValueError("policy.params_schema must be a JSON schema object")
    return Policy(
        name=str(material.get("name", "")),
        entrypoint=entrypoint,
        modules=dict(modules),
        params_schema=schema,
        description=str(material.get("description", "")),
    )


def policy_from_spec(spec: Any, *, allow_paths: bool = False) -> Policy:
    """A bundled policy name, a policy folder (``allow_paths``: config files only), or the
    policy material itself."""
    from agentguard.policies import load

    if isinstance(spec, str):
        if allow_paths and ("/" in spec or spec.startswith(".")):
            return Policy.from_dir(spec)
        try:
            return load(spec)
        except KeyError as exc:
            raise ConfigurationError(str(exc.args[0])) from None
    if isinstance(spec, dict):
        try:
            return policy_from_material(spec)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
    raise ConfigurationError("policy must be a bundled policy name or the policy material object")


# -- running totals per agent ------------------------------------------------------------------


class _Entry:
    __slots__ = ("amount", "asset", "book", "created_at", "live", "seq", "task_id")

    def __init__(self, seq: int, task_id: str, created_at: int, asset: str, amount: int) -> None:
        self.seq = seq
        self.task_id = task_id
        self.created_at = created_at
        self.asset = asset
        self.amount = amount
        self.live = True
        self.book: _Book | None = None  # the one book whose sums hold this entry


class _Window:
    __slots__ = ("count", "seconds", "spent", "start")

    def __init__(self, seconds: int, start: int) -> None:
        self.seconds = seconds
        self.start = start  # seq of the oldest entry possibly inside the window
        self.count = 0
        self.spent: dict[str, int] = {}

    def add(self, entry: _Entry) -> None:
        self.count += 1
        self.spent[entry.asset] = self.spent.get(entry.asset, 0) + entry.amount

    def remove(self, entry: _Entry) -> None:
        self.count -= 1
        left = self.spent[entry.asset] - entry.amount
        if left:
            self.spent[entry.asset] = left
        else:
            del self.spent[entry.asset]


class _Book:
    """One agent's live entries (oldest first) and a running sum per window."""

    def __init__(self, windows: Iterable[int]) -> None:
        self.entries: deque[_Entry] = deque()
        self.base = 0  # seq of entries[0]
        self.next_seq = 0
        self.windows = {w: _Window(w, 0) for w in sorted(set(windows))}
        self.last_time = 0

    @property
    def horizon(self) -> int:
        return max(self.windows)

    def add(self, task_id: str, created_at: int, asset: str, amount: int) -> _Entry:
        return self.adopt(_Entry(0, task_id, created_at, asset, amount))

    def adopt(self, entry: _Entry) -> _Entry:
        """Append ``entry`` as the newest (a new one, or an in-flight one from an old book)."""
        entry.created_at = max(entry.created_at, self.last_time)  # clocks may step back
        self.last_time = entry.created_at
        entry.seq = self.next_seq
        entry.book = self
        self.next_seq += 1
        self.entries.append(entry)
        for window in self.windows.values():
            window.add(entry)
        return entry

    def remove(self, entry: _Entry) -> None:
        if not entry.live or entry.book is not self:
            return
        entry.live = False
        for window in self.windows.values():
            if entry.seq >= window.start:
                window.remove(entry)

    def totals(self, now: int) -> dict[int, WindowTotals]:
        entries, base = self.entries, self.base
        for window in self.windows.values():
            cutoff = now - window.seconds
            while window.start < self.next_seq:
                entry = entries[window.start - base]
                if entry.created_at > cutoff:
                    break
                if entry.live:
                    window.remove(entry)
                window.start += 1
        oldest = min(w.start for w in self.windows.values())
        while self.base < oldest:
            entries.popleft()
            self.base += 1
        return {
            w.seconds: WindowTotals(count=w.count, spent=dict(w.spent))
            for w in self.windows.values()
        }


@dataclass
class Reservation:
    """An amount counted as in flight while the operators evaluate."""

    key: tuple[str, str]
    entry: _Entry
    history: dict[int, WindowTotals]


# -- the state file ----------------------------------------------------------------------------


class State:
    """Policy clients, approvals and attested spend, persisted in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._books: dict[tuple[str, str], _Book] = {}
        self._stale: set[tuple[str, str]] = set()  # books to rebuild (re-registered client)
        self._live: dict[str, _Entry] = {}  # recorded entries by task id

    def close(self) -> None:
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
        # Windows may have changed with the params: rebuild this client's books on next use,
        # carrying the amounts still in flight over (see ``_book``).
        self._stale.update(k for k in self._books if k[0] == registration.policy_client_hex)

    def policy_clients(self) -> list[PolicyClientRecord]:
        rows = self._db.execute(
            "SELECT r.registration, p.material "
            "FROM registrations r JOIN policies p ON p.code_hash = r.code_hash"
        ).fetchall()
        return [
            PolicyClientRecord(
                registration=Registration.from_json(json.loads(row[0])),
                policy=policy_from_material(json.loads(row[1])),
            )
            for row in rows
        ]

    # -- approvals -----------------------------------------------------------------------------

    def park_approval(
        self,
        *,
        policy_client: str,
        intent_hash: str,
        intent: Mapping[str, Any],
        spend: Mapping[str, Any],
        reasons: list[str],
        now: int,
        ttl: int,
        max_pending: int = MAX_PENDING_APPROVALS,
    ) -> ApprovalRequest | None:
        """Park an intent the policy wants a human for. A live request (pending, approved, or
        rejected and not yet expired) stays as it is; a used or expired one is replaced by a
        new pending request (the same action asked for again needs a new decision). ``None``:
        the client already has ``max_pending`` live requests (an agent asking for approval of
        endless variations must not flood the file or bury the real ones); nothing parked."""
        client, hashed = policy_client.lower(), intent_hash.lower()
        held = self.approval_request(client, hashed, now)
        if held is not None and (
            held.status in ("pending", "approved")
            or (held.status == "rejected" and held.expires_at > now)
        ):
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
                (
                    client,
                    hashed,
                    json.dumps(dict(intent)),
                    json.dumps(dict(spend)),
                    json.dumps(reasons[:32]),
                    now,
                    now + ttl,
                ),
            )
            # Finished requests (expired, used) beyond the newest ``max_pending`` go: an agent
            # parking new variations as old ones expire must not grow the file for ever.
            self._db.execute(
                f"DELETE FROM approval_requests WHERE policy_client = ? AND {_FINISHED} AND "  # noqa: S608
                "rowid NOT IN (SELECT rowid FROM approval_requests WHERE policy_client = ? AND "
                f"{_FINISHED} ORDER BY created_at DESC LIMIT ?)",
                (client, now, now, client, now, now, max_pending),
            )
        parked = self.approval_request(client, hashed, now)
        assert parked is not None
        return parked

    def approval_request(
        self, policy_client: str, intent_hash: str, now: int
    ) -> ApprovalRequest | None:
        row = self._db.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM approval_requests "  # noqa: S608
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
        """Newest first; ``status`` filters on the status as it reads now. Each client's live
        requests come first and at most ``per_client`` of each are read, so no client's
        requests (at most ``MAX_PENDING_APPROVALS`` live) push another's off the list."""
        where, args = (
            ("WHERE policy_client = ? ", (policy_client.lower(),)) if policy_client else ("", ())
        )
        rows = self._db.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM (SELECT *, ROW_NUMBER() OVER ("  # noqa: S608
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
        """Only a pending, unexpired request becomes approved (never a rejected one)."""
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
        """A pending request, or an approved one no task holds, becomes rejected for good."""
        return bool(
            self._db.execute(
                "UPDATE approval_requests SET status = 'rejected', decided_at = ? "
                "WHERE policy_client = ? AND intent_hash = ? AND status IN ('pending', "
                "'approved') AND used_by IS NULL AND expires_at > ?",
                (now, policy_client.lower(), intent_hash.lower(), now),
            ).rowcount
        )

    def approved(self, policy_client: str, intent_hash: str, now: int) -> bool:
        """Read only (``newt_simulateTask``); a task must ``claim_approval`` instead."""
        held = self.approval_request(policy_client, intent_hash, now)
        return held is not None and held.status == "approved" and held.used_by is None

    def claim_approval(
        self, policy_client: str, intent_hash: str, task_id: str, now: int
    ) -> dict[str, Any] | None:
        """Take the signed approval for this intent for ``task_id`` in one statement: of
        concurrent tasks for one approved intent, exactly one gets it."""
        claimed = self._db.execute(
            "UPDATE approval_requests SET used_by = ? WHERE policy_client = ? AND "
            "intent_hash = ? AND status = 'approved' AND used_by IS NULL AND expires_at > ?",
            (task_id, policy_client.lower(), intent_hash.lower(), now),
        ).rowcount
        if not claimed:
            return None
        row = self._db.execute(
            "SELECT approval FROM approval_requests WHERE policy_client = ? AND intent_hash = ?",
            (policy_client.lower(), intent_hash.lower()),
        ).fetchone()
        return dict(json.loads(row[0]))

    def unclaim_approval(self, policy_client: str, intent_hash: str, task_id: str) -> None:
        """The task that claimed the approval was not allowed: the approval stands."""
        self._db.execute(
            "UPDATE approval_requests SET used_by = NULL WHERE policy_client = ? AND "
            "intent_hash = ? AND used_by = ? AND status = 'approved'",
            (policy_client.lower(), intent_hash.lower(), task_id),
        )

    def use_approval(self, policy_client: str, intent_hash: str, task_id: str) -> None:
        """The task that claimed the approval was allowed: it is spent."""
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
            in_flight = [e for e in book.entries if e.live and e.task_id not in self._live]
            self._drop_book(key)
        self._stale.discard(key)
        book = _Book(wanted)
        rows = self._db.execute(
            "SELECT task_id, created_at, asset, amount FROM tasks "
            "WHERE policy_client = ? AND agent = ? AND status != 'released' AND created_at > ? "
            "ORDER BY created_at, rowid",
            (key[0], key[1], now - book.horizon),
        ).fetchall()
        for task_id, created_at, asset, amount in rows:
            self._live[task_id] = book.add(task_id, created_at, asset, int(amount))
        for entry in in_flight:
            book.adopt(entry)
        self._books[key] = book
        return book

    def _drop_book(self, key: tuple[str, str]) -> None:
        book = self._books.pop(key)
        for entry in book.entries:
            if self._live.get(entry.task_id) is entry:
                del self._live[entry.task_id]

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
        """Read the totals (without this task) and count this amount as in flight. Synchronous."""
        key = (policy_client.lower(), agent.lower())
        book = self._book(key, windows, now)
        history = book.totals(now)
        entry = book.add(task_id, now, asset.lower(), amount)
        return Reservation(key=key, entry=entry, history=history)

    def totals(
        self, *, policy_client: str, agent: str, windows: Iterable[int], now: int
    ) -> dict[int, WindowTotals]:
        """The totals ``reserve`` would report, without reserving anything."""
        return self._book((policy_client.lower(), agent.lower()), windows, now).totals(now)

    def cancel(self, reservation: Reservation) -> None:
        """The task was not allowed: it no longer counts."""
        entry = reservation.entry
        if entry.book is not None:
            entry.book.remove(entry)

    def record(
        self,
        reservation: Reservation,
        *,
        expires_at: int,
        result: Mapping[str, Any],
    ) -> None:
        """Persist an ``allow`` before it is returned."""
        entry = reservation.entry
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO tasks (task_id, policy_client, agent, asset, amount, created_at, "
                "expires_at, status, result) VALUES (?, ?, ?, ?, ?, ?, ?, 'attested', ?)",
                (
                    entry.task_id,
                    reservation.key[0],
                    reservation.key[1],
                    entry.asset,
                    str(entry.amount),
                    entry.created_at,
                    expires_at,
                    json.dumps(result, separators=(",", ":")),
                ),
            )
        if entry.book is not None and self._books.get(reservation.key) is entry.book:
            self._live[entry.task_id] = entry
        else:  # its book was replaced meanwhile: rebuild from the file, which now has it
            self._stale.add(reservation.key)

    def stored_result(self, task_id: str) -> dict[str, Any] | None:
        """The result returned for an already recorded task (idempotent retries after restart)."""
        row = self._db.execute("SELECT result FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return None if row is None or row[0] is None else dict(json.loads(row[0]))

    def task(self, task_id: str) -> TaskRecord | None:
        row = self._db.execute(
            "SELECT task_id, policy_client, agent, asset, amount, created_at, expires_at, status "
            "FROM tasks WHERE task_id = ?",
            (task_id,),
        ).fetchone()
        if row is None:
            return None
        return TaskRecord(row[0], row[1], row[2], row[3], int(row[4]), row[5], row[6], row[7])

    def release(self, task_id: str, now: int, *, trusted: bool) -> TaskStatus | None:
        """The client says it never used this attestation. ``released`` (given back now) only
        for an expired attestation of a ``trusted`` client (see ``sweep_expired``); otherwise
        ``releasing``, settled by the sweep at expiry. ``None`` unless the task was
        ``attested``."""
        row = self._db.execute(
            "SELECT expires_at FROM tasks WHERE task_id = ? AND status = 'attested'", (task_id,)
        ).fetchone()
        if row is None:
            return None
        if row[0] <= now and trusted:
            return "released" if self._give_back(task_id, "attested") else None
        self._db.execute(
            "UPDATE tasks SET status = 'releasing' WHERE task_id = ? AND status = 'attested'",
            (task_id,),
        )
        return "releasing"

    def _give_back(self, task_id: str, from_status: str) -> bool:
        changed = self._db.execute(
            "UPDATE tasks SET status = 'released' WHERE task_id = ? AND status = ?",
            (task_id, from_status),
        ).rowcount
        if not changed:
            return False
        entry = self._live.pop(task_id, None)
        if entry is not None and entry.book is not None:
            entry.book.remove(entry)
        return True

    def commit(self, task_id: str, outcome: str) -> bool:
        """Mark an attested task as used; its amount stays counted. False unless ``attested``."""
        return bool(
            self._db.execute(
                "UPDATE tasks SET status = 'committed', outcome = ? "
                "WHERE task_id = ? AND status IN ('attested', 'releasing')",
                (outcome, task_id),
            ).rowcount
        )

    def sweep_expired(
        self,
        now: int,
        usage_check: UsageCheck | None,
        trusted: Callable[[str], bool],
    ) -> int:
        """Settle expired tasks; returns how many were given back.

        ``usage_check`` decides when it can tell (used: committed, unused: given back).
        Otherwise a ``releasing`` task (the client said unused) is given back only if
        ``trusted(policy_client)``: the client cannot have used it behind the network's back
        in a way the network would not see, or a usage check would have seen it. Else it
        stays counted (``committed``): a contract client (a vault) may have executed it
        before expiry. ``attested`` tasks (the client never said) stay as they are.
        """
        statuses = "('attested', 'releasing')" if usage_check is not None else "('releasing')"
        rows = self._db.execute(
            f"SELECT task_id, status FROM tasks WHERE status IN {statuses} "  # noqa: S608
            "AND expires_at <= ? ORDER BY expires_at LIMIT 1000",
            (now,),
        ).fetchall()
        released = 0
        for task_id, status in rows:
            task = self.task(task_id)
            if task is None:
                continue
            used = usage_check.was_used(task) if usage_check is not None else None
            if used is PENDING:  # the rest expire later still: all pending too
                break
            if used is True:
                self.commit(task_id, "used (usage check)")
            elif used is False:
                released += self._give_back(task_id, status)
            elif status == "releasing":
                if trusted(task.policy_client):
                    released += self._give_back(task_id, status)
                else:
                    self.commit(task_id, "released, but its use cannot be ruled out: counted")
        return released
