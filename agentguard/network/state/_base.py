"""The gateway's state, whichever backend holds it: the methods the gateway calls and the rules
both backends share (settling expired attestations, reading a recorded answer back)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from pathlib import Path
from typing import Any

from agentguard._exceptions import AgentGuardError, GatewayStateError, StateUnavailable
from agentguard._intent import wire_chain_id
from agentguard.network.state._book import Reservation
from agentguard.network.state._compact import unpack
from agentguard.network.state._model import (
    MAX_PENDING_APPROVALS,
    MAX_TASKS_READ,
    PENDING,
    ApprovalRequest,
    Pending,
    PolicyClientRecord,
    StoredTask,
    TaskRecord,
    TaskStatus,
    UsageCheck,
    WindowTotals,
)

SWEEP_BATCH = 1000  # expired tasks settled per sweep
_FROM_THE_START = (-1, "")  # a sweep cursor (expiry, task id) before every task


class State:
    """Policy clients, approvals and attested spend (see the package docstring).

    ``State(spec)`` opens the backend ``spec`` names (``open_state``): a SQLite file for a path
    or ``sqlite:///PATH``, a shared PostgreSQL database for ``postgresql://…``. Every method is
    synchronous: the gateway calls it between two ``await``s."""

    shared = False
    _swept_to = _FROM_THE_START  # where the last sweep's batch ended (``sweeping``)
    """Whether other gateway processes may change this state (then a replica re-reads what it
    caches, e.g. a policy client re-registered through another replica)."""

    def __new__(cls, spec: str | Path) -> State:
        if cls is State:
            from agentguard.network.state import backend_for

            cls = backend_for(spec)
        return super().__new__(cls)

    def close(self) -> None:
        raise NotImplementedError

    # -- policies and policy clients -----------------------------------------------------------

    def save_policy_client(self, record: PolicyClientRecord) -> None:
        raise NotImplementedError

    def policy_clients(self) -> list[PolicyClientRecord]:
        raise NotImplementedError

    def policy_client(self, address: str) -> PolicyClientRecord | None:
        """The registered client at ``address`` (any case), e.g. one another replica
        registered after this one started; ``None`` if there is none."""
        raise NotImplementedError

    def policy_version(self, policy_id: str) -> PolicyClientRecord | None:
        """The registration saved under ``policy_id`` ('0x' + 64 hex) and its policy code:
        every registration ever saved stays readable, so an auditor can re-evaluate a task
        attested under a configuration the client has since replaced."""
        raise NotImplementedError

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
        endless variations must not flood the store or bury the real ones); nothing parked."""
        client, hashed = policy_client.lower(), intent_hash.lower()
        row = (
            client,
            hashed,
            json.dumps(dict(intent)),
            json.dumps(dict(spend)),
            json.dumps(reasons[:32]),
            now,
            now + ttl,
        )
        return self._park(row, now, max_pending)

    def _park(self, row: tuple[Any, ...], now: int, max_pending: int) -> ApprovalRequest | None:
        raise NotImplementedError

    @staticmethod
    def _stays(held: ApprovalRequest | None, now: int) -> bool:
        """Whether a parked request stands as it is when the same intent is parked again."""
        return held is not None and (
            held.status in ("pending", "approved")
            or (held.status == "rejected" and held.expires_at > now)
        )

    def approval_request(
        self, policy_client: str, intent_hash: str, now: int
    ) -> ApprovalRequest | None:
        raise NotImplementedError

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
        raise NotImplementedError

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
        raise NotImplementedError

    def reject(self, policy_client: str, intent_hash: str, now: int) -> bool:
        """A pending request, or an approved one no task holds, becomes rejected for good."""
        raise NotImplementedError

    def approved(self, policy_client: str, intent_hash: str, now: int) -> bool:
        """Read only (``newt_simulateTask``); a task must ``claim_approval`` instead."""
        held = self.approval_request(policy_client, intent_hash, now)
        return held is not None and held.status == "approved" and held.used_by is None

    def claim_approval(
        self, policy_client: str, intent_hash: str, task_id: str, now: int
    ) -> dict[str, Any] | None:
        """Take the signed approval for this intent for ``task_id`` in one statement: of
        concurrent tasks for one approved intent (on any replica), exactly one gets it."""
        raise NotImplementedError

    def unclaim_approval(self, policy_client: str, intent_hash: str, task_id: str) -> None:
        """The task that claimed the approval was not allowed: the approval stands."""
        raise NotImplementedError

    def use_approval(self, policy_client: str, intent_hash: str, task_id: str) -> None:
        """The task that claimed the approval was allowed: it is spent."""
        raise NotImplementedError

    # -- attested spend ------------------------------------------------------------------------

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
        """Read the totals (without this task) and count this amount as in flight, in one
        step no other request for this policy client + agent can interleave with."""
        raise NotImplementedError

    def totals(
        self, *, policy_client: str, agent: str, windows: Iterable[int], now: int
    ) -> dict[int, WindowTotals]:
        """The totals ``reserve`` would report, without reserving anything."""
        raise NotImplementedError

    def cancel(self, reservation: Reservation) -> None:
        """The task was not allowed: it no longer counts."""
        raise NotImplementedError

    def record(
        self,
        reservation: Reservation,
        *,
        expires_at: int,
        result: Mapping[str, Any],
    ) -> None:
        """Persist an ``allow`` before it is returned (compactly: see ``_compact``).
        ``TaskAlreadyRecorded``: a concurrent request for the same task recorded it first."""
        raise NotImplementedError

    def record_soon(
        self,
        reservation: Reservation,
        *,
        expires_at: int,
        result: Mapping[str, Any],
    ) -> Awaitable[None]:
        """``record``, whose write a backend may share with concurrent records (one commit
        for many: see ``SQLiteState``). The record is durable once the returned awaitable is
        done, which raises what ``record`` would; answer the ``allow`` only then. From this
        call on the state settles the reservation itself (counted once written, given back
        if the write fails), even if the caller stops waiting: it must not ``cancel`` it."""
        self.record(reservation, expires_at=expires_at, result=result)
        return _written()

    def stored_result(self, task_id: str) -> dict[str, Any] | None:
        """The result returned for an already recorded task (idempotent retries after a
        restart, or on another replica): equal to the dict ``record`` was given."""
        found = self._stored(task_id)
        if found is None:
            return None
        return _unpacked(task_id, *found)

    def task_chain(self, task_id: str) -> int | None:
        """The chain of the task's own recorded intent, the only chain where its attestation
        can be used (a vault refuses an intent for another chain): a released task is judged
        there, never on the chain its client is registered on now (an owner may re-register
        the same address on another chain). ``None`` if the record cannot tell. A state
        that does not answer raises (``StateUnavailable``), never ``None``: the sweep reads
        the chain twice per task (whether to ask the chain; then ``trusts_release``), and a
        failed first read that skipped the chain check while the second saw the RPC's chain
        gave a release back unasked."""
        try:
            found = self.stored_result(task_id)
            if found is None:
                return None
            return wire_chain_id(found["task"]["intent"])  # validated when it was recorded
        except StateUnavailable:
            raise
        except (AgentGuardError, KeyError, TypeError, ValueError):
            return None

    def _stored(self, task_id: str) -> tuple[str, str | None] | None:
        """The row's stored text and the body of the shared part it names (if any)."""
        raise NotImplementedError

    def task(self, task_id: str) -> TaskRecord | None:
        raise NotImplementedError

    def tasks(
        self, *, after: int = 0, limit: int = MAX_TASKS_READ, policy_client: str | None = None
    ) -> list[StoredTask]:
        """Recorded (allowed) tasks with ``seq > after``, oldest first, at most ``limit``
        (capped at ``MAX_TASKS_READ``); ``policy_client`` keeps only that client's."""
        limit = max(0, min(limit, MAX_TASKS_READ))
        rows = self._task_rows(
            after, limit, None if policy_client is None else policy_client.lower()
        )
        return [
            StoredTask(
                *(row[1], row[2], row[3], row[4], int(row[5]), int(row[6]), int(row[7]), row[8]),
                seq=int(row[0]),
                result=_unpacked(row[1], row[9], row[10]),
            )
            for row in rows
        ]

    def _task_rows(
        self, after: int, limit: int, policy_client: str | None
    ) -> list[tuple[Any, ...]]:
        """(seq, task id, client, agent, asset, amount, created, expires, status, stored text,
        shared part) of recorded tasks, by ``seq``."""
        raise NotImplementedError

    def release(self, task_id: str, now: int, *, trusted: bool) -> TaskStatus | None:
        """The client says it never used this attestation. ``released`` (given back now) only
        for an expired attestation of a ``trusted`` client (see ``sweeping``); otherwise
        ``releasing``, settled by the sweep at expiry. ``None`` unless the task was
        ``attested``."""
        expires_at = self._attested_expiry(task_id)
        if expires_at is None:
            return None
        if expires_at <= now and trusted:
            return "released" if self._give_back(task_id, "attested") else None
        return "releasing" if self._set_releasing(task_id) else None

    def _attested_expiry(self, task_id: str) -> int | None:
        raise NotImplementedError

    def _set_releasing(self, task_id: str) -> bool:
        raise NotImplementedError

    def _give_back(self, task_id: str, from_status: str) -> bool:
        """``from_status`` → ``released``, no longer counted; False if it was not in it."""
        raise NotImplementedError

    def commit(self, task_id: str, outcome: str) -> bool:
        """Mark an attested task as used; its amount stays counted. False unless ``attested``."""
        raise NotImplementedError

    def _expired(
        self, now: int, statuses: tuple[str, ...], after: tuple[int, str]
    ) -> list[tuple[str, str, int]]:
        """(task id, status, expiry) of up to ``SWEEP_BATCH`` tasks in ``statuses`` expired by
        ``now``, by (expiry, task id) from just past ``after``."""
        raise NotImplementedError

    def sweep_expired(
        self,
        now: int,
        usage_check: UsageCheck | None,
        trusted: Callable[[TaskRecord], bool],
    ) -> int:
        """Settle expired tasks; returns how many were given back (``sweeping``, with
        ``usage_check`` asked in turn, here). The first error a check raised is raised once
        the pass is done."""
        steps = self.sweeping(now, checking=usage_check is not None, trusted=trusted)
        failed: Exception | None = None
        try:
            task = next(steps)
            while True:
                try:
                    used = usage_check.was_used(task) if usage_check is not None else None
                except Exception as exc:  # decided at a later pass; the rest are settled now
                    failed = failed or exc
                    task = steps.throw(exc)
                    continue
                task = steps.send(used)
        except StopIteration as done:
            if failed is not None:
                raise failed from None
            released: int = done.value
            return released

    def sweeping(
        self, now: int, *, checking: bool, trusted: Callable[[TaskRecord], bool]
    ) -> Generator[TaskRecord, bool | Pending | None, int]:
        """One sweep pass: yields each expired task a usage check must judge and takes its
        answer (``send``) or its failure (``throw``); returns how many were given back. The
        caller decides where the check runs: the gateway asks it off its event loop, and
        answers arrive between two ``await``s, so every change here is conditional on the
        status it read (as for replicas sweeping at once).

        With ``checking``, the usage check decides when it can tell (used: committed, unused:
        given back). Otherwise a ``releasing`` task (the client said unused) is given back only
        if ``trusted(task)``: its client cannot have used it behind the network's back in a
        way the network would not see, or a usage check would have seen it (asked on the
        task's own chain: ``task_chain``). Else it
        stays counted (``committed``): a contract client (a vault) may have executed it
        before expiry. ``attested`` tasks (the client never said) stay as they are.

        A task whose check fails (a node error, a contract whose ``taskUsed`` reverts) stays
        as it is, counted, and the pass goes on: one client's task must not hold back every
        later task's settlement. Tasks that stay as they are would head every batch: a pass
        takes the batch after the last pass's, from the start again once one came back short
        or pending.
        """
        statuses = ("attested", "releasing") if checking else ("releasing",)
        released = 0
        batch = self._expired(now, statuses, self._swept_to)
        self._swept_to = (
            (batch[-1][2], batch[-1][0]) if len(batch) == SWEEP_BATCH else _FROM_THE_START
        )
        for task_id, _, _ in batch:
            task = self.task(task_id)
            if task is None or task.status not in statuses:  # settled since the batch was read
                continue
            used: bool | Pending | None = None
            if checking:
                try:
                    used = yield task
                except Exception:  # noqa: S112 - the caller reports it; it stays counted
                    continue
                if used is PENDING:  # the rest expire later still: all pending too
                    self._swept_to = _FROM_THE_START
                    break
                task = self.task(task_id)  # as it is now, after the check
                if task is None or task.status not in statuses:
                    continue
            status = task.status
            if used is True:
                self.commit(task_id, "used (usage check)")
            elif used is False:
                released += self._give_back(task_id, status)
            elif status == "releasing":
                if trusted(task):
                    released += self._give_back(task_id, status)
                else:
                    self.commit(task_id, "released, but its use cannot be ruled out: counted")
        return released


async def _written() -> None:
    """What ``record_soon`` returns for a backend whose ``record`` is durable when it returns."""


def _unpacked(task_id: str, text: str, part: str | None) -> dict[str, Any]:
    try:
        return unpack(task_id, text, part)
    except (ValueError, TypeError, KeyError) as exc:
        raise GatewayStateError(
            f"the stored answer of task {task_id} cannot be read back ({exc})"
        ) from None
