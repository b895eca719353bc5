"""Watch mode: follow new tasks as they are recorded, check each, act on a proven discrepancy.

One batch at a time: read the chain's vault events up to the latest block (the independent
record of what landed), read the next recorded tasks after the cursor, check each (the
decision the policy gives on its recorded inputs, and its history against the provable
bound, see ``_history``), write a record per proven discrepancy, pause the affected vaults
through the guardian key, and only then save the cursor (atomically: write, fsync, rename).
A crash therefore re-checks at most the one batch in progress, and never skips a task: a
record written again is the same file, a vault already paused is left as it is.

A task the watch cannot judge now (``ChallengeRetry``: the policy's probe ran out of time or
no probe child could start, which a loaded machine can do to a good policy) is deferred: the
cursor stays before it, and the watch goes on judging later tasks (a later fraud is still
reported at once, whatever an earlier registration's policy does to the probe). Tries are
counted per probed material and params (``probe_key``; per code, another registration's params
that hang the probe exhausted a code a fraud was under); a deferred task is tried again after a
pause that doubles from ``retry_delay`` (by default 60 s: the probe holds a timeout that long,
so each try probes again) up to ``MAX_RETRY_DELAY``, its key's other tasks waiting with it
(uncounted). After ``retries`` tries in a row the task is passed with a warning, as a policy
that crashes the engine is, and so is, at once, a later task of that key not judged either
during ``EXHAUSTED_FOR`` (a warning each): a policy that times out on every try would otherwise
hold the cursor for good; after it the key's count starts over (load must not exempt a policy's
frauds for good). Past ``MAX_DEFERRED`` deferred tasks the watch reads no further (warned) and
rests until the next try. The deferred
tasks, the last task read past them (``ahead``) and the tries per key live in the cursor file,
so a restarted watch (or one run in short slices) resumes the count instead of starting over,
and a task judged while an earlier one was deferred is never judged (nor reported) again.

Bounded: ``max_tasks`` checked in this run, ``until`` (unix seconds: no pause runs past it)
and ``once`` (stop when caught up) end it; ``interval`` is the pause between polls once caught
up.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3 import Web3

from agentguard._attestation import Attestation
from agentguard._exceptions import (
    AgentGuardError,
    ChallengeError,
    ChallengeRetry,
    ConfigurationError,
    NodeUnavailable,
)
from agentguard._intent import TransactionIntent
from agentguard._logging import get_logger
from agentguard.challenge._chain import (
    ChainFact,
    Executed,
    authorization_used,
    chain_head,
    executed_events,
    pause_vaults,
    vault_operators,
)
from agentguard.challenge._evaluate import most_permissive, probes_passed
from agentguard.challenge._evidence import TaskEvidence, evidence_from_result
from agentguard.challenge._history import (
    Candidate,
    HistoryFinding,
    HistoryIndex,
    Quorum,
    check_group,
    check_task,
    history_record,
    windows_of,
)
from agentguard.challenge._record import write_record
from agentguard.challenge._report import Report
from agentguard.challenge._run import check_evidence
from agentguard.challenge._sources import GatewaySource, Materials
from agentguard.network.gateway._audit import MAX_TASKS_PER_CALL
from agentguard.network.registration import MAX_EXPIRE_AFTER, Registration
from agentguard.network.state import PolicyClientRecord, StoredTask
from agentguard.policies import Policy
from agentguard.policies._engine import PolicyEngine

__all__ = ["Cursor", "GatewayTasks", "TaskSource", "Watcher"]

log = get_logger("agentguard.challenge")

MAX_BATCH = 1000
DEFAULT_HORIZON = 86400  # the least the watch keeps: the longest window the gateway state tracks
MAX_GROUP = 64  # same-second tasks evaluated together (bounds the work of one burst)
MAX_RETRY_DELAY = 300.0  # seconds between two tries of a task not judged, at most
MAX_TRIED = 1024  # probe keys whose tries are counted (a source can name new ones)
MAX_DEFERRED = 1024  # tasks deferred at once; past it the watch reads no further (as it did)
# how long a key whose tries ran out has its tasks passed at once (with a warning each): then
# its count starts over, so load (or an attacker loading the box) cannot exempt a policy for good
EXHAUSTED_FOR = 12 * MAX_RETRY_DELAY


class TaskSource(Protocol):
    """Where recorded tasks come from: a gateway's ``State`` or its auditor RPC."""

    def tasks(
        self, *, after: int = 0, limit: int = 1000, policy_client: str | None = None
    ) -> list[StoredTask]: ...

    def policy_version(self, policy_id: str) -> PolicyClientRecord | None: ...


@dataclass
class Cursor:
    """Where a watch run stands: the last task checked (``seq``), the first record still
    inside the longest window (``horizon``: re-read on resume to rebuild the totals, never
    re-checked), and per vault the last block whose events were judged."""

    seq: int = 0
    horizon: int = 0
    blocks: dict[str, int] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)  # vaults to pause (the node failed)
    chain_from: dict[str, int] = field(default_factory=dict)  # oldest block still needed
    ahead: int = 0  # the last task read: each after ``seq`` up to it is judged or deferred
    deferred: dict[int, str] = field(default_factory=dict)  # seq -> its probe key (hex)
    # probe key (hex) -> (tries in a row it was not judged, when to try again: unix seconds)
    keys: dict[str, tuple[int, float]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Cursor:
        """The saved cursor; a file of the wrong types, or whose parts disagree (a deferred
        task not after ``seq`` or past the last task read), is refused: read as it is, its
        next save would move the cursor past tasks never judged."""
        if not path.exists():
            return cls()
        try:
            raw = json.loads(path.read_text())
            seq = _count(raw["seq"])
            cursor = cls(
                seq=seq,
                horizon=_count(raw.get("horizon", 0)),
                blocks={str(k): _block(v) for k, v in _dict(raw.get("blocks", {})).items()},
                pending=[_text(v) for v in _list(raw.get("pending", []))],
                chain_from={str(k): _block(v) for k, v in _dict(raw.get("chain_from", {})).items()},
                ahead=_count(raw.get("ahead", seq)),
                deferred={_seq(k): _text(v) for k, v in _dict(raw.get("deferred", {})).items()},
                keys={str(k): _tries(v) for k, v in _dict(raw.get("keys", {})).items()},
            )
            if not cursor.horizon <= cursor.ahead or not cursor.seq <= cursor.ahead:
                raise ValueError("seq or horizon past the last task read")
            if cursor.deferred and (
                min(cursor.deferred) != cursor.seq + 1 or max(cursor.deferred) > cursor.ahead
            ):
                raise ValueError("a deferred task outside (seq, ahead]")
            return cursor
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ConfigurationError(
                f"the cursor file {path} is not readable ({type(exc).__name__}); fix or delete "
                "it (deleting re-checks every recorded task)"
            ) from None

    def save(self, path: Path) -> None:
        """Atomically: a crash leaves the old cursor or the new one, never half of one."""
        text = json.dumps(
            {
                "seq": self.seq,
                "horizon": self.horizon,
                "blocks": self.blocks,
                "pending": self.pending,
                "chain_from": self.chain_from,
                "ahead": self.ahead,
                "deferred": {str(k): v for k, v in sorted(self.deferred.items())},
                "keys": {k: list(v) for k, v in self.keys.items()},
            }
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class GatewayTasks(GatewaySource):
    """A gateway's auditor methods as a ``TaskSource`` (the records as the gateway lists
    them, status included: what it omits here is what the chain scan catches)."""

    def tasks(
        self, *, after: int = 0, limit: int = 200, policy_client: str | None = None
    ) -> list[StoredTask]:
        """Up to ``limit`` tasks, in as many pages as the gateway's answer size needs (fewer
        only when there are no more: the watch reads "fewer" as "caught up")."""
        found: list[StoredTask] = []
        while len(found) < limit:
            want = min(limit - len(found), MAX_TASKS_PER_CALL)
            page = self._page(found[-1].seq if found else after, want, policy_client)
            found.extend(page)
            if len(page) < want:
                break
        return found

    def _page(self, after: int, limit: int, policy_client: str | None) -> list[StoredTask]:
        params: dict[str, Any] = {"after": after, "limit": limit}
        if policy_client is not None:
            params["policy_client"] = policy_client
        answer = self._call("agentguard_tasks", params)
        rows = answer.get("tasks") if isinstance(answer, dict) else None
        if not isinstance(rows, list) or len(rows) > limit:
            raise ChallengeError("the gateway's agentguard_tasks answer has no task list")
        found: list[StoredTask] = []
        for row in rows:
            try:
                task = StoredTask(
                    task_id=str(row["task_id"]).lower(),
                    policy_client=str(row["policy_client"]).lower(),
                    agent=str(row["agent"]).lower(),
                    asset=str(row["asset"]).lower(),
                    amount=int(str(row["amount"])),
                    created_at=_strict_int(row["created_at"]),
                    expires_at=_strict_int(row["expires_at"]),
                    status=row["status"],
                    seq=_strict_int(row["seq"]),
                    result=dict(row["result"]),
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ChallengeError(f"the gateway listed a malformed task ({exc})") from None
            if task.seq <= (found[-1].seq if found else after):
                raise ChallengeError("the gateway's task list is not ordered by its cursor")
            found.append(task)
        return found

    def policy_version(self, policy_id: str) -> PolicyClientRecord | None:
        found = self.registration(policy_id)
        return None if found is None else PolicyClientRecord(*found)


def _count(value: Any) -> int:
    if _strict_int(value) < 0:
        raise ValueError("a negative count")
    return int(value)


def _seq(key: str) -> int:
    """A task seq as written by ``save`` (decimal digits; not ``"6_0"``, ``" 6"``, ``"+6"``)."""
    if not (key.isascii() and key.isdigit()):
        raise ValueError("not a task seq")
    return int(key)


def _block(value: Any) -> int:
    if _strict_int(value) < -1:  # -1: no block judged yet
        raise ValueError("a block number below -1")
    return int(value)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def _dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError("not an object")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError("not a list")
    return value


def _tries(value: Any) -> tuple[int, float]:
    """A key's ``[tries, when to try again]``."""
    tries, due = _list(value)  # ValueError unless exactly two
    if isinstance(due, bool) or not isinstance(due, (int, float)) or not math.isfinite(due):
        raise ValueError("not a finite time")
    return _count(tries), float(due)


def _strict_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{str(value)[:40]!r} is not an integer")
    return value


@dataclass
class _Client:
    registration: Registration
    policy: Policy


class Watcher:
    """Checks recorded tasks from ``source`` as they come (see the module docstring)."""

    def __init__(
        self,
        source: TaskSource,
        *,
        cursor_file: str | Path,
        out_dir: str | Path,
        quorum: Quorum | None = None,
        batch: int = 200,
        max_tasks: int | None = None,
        interval: float = 2.0,
        until: float | None = None,
        once: bool = False,
        w3: Web3 | None = None,
        vaults: Sequence[str] = (),
        guardian: LocalAccount | None = None,
        pause_all: bool = False,
        engine: PolicyEngine | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        retries: int = 6,
        retry_delay: float = 60.0,
    ) -> None:
        if not 1 <= batch <= MAX_BATCH:
            raise ConfigurationError(f"batch must be in 1..{MAX_BATCH}")
        if max_tasks is not None and max_tasks < 0:
            raise ConfigurationError("max_tasks must be 0 or more")
        if interval < 0:
            raise ConfigurationError("interval must be 0 or more seconds")
        if retries < 0 or not 0 < retry_delay <= MAX_RETRY_DELAY:
            raise ConfigurationError(
                f"retries must be 0 or more, retry_delay in (0, {MAX_RETRY_DELAY:g}] seconds"
            )
        if (vaults or guardian is not None) and w3 is None:
            raise ConfigurationError("watching vaults (and pausing them) needs a chain RPC")
        self.source = source
        self.cursor_file = Path(cursor_file)
        self.out_dir = Path(out_dir)
        self.quorum = quorum
        self.batch = batch
        self.max_tasks = max_tasks
        self.interval = interval
        self.until = until
        self.once = once
        self.w3 = w3
        self.vaults = [to_checksum_address(v) for v in vaults]
        self.guardian = guardian
        self.pause_all = pause_all
        self._materials = Materials(self)
        self.engine = engine
        self.clock = clock
        self.sleep = sleep
        self.retries = retries
        self.retry_delay = retry_delay
        self.index = HistoryIndex()
        self.report = Report()
        self._clients: dict[str, _Client | None] = {}
        self._quorums: dict[str, Quorum | None] = {}
        self._seqs: dict[str, int] = {}  # task id -> record seq (inside the horizon)
        self._pending: set[str] = set()  # vaults to pause, kept until paused or refused
        self._unpaid: set[str] = set()  # vault tasks the token shows no payment for
        self._recent: dict[str, TaskEvidence] = {}  # the policy data of the newest second
        self._recorded: dict[str, int] = {}  # task ids read from the records -> created_at
        self._recorded_since: int | None = None  # the oldest record read in this run
        self._horizon = DEFAULT_HORIZON
        self._newest = 0
        self._full = False  # the deferred slots were full at the last step

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> Report:
        cursor = Cursor.load(self.cursor_file)
        self._resume(cursor)
        while True:
            if self.until is not None and self.clock() >= self.until:
                break
            left = None if self.max_tasks is None else self.max_tasks - self.report.checked
            if left is not None and left <= 0:
                break
            done = self.step(cursor, limit=self.batch if left is None else min(self.batch, left))
            if not done and not self._full:
                continue
            if cursor.deferred:  # until the next deferred try; new tasks still every interval
                due = min(cursor.keys.get(k, (0, 0.0))[1] for k in cursor.deferred.values())
                wait = max(0.0, due - self.clock())
                self._rest(wait if self.once else min(wait, self.interval))
            elif self.once:
                break
            else:
                self._rest(self.interval)
        return self.report

    def _rest(self, seconds: float) -> None:
        """Sleep ``seconds``, but never past ``until`` (a retry pause is up to 300 s)."""
        if self.until is not None:
            seconds = min(seconds, max(0.0, self.until - self.clock()))
        self.sleep(seconds)

    def _resume(self, cursor: Cursor) -> None:
        """Rebuild the totals of the windows still open from records already checked."""
        self._pending = {to_checksum_address(v) for v in cursor.pending}
        latest = self.clock() + MAX_RETRY_DELAY  # a clock set back must not hold a task longer
        cursor.keys = {k: (n, min(due, latest)) for k, (n, due) in cursor.keys.items()}
        if cursor.horizon == 0:
            self._recorded_since = -1  # every record is read in this run
        after = cursor.horizon
        while after < cursor.ahead:  # the tasks judged past a deferred one count too
            tasks = self.source.tasks(after=after, limit=MAX_BATCH)
            tasks = [t for t in tasks if t.seq <= cursor.ahead]
            if not tasks:
                break
            for task in tasks:
                self._index(task, tasks[-1].seq)
            after = tasks[-1].seq
        w3 = self.w3
        for vault in self.vaults if w3 is not None else ():
            start, end = cursor.chain_from.get(vault), cursor.blocks.get(vault)
            if w3 is not None and start is not None and end is not None and start <= end:
                for executed in executed_events(w3, vault, from_block=start, to_block=end):
                    self._adopt(executed)  # facts only: these blocks were judged before

    def step(self, cursor: Cursor, *, limit: int) -> bool:
        """One batch; True when it found the records caught up (nothing more to read now)."""
        head = self._chain_head()
        executions = self._scan(cursor, head)
        self._retry_due(cursor)
        full = len(cursor.deferred) >= MAX_DEFERRED
        tasks = [] if full else self.source.tasks(after=cursor.ahead, limit=limit)
        seen = tasks[-1].seq if tasks else cursor.ahead
        for task in tasks:
            self._index(task, seen)
        for task in tasks:
            if len(cursor.deferred) >= MAX_DEFERRED:
                full = True  # the cursor holds before the first deferred task, as it did
                break
            self._judge_task(cursor, task, None)
            cursor.ahead = task.seq
        if full and not self._full:
            self.report.warn(
                f"seq {cursor.ahead}",
                f"{len(cursor.deferred)} tasks deferred, the most it holds: no task past this one "
                "is read until a deferred one is judged or passed",
            )
        self._full = full  # then the loop rests until the next deferred try, not spins
        caught_up = not full and len(tasks) < limit
        if caught_up and head is not None:
            self._judge(executions)
            for vault in self.vaults:
                cursor.blocks[vault] = head
        cursor.seq = min(cursor.deferred) - 1 if cursor.deferred else cursor.ahead
        self._prune(cursor)
        self._pause_pending(cursor)
        cursor.save(self.cursor_file)
        return caught_up

    def _retry_due(self, cursor: Cursor) -> None:
        """Try again each deferred task whose key's pause is over, oldest first; once one of a
        key is still not judged, its key's others wait for the next try (uncounted)."""
        failed: set[str] = set()
        for seq, key in sorted(cursor.deferred.items()):
            tries, due = cursor.keys.get(key, (0, 0.0))
            exhausted = tries > self.retries  # passed at once: tried now
            if not exhausted and (key in failed or due > self.clock()):
                continue
            found = self.source.tasks(after=seq - 1, limit=1)
            if not found or found[0].seq != seq:  # the source no longer lists it
                del cursor.deferred[seq]
                self.report.warn(
                    f"seq {seq}",
                    "a deferred task the source no longer lists: never judged (re-check the "
                    "records with `agentguard challenge run`)",
                )
                continue
            self._index(found[0], cursor.ahead)
            if not self._judge_task(cursor, found[0], key):
                failed.add(key)

    def _judge_task(self, cursor: Cursor, task: StoredTask, key: str | None) -> bool:
        """Check ``task``; False if it is deferred (``_defer``). ``key``: the probe key it was
        deferred under, if it was. Judged at last, its key's count starts over, and so does
        that of every key probed fine meanwhile: the machine judges it again, so an exhaustion
        the load caused must not pass that key's next fraud on one transient timeout."""
        try:
            with probes_passed() as passed:
                self._check(task)
        except ChallengeRetry as exc:
            if self._defer(cursor, task, exc):
                return False
        else:
            for judged in passed if key is None else {key, *passed}:
                cursor.keys.pop(judged, None)
        cursor.deferred.pop(task.seq, None)
        self.report.checked += 1
        return True

    def _defer(self, cursor: Cursor, task: StoredTask, exc: ChallengeRetry) -> bool:
        """Whether ``task``, not judged now, is deferred; after ``retries`` tries of its key it
        is passed, with a warning (see the module docstring). A task of a key already waiting
        waits with it, without a try counted."""
        key, now = exc.code.hex(), self.clock()
        tries, due = cursor.keys.pop(key, (0, 0.0))
        if tries > self.retries and now >= due:
            tries = 0  # the key's exhaustion is over: counted afresh (load must not pass for good)
        if tries <= self.retries and now < due:
            cursor.keys[key] = (tries, due)
            cursor.deferred[task.seq] = key
            return True
        tries += 1
        delay = min(self.retry_delay * 2 ** (tries - 1), MAX_RETRY_DELAY)
        if tries > self.retries:  # passed at once until then (not slid on by a later pass)
            delay = EXHAUSTED_FOR if tries == self.retries + 1 else due - now
        cursor.keys[key] = (tries, now + delay)  # the newest last: the oldest is forgotten first
        if len(cursor.keys) > MAX_TRIED:
            del cursor.keys[next(iter(cursor.keys))]
        if tries > self.retries:
            self.report.warn(
                task.task_id,
                f"not judged: its policy's probe failed {tries} times in a row ({exc.message});"
                " passed without a verdict: re-check it with `agentguard challenge run` when "
                "the machine is less loaded",
            )
            log.error("task passed without a verdict", task_id=task.task_id, tries=tries)
            return False
        cursor.deferred[task.seq] = key
        self.report.retried += 1
        log.warning(
            "task not judged now: deferred, the cursor stays before it",
            task_id=task.task_id,
            reason=exc.message,
            tries=tries,
            retry_in=delay,
        )
        return True

    # -- records ---------------------------------------------------------------------------

    def registration(self, policy_id: str) -> tuple[Registration, Policy] | None:
        """The configuration behind ``policy_id`` (for chal's ``Materials``)."""
        client = self._client(policy_id)
        return None if client is None else (client.registration, client.policy)

    def _client(self, policy_id: str) -> _Client | None:
        if policy_id not in self._clients:
            record = self.source.policy_version(policy_id)
            self._clients[policy_id] = (
                None if record is None else _Client(record.registration, record.policy)
            )
        return self._clients[policy_id]

    def _quorum(self, policy_client: str) -> Quorum | None:
        """The vault's own operators (onchain) for a watched vault, else the given set."""
        key = policy_client.lower()
        if key not in self._quorums:
            quorum = self.quorum
            if self.w3 is not None and to_checksum_address(key) in self.vaults:
                operators, threshold = vault_operators(self.w3, key)
                quorum = Quorum(operators, threshold, "vault")
            self._quorums[key] = quorum
        return self._quorums[key]

    def _candidate(
        self,
        intent: TransactionIntent,
        attestation: Attestation,
        *,
        status: str | None = None,
        status_seq: int = -1,
        facts: Sequence[ChainFact] = (),
    ) -> Candidate | None:
        """An allowed task the bound may count: a quorum's allow, under a known policy id."""
        quorum = self._quorum(attestation.policy_client)
        client = self._client("0x" + attestation.policy_id.hex())
        if quorum is None or client is None:
            return None
        why_not = quorum.signed(attestation, intent)
        if why_not is not None:
            log.warning("not counted in history", reason=why_not)
            return None
        return Candidate.of(
            intent,
            attestation,
            client.registration,
            status=status,
            status_seq=status_seq,
            facts=facts,
        )

    def _index(self, task: StoredTask, seen: int) -> None:
        try:
            evidence = evidence_from_result(task.result, created_at=task.created_at, source="state")
            intent = TransactionIntent.from_wire(evidence.intent)
            attestation = Attestation.from_json(evidence.attestation)
        except AgentGuardError:
            return  # the decision check reports a record it cannot read
        candidate = self._candidate(intent, attestation, status=task.status, status_seq=seen)
        # the signed time (expiry - lifetime) where there is one: the row's created_at is the
        # source's word, and a far-future one would keep every execution from being judged
        created = task.created_at if candidate is None else candidate.now
        self._recorded[task.task_id.lower()] = created
        if self._recorded_since is None or created < self._recorded_since:
            self._recorded_since = created
        if candidate is not None:
            self.index.add(candidate)
            self._seqs[candidate.task_id] = task.seq
            self._recent[candidate.task_id] = evidence
            self._newest = max(self._newest, candidate.now)
            client = self._client("0x" + attestation.policy_id.hex())
            if client is not None:
                recorded = evidence.wasm.get("history")
                windows = windows_of(
                    client.registration, recorded if isinstance(recorded, Mapping) else {}
                )
                self._horizon = max([self._horizon, *windows])

    def _check(self, task: StoredTask) -> None:
        try:
            evidence = evidence_from_result(task.result, created_at=task.created_at, source="state")
            attestation = Attestation.from_json(evidence.attestation)
        except AgentGuardError as exc:
            self.report.warn(task.task_id, exc.message)
            return
        client = self._client("0x" + attestation.policy_id.hex())
        if client is None:
            self.report.warn(task.task_id, "no registration for its policy id")
            return
        quorum = self._quorum(evidence.policy_client)
        decided = check_evidence(
            evidence,
            self._materials,
            cursor=task.seq,
            operators=None if quorum is None else quorum.operators,
            engine=self.engine,
        )
        unsigned_says_deny = False  # the recorded history or approval refuses a signed allow
        if decided is not None:
            if decided.record is None:
                self.report.warn(task.task_id, decided.why)
                return
            if decided.offline:
                self._proven(
                    task, decided.record, list(decided.wrong_signers), pinned=quorum is not None
                )
                return
            # The recorded history or approval (no operator signs them) gives another decision
            # than the one signed: the gateway may have recorded other data than it handed the
            # operators. That names no operator and pauses nothing; for an allow the history
            # check below decides against what the chain and the signatures prove.
            given = decided.recomputed
            self.report.warn(
                task.task_id,
                f"signed {decided.signed}, but on the recorded history or approval the policy "
                f"gives {given.decision if given else '?'} (tier {given.tier if given else '?'});"
                " neither is signed, so this names no operator (the records may not be what "
                "the operators were handed)",
            )
            unsigned_says_deny = decided.signed == "allow"
        candidate = self.index.get(evidence.policy_client, task.agent, task.task_id)
        if candidate is None:
            return  # not a quorum's allow of the known operators: nothing to bound
        pool = self._landed(
            self.index.tasks(evidence.policy_client, task.agent), candidate.now, task.seq
        )
        try:
            finding = self._prove(evidence, client, candidate, pool, task.seq)
            # a verifier can re-check signatures and chain facts, not the gateway's statuses:
            strict = finding
            if finding.proven:
                stripped = [replace(c, status=None) for c in pool]
                strict = self._prove(evidence, client, candidate, stripped, task.seq)
        except ChallengeError as exc:
            self.report.warn(task.task_id, exc.message)
            return
        if any(t.count for t in finding.check.bound.values()):
            self.report.bounded += 1
        for window in finding.check.over:
            self.report.warn(
                task.task_id,
                f"history over-reported in window {window} s (hurts only the agent; tasks in "
                "flight that were later refused can explain it)",
            )
        if finding.proven:
            record = self._history_record(evidence, client, strict if strict.proven else finding)
            if not strict.proven:
                record["extra"]["rests_on_records"] = True
                self.report.on_records.append(task.task_id)
            self._proven(task, record, [])
        elif unsigned_says_deny and self._wrong_on_provable(evidence, client, candidate, pool):
            self.report.warn(
                task.task_id,
                "the policy refuses this allow on the history its signatures and the chain "
                "prove (approval in its favour): the operators or the gateway's records lied; "
                "the vault is paused",
            )
            self._pause(evidence.policy_client)

    def _wrong_on_provable(
        self, evidence: TaskEvidence, client: _Client, candidate: Candidate, pool: list[Candidate]
    ) -> bool:
        """Whether the policy refuses the task on the provable history alone (signed allows
        still live, chain facts; no status from the records), with approval in its favour:
        then the allow moved funds wrongly, whoever lied (the recorded history is not used:
        it may not be what the operators were handed)."""
        claimed = replace(evidence, wasm=most_permissive(evidence.wasm, client.registration))
        stripped = [replace(c, status=None) for c in pool]
        try:
            found = check_task(
                claimed,
                client.registration,
                client.policy,
                stripped,
                at=candidate.now,
                engine=self.engine,
            )
        except ChallengeError:
            return False
        return found.proven

    def _prove(
        self,
        evidence: TaskEvidence,
        client: _Client,
        candidate: Candidate,
        pool: list[Candidate],
        seq: int,
    ) -> HistoryFinding:
        """The task against the bound of ``pool``; its second's tasks with it if that alone
        proves nothing."""
        finding = check_task(
            evidence,
            client.registration,
            client.policy,
            pool,
            at=candidate.now,
            seq=seq,
            engine=self.engine,
        )
        members = [
            (self._recent[c.task_id], c)
            for c in pool
            if c.now == candidate.now
            and c.task_id != candidate.task_id
            and c.task_id in self._recent
            and c.attestation["policy_id"] == candidate.attestation["policy_id"]
        ]
        if finding.proven or not members:
            return finding
        return check_group(
            evidence,
            client.registration,
            client.policy,
            pool,
            members[:MAX_GROUP],  # any subset of a second's tasks proves the same
            at=candidate.now,
            seq=seq,
            engine=self.engine,
        )

    def _landed(self, pool: list[Candidate], at: int, seq: int) -> list[Candidate]:
        """Earlier payments from a watched vault that nothing else shows still counted: the
        token's nonce record (``AuthorizationUsed(vault, taskId)``) can. Asked once per task
        in a run (an expired attestation pays no more)."""
        if self.w3 is None:
            return pool
        vaults = {v.lower() for v in self.vaults}
        found = []
        for c in pool:
            if (
                c.now < at
                and c.policy_client in vaults
                and c.task_id not in self._unpaid
                and not c.why_counted(at, seq)
            ):
                intent = TransactionIntent.from_wire(c.intent)
                try:
                    fact = authorization_used(self.w3, intent.to, c.policy_client, c.task_id)
                except NodeUnavailable as exc:  # no answer is no proof: counted as unknown
                    self.report.warn(c.task_id, exc.message)
                    fact = None
                if fact is not None and fact.proves_use_of(intent, c.task_id) is None:
                    c = self.index.add(c.with_fact(fact))
                else:
                    self._unpaid.add(c.task_id)
            found.append(c)
        return found

    def _history_record(
        self, evidence: TaskEvidence, client: _Client, finding: HistoryFinding
    ) -> dict[str, Any]:
        quorum = self._quorum(evidence.policy_client)
        assert quorum is not None and finding.recomputed is not None
        return history_record(evidence, client.registration, client.policy, finding, quorum)

    def _proven(
        self,
        task: StoredTask,
        record: Mapping[str, Any],
        signers: list[str],
        *,
        pinned: bool = True,
    ) -> None:
        """Record and report a proven discrepancy; pause only if its signers are pinned (a
        watched vault's onchain operators, or the given set): keys no one pinned may be a
        network the source made up, and pausing on them is a denial of service."""
        kind = str(record.get("kind", "decision"))
        path = write_record(record, self.out_dir)
        if str(path) not in self.report.records:
            self.report.records.append(str(path))
        if kind == "history":
            self.report.lied_about_history(task.task_id)
        else:
            self.report.wrong_signers(task.task_id, signers)
        log.warning("proven discrepancy", task_id=task.task_id, kind=kind, record=str(path))
        if pinned:  # the attestation's client: the listing row's is the source's word
            self._pause(str(record.get("policy_client", "")))
        elif self.guardian is not None:
            self.report.warn(
                task.task_id,
                "its signers are pinned to no operator set (give --operator and --threshold, "
                "or watch the vault): nothing paused",
            )

    def _pause(self, policy_client: str) -> None:
        """Queue the affected vaults; ``_pause_pending`` pauses them before the cursor moves."""
        if self.w3 is None or self.guardian is None:
            return
        self._pending.update(
            v for v in self.vaults if self.pause_all or v.lower() == policy_client.lower()
        )

    def _pause_pending(self, cursor: Cursor) -> None:
        """Pause every queued vault; one the node failed for stays queued (in the cursor file
        too), so a proven discrepancy's pause is retried at every batch, after a crash too."""
        if self.w3 is None or self.guardian is None or not self._pending:
            cursor.pending = sorted(self._pending)
            return
        for result in pause_vaults(self.w3, sorted(self._pending), self.guardian):
            if not result.retry:
                self._pending.discard(result.vault)
            entry = {
                "vault": result.vault,
                "paused": result.paused,
                "tx_hash": result.tx_hash,
                "error": result.error,
            }
            held = [e for e in self.report.paused if e["vault"] == result.vault]
            if not held:
                self.report.paused.append(entry)
            elif result.tx_hash is not None or not held[0]["paused"]:
                held[0].update(entry)
        cursor.pending = sorted(self._pending)

    # -- the chain -------------------------------------------------------------------------

    def _chain_head(self) -> int | None:
        if self.w3 is None or not self.vaults:
            return None
        return chain_head(self.w3)

    def _scan(self, cursor: Cursor, head: int | None) -> list[Executed]:
        """Every vault's ``Executed`` events up to ``head`` (from the last judged block): each
        one's fact joins its task in the totals, or a task rebuilt from the call itself when
        the records do not hold it (yet: see ``_judge``)."""
        w3 = self.w3
        if head is None or w3 is None:
            return []
        found: list[Executed] = []
        for vault in self.vaults:
            start = cursor.blocks.get(vault, -1) + 1
            if start > head:
                continue
            for executed in executed_events(w3, vault, from_block=start, to_block=head):
                found.append(executed)
                self._adopt(executed)
        return found

    def _adopt(self, executed: Executed) -> None:
        """The fact joins its task (a vault's agent is the vault), or the task rebuilt from
        the call when the records do not hold it (yet)."""
        fact = executed.fact
        task_id = fact.task_id or ""
        held = self.index.get(fact.address, fact.address, task_id)
        if held is not None:
            mismatch = fact.proves_use_of(TransactionIntent.from_wire(held.intent), task_id)
            if mismatch is None:
                self.index.add(held.with_fact(fact))
            else:  # the vault executed another call under this task id than recorded
                self.report.warn(task_id, f"the records and the chain disagree: {mismatch}")
            return
        if executed.intent is None or executed.attestation is None:
            return
        candidate = self._candidate(executed.intent, executed.attestation, facts=(fact,))
        if candidate is not None:
            self.index.add(candidate)
            self._newest = max(self._newest, candidate.now)

    def _judge(self, executions: Iterable[Executed]) -> None:
        """Caught up with the records after reading the chain: every execution up to the
        head was recorded before its attestation left the gateway, so one still without a
        record is a task the gateway keeps out of its records. Judged only where this run
        read every record since (an older execution's record may predate the horizon)."""
        for executed in executions:
            fact = executed.fact
            task_id = fact.task_id or ""
            if task_id in self._recorded:
                continue
            since = self._recorded_since
            attested = executed.attestation
            if since is None or (
                since >= 0
                # created up to MAX_EXPIRE_AFTER before its expiry: judged only if surely
                # after the oldest record this run read
                and (attested is None or attested.expires_at - MAX_EXPIRE_AFTER < since)
            ):
                continue
            entry = {
                "vault": fact.address,
                "task_id": task_id,
                "tx_hash": fact.tx_hash,
                "block_number": fact.block_number,
                "log_index": fact.log_index,
            }
            if entry not in self.report.unrecorded:
                self.report.unrecorded.append(entry)
                log.warning("an execution the gateway's records do not hold", **entry)

    def _prune(self, cursor: Cursor) -> None:
        before = self._newest - self._horizon
        self.index.prune(before)
        kept = {c.task_id for c in self.index.all()}
        self._seqs = {t: s for t, s in self._seqs.items() if t in kept}
        self._unpaid &= kept  # a long watch must not keep every vault task id it ever saw
        # policy ids no registration was found for: the source names them, so they are
        # forgotten each batch (a hostile source could list a new one per task)
        self._clients = {p: c for p, c in self._clients.items() if c is not None}
        self._recorded = {t: at for t, at in self._recorded.items() if at > before}
        if self._recorded_since is not None and self._recorded_since < before:
            self._recorded_since = before  # what is older is no longer known here
        recent = {c.task_id for c in self.index.all() if c.now >= self._newest - 1}
        self._recent = {t: e for t, e in self._recent.items() if t in recent}
        cursor.horizon = (min(self._seqs.values()) - 1) if self._seqs else cursor.seq
        for vault in self.vaults:
            blocks = [
                f.block_number
                for c in self.index.tasks(vault, vault)
                for f in c.facts
                if f.kind == "executed"
            ]
            cursor.chain_from[vault] = min(blocks, default=cursor.blocks.get(vault, -1) + 1)
