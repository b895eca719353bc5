"""The ``Gateway``: its parts wired together, and the ``newt_createTask`` flow (the hot path).

One authorization, in order: check the request (``_validation``) → reserve the spend in the
windows' totals and build ``data.wasm`` from the gateway's own records (``_results``) → ask
the operators and count verified votes (``_fanout``) → build Newton's result (``_results``) →
record an ``allow`` before answering, so cumulative caps count it even if the client never
reports back. The answer is encoded once and kept, as those bytes, for retries
(``_idempotency``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from eth_utils.address import to_checksum_address

from agentguard._exceptions import IntentError, TaskAlreadyRecorded
from agentguard._logging import get_logger
from agentguard._task_id import task_id as derive_task_id
from agentguard.network._rpc import Encoded, encode
from agentguard.network.config import ApiKeyEntry, NetworkConfig
from agentguard.network.gateway import _approvals, _dispatch, _settle
from agentguard.network.gateway._auth import Keys
from agentguard.network.gateway._fanout import FanOut
from agentguard.network.gateway._idempotency import IdempotencyCache
from agentguard.network.gateway._operators import deliver, operator_links
from agentguard.network.gateway._params import address_param, invalid
from agentguard.network.gateway._registry import Clients, PolicyClient
from agentguard.network.gateway._results import (
    COMPACT_PARAM,
    compact_result,
    task_result,
    wasm_data,
)
from agentguard.network.gateway._simulate import Simulator
from agentguard.network.gateway._sweep import Check, Sweeper
from agentguard.network.gateway._validation import task_input
from agentguard.network.state import Pending, State, TaskRecord, UsageCheck
from agentguard.policies import canonical_json

if TYPE_CHECKING:
    from agentguard.network.usage import ChainUsageCheck

__all__ = ["IDEMPOTENCY_MAX_BYTES", "IDEMPOTENCY_TTL", "SWEEP_INTERVAL", "Gateway"]

log = get_logger("agentguard.network.gateway")

IDEMPOTENCY_TTL = 600
IDEMPOTENCY_MAX_BYTES = 4 << 20
SWEEP_INTERVAL = 1.0


class Gateway:
    """Request handling; the HTTP layer is ``create_app``."""

    def __init__(
        self,
        config: NetworkConfig,
        state: State,
        *,
        usage_check: UsageCheck | None = None,
        chain: ChainUsageCheck | None = None,
        clock: Callable[[], float] = time.time,
        idempotency_bytes: int = IDEMPOTENCY_MAX_BYTES,
    ) -> None:
        self.config = config
        self.state = state
        self.chain = chain
        # With a chain RPC the chain usage check is always on: a vault client's use of an
        # attestation is a fact onchain, whatever its host reports.
        self.usage_check = usage_check if usage_check is not None else chain
        self._clock = clock
        self.keys = Keys(config.api_keys)
        self.clients = Clients(config.gateway, state, chain)
        self.operators = FanOut(operator_links(config.operators), clock)
        self.idempotency = IdempotencyCache(
            max_bytes=idempotency_bytes,
            ttl=IDEMPOTENCY_TTL,
            clock=clock,
            recorded=state.stored_result,
        )
        self.approvals = _approvals.Approvals(state, self.clients)
        self._simulator = Simulator(config.gateway, state, self.clients, clock)
        self._sweeper = Sweeper()

    # -- lifecycle -----------------------------------------------------------------------------

    async def close(self) -> None:
        self.operators.close()
        self._sweeper.close()

    async def sweep_forever(self) -> None:
        """Give back released attestations once they expire; settle the rest via usage check."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                released = await self.sweep_once()
                if released:
                    log.info("released expired unused attestations", count=released)
            except Exception as exc:  # a broken state must not stop the gateway
                log.warning("expiry sweep failed", error=str(exc))

    async def sweep_once(self, now: float | None = None) -> int:
        """One sweep pass at ``now`` (the gateway's clock by default), its usage checks asked
        off the event loop (``_sweep``); returns how many tasks were given back."""
        check_for = None if self.usage_check is None else self._check_for
        when = int(self._clock() if now is None else now)
        return await self._sweeper.sweep(self.state, when, check_for, self.trusts_release)

    def _check_for(self, task: TaskRecord) -> Check:
        """The usage check of one task, to run off the loop; the chain check is asked only
        about a task on its RPC's chain (the task's chain is read here, on the loop)."""
        check = self.usage_check
        assert check is not None
        if check is self.chain:
            return functools.partial(
                _on_its_chain, self.chain, self.state.task_chain(task.task_id), task
            )
        return functools.partial(check.was_used, task)

    # -- auth and registration ------------------------------------------------------------------

    def authenticate(self, header: str | None) -> ApiKeyEntry:
        return self.keys.authenticate(header)

    def register(self, params: Mapping[str, Any], *, allow_paths: bool = False) -> dict[str, Any]:
        """Accept an owner-signed registration (the operators check it again themselves)."""
        client = self.clients.register(params, allow_paths=allow_paths)
        registration = client.registration
        return {
            "policy_client": client.address,
            "owner": to_checksum_address(registration.owner_hex),
            "policy_id": "0x" + client.policy_id.hex(),
            "policy_code_hash": "0x" + client.code_hash.hex(),
            "expire_after": client.expire_after,
            "chain_id": client.chain_id,
            "version": registration.version,
        }

    async def deliver(self, clients: Sequence[PolicyClient] | None = None) -> list[str]:
        """Hand registrations to every operator now (see ``_operators.deliver``); returns the
        operators that did not take them."""
        targets = list(self.clients) if clients is None else list(clients)
        return await deliver(self.operators.links, targets)

    def trusts_release(self, task: TaskRecord) -> bool:
        """Whether a release the host reports stands at expiry when the usage check cannot
        tell (see ``State.sweeping``): for a policy client whose own key signed its
        registration (an EOA, not a vault), and with the chain usage check, which cannot tell
        only when there is no code at the address (no vault could have used it) on the
        task's own chain. Not the client's chain now: re-registered to another chain, its
        address may have no code there while its vault executed the task here."""
        client = self.clients.get(task.policy_client)
        if client is not None and client.registration.self_owned:
            return True
        return (
            self.chain is not None
            and self.usage_check is self.chain
            and self.state.task_chain(task.task_id) == self.chain.chain_id
        )

    # -- the task request (the hot path) ---------------------------------------------------------

    async def create_task(
        self, key: ApiKeyEntry, rpc_id: str, params: Mapping[str, Any]
    ) -> Encoded:
        """Idempotent by (API key, rpc id): a retry gets the first answer, counted once."""
        cache_key = (key.sha256, rpc_id)
        fingerprint = hashlib.sha256(canonical_json(params)).digest()
        cached = self.idempotency.lookup(cache_key, fingerprint)
        if isinstance(cached, bytes):
            return Encoded(cached)
        if cached is not None:
            return Encoded(await asyncio.shield(cached))
        future = self.idempotency.begin(cache_key, fingerprint)
        try:
            result = await self._create_task(key, rpc_id, params)
            answer = encode(compact_result(result) if params.get(COMPACT_PARAM) is True else result)
        except BaseException as exc:
            self.idempotency.drop(cache_key)  # errors record nothing: a retry re-runs
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            elif not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: concurrent retries see it, nobody else must
            raise
        if result["status"] == "success":
            self.idempotency.keep(cache_key, answer, result)
        else:
            self.idempotency.drop(cache_key)
        future.set_result(answer)
        return Encoded(answer)

    async def _create_task(
        self, key: ApiKeyEntry, rpc_id: str, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        client = self.clients.usable(key, address_param(params, "policy_client"))
        task = task_input(client, self.config.gateway, params)
        intent = task.intent
        intent_hash = intent.intent_hash
        try:  # every operator recomputes it, and the client checks it
            task_id = derive_task_id(client.address, intent_hash, task.x402, rpc_id)
        except IntentError as exc:  # an id no UTF-8 spells (a lone surrogate)
            raise invalid(f"id: {exc.message}") from None
        task_id_hex = "0x" + task_id.hex()
        stored = self.state.stored_result(task_id_hex)
        if stored is not None:
            return stored
        now = int(self._clock())
        expires_at = now + client.expire_after
        intent_hash_hex = "0x" + intent_hash.hex()
        reservation = self.state.reserve(
            policy_client=client.address,
            agent=intent.from_,
            windows=client.windows,
            task_id=task_id_hex,
            asset=task.spend_asset,
            amount=task.spend_amount,
            now=now,
        )
        approval: dict[str, Any] | None = None
        recorded = False
        try:
            # Claimed in the same synchronous step that builds the operators' input: of
            # concurrent tasks for one approved intent only this one gets the signed approval
            # (each operator checks it and signs one allow per approval); given back below
            # unless the task is allowed.
            approval = self.state.claim_approval(client.address, intent_hash_hex, task_id_hex, now)
            wasm = wasm_data(
                task, reservation.history, now, intent_hash_hex, approved=approval is not None
            )
            wasm_json = canonical_json(wasm)  # once: for the operators and in the result
            intent_json = encode(task.intent.wire()).decode()  # once, likewise
            outcome = await self.operators.ask(
                task, task_id, rpc_id, wasm_json, expires_at, intent_hash, approval, intent_json
            )
            result = task_result(
                task,
                task_id_hex,
                rpc_id,
                now,
                expires_at,
                wasm,
                wasm_json,
                outcome,
                intent_json,
                whole=params.get(COMPACT_PARAM) is not True,
            )
            if outcome.decision == "allow":
                try:
                    durable = asyncio.ensure_future(
                        self.state.record_soon(reservation, expires_at=expires_at, result=result)
                    )
                    recorded = True  # the state settles the reservation from here on
                    if approval is not None:  # and the approval, when the write is settled,
                        durable.add_done_callback(  # whether or not this task still waits
                            functools.partial(
                                self._settle_approval, client.address, intent_hash_hex, task_id_hex
                            )
                        )
                        approval = None
                    else:  # its outcome is read even if nobody waits for it any more
                        durable.add_done_callback(_read_outcome)
                    await asyncio.shield(durable)  # answered only once its record is written
                except TaskAlreadyRecorded:  # the same task from another key or replica at once
                    recorded = False  # nothing of it counts
                    stored = self.state.stored_result(task_id_hex)
                    if stored is None:
                        raise
                    return stored
            elif outcome.decision == "approval_required":
                parked = self.state.park_approval(
                    policy_client=client.address,
                    intent_hash=intent_hash_hex,
                    intent=task.intent.wire(),
                    spend=wasm["spend"],
                    reasons=outcome.votes[0].reasons,
                    now=now,
                    ttl=self.config.gateway.approval_ttl,
                )
                if parked is None:
                    log.warning("too many live approval requests", policy_client=client.address)
            return result
        finally:
            if not recorded:
                self.state.cancel(reservation)
                if approval is not None:
                    self.state.unclaim_approval(client.address, intent_hash_hex, task_id_hex)

    def _settle_approval(
        self, policy_client: str, intent_hash: str, task_id: str, durable: asyncio.Future[None]
    ) -> None:
        """The approval an allowed task claimed: used once its record is written, given back
        if the write failed (the task was not allowed), kept claimed if nobody can tell."""
        if durable.cancelled():
            return
        if durable.exception() is None:
            self.state.use_approval(policy_client, intent_hash, task_id)
        else:
            self.state.unclaim_approval(policy_client, intent_hash, task_id)

    # -- the other methods ---------------------------------------------------------------------

    async def simulate(self, key: ApiKeyEntry, params: Mapping[str, Any]) -> dict[str, Any]:
        """Evaluate once here, sign nothing, record nothing (``_simulate``)."""
        return self._simulator.simulate(key, params)

    def network_info(self) -> dict[str, Any]:
        """What a client may rely on: ECDSA quorum attestations, and ``newt_createTask`` is
        deduplicated by (API key, JSON-RPC id), so a retry with the same id is the same task.
        Deliberately no operator list: a client takes its operators from its own config."""
        return {
            "scheme": "ecdsa",
            "dedupes": True,
            "network": "agentguard-reference",
            "expiry": "unix-seconds",
            "compact_answers": True,
        }

    def release(self, key: ApiKeyEntry, params: Mapping[str, Any]) -> dict[str, Any]:
        return _settle.release(
            self.state,
            key,
            params,
            now=int(self._clock()),
            trusted=lambda task: self.usage_check is None and self.trusts_release(task),
        )

    def commit(self, key: ApiKeyEntry, params: Mapping[str, Any]) -> dict[str, Any]:
        return _settle.commit(self.state, key, params)

    def list_approvals(self, key: ApiKeyEntry, params: Mapping[str, Any]) -> dict[str, Any]:
        return self.approvals.list(key, params, int(self._clock()))

    def approve(self, key: ApiKeyEntry, params: Mapping[str, Any]) -> dict[str, Any]:
        return self.approvals.approve(key, params, int(self._clock()))

    def reject(self, key: ApiKeyEntry, params: Mapping[str, Any]) -> dict[str, Any]:
        return self.approvals.reject(key, params, int(self._clock()))

    def approval_status(self, key: ApiKeyEntry, params: Mapping[str, Any]) -> dict[str, Any]:
        return self.approvals.status(key, params, int(self._clock()))

    async def dispatch(
        self, key: ApiKeyEntry, rpc_id: Any, method: str, params: Mapping[str, Any]
    ) -> Any:
        """One JSON-RPC call (``_dispatch``); a ``newt_createTask`` answer comes ``Encoded``."""
        return await _dispatch.dispatch(self, key, rpc_id, method, params)


def _on_its_chain(
    chain: ChainUsageCheck, chain_id: int | None, task: TaskRecord
) -> bool | Pending | None:
    """The chain usage check, asked only about a task whose own intent is for the chain its
    RPC serves (``chain_id``, ``None`` if unknown): about a vault on another chain it can tell
    nothing (no code at that address here, or the same address's vault that never saw the
    task), so the answer is "cannot tell" and a release stays counted."""
    if chain_id != chain.chain_id:
        return None
    return chain.was_used(task)


def _read_outcome(durable: asyncio.Future[None]) -> None:
    """Marks a record's outcome as read (its waiter may have hung up; the state settled it)."""
    if not durable.cancelled():
        durable.exception()
