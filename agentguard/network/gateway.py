"""The gateway of the reference network: Newton's gateway JSON-RPC in front of N operators.

``python -m agentguard.network.gateway --config network.json``

For ``newt_createTask`` it checks the caller and the request, builds the policy's
``data.wasm`` from its own records (``state``), asks every operator at once, verifies each
operator's signature over the digest it recomputes itself, and answers as soon as a quorum
agrees on one decision. An ``allow`` is recorded before it is returned, so cumulative caps
count it even if the client never reports back. See ``docs/architecture.md`` for the wire
formats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import hashlib
import importlib
import json
import os
import re
import sqlite3
import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eth_utils.address import to_checksum_address
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agentguard._attestation import attestation_digest, recover_signer
from agentguard._eip712 import address_word, keccak
from agentguard._exceptions import AgentGuardError, ConfigurationError, MalformedSignature
from agentguard._intent import NATIVE_ASSET, TransactionIntent
from agentguard._json import strict_loads
from agentguard._logging import configure_logging, get_logger
from agentguard.network._http import HTTPError, KeepAliveClient
from agentguard.network._keys import api_key_digest, load_token
from agentguard.network._rpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    POLICY_EVALUATION_ERROR,
    POLICY_REQUIRED,
    UNAUTHORIZED,
    RPCError,
    error_response,
    json_response,
    read_request,
    result_response,
)
from agentguard.network._x402 import canonical_x402
from agentguard.network.approvals import STATUSES, SignedApproval
from agentguard.network.config import ApiKeyEntry, NetworkConfig, OperatorEntry
from agentguard.network.registration import Registration
from agentguard.network.state import (
    DEFAULT_WINDOWS,
    Pending,
    PolicyClientRecord,
    State,
    TaskRecord,
    UsageCheck,
    WindowTotals,
    policy_from_spec,
    policy_material,
)
from agentguard.policies import Policy, canonical_json

if TYPE_CHECKING:
    from agentguard.network.usage import ChainUsageCheck

__all__ = ["Gateway", "create_app", "main"]

log = get_logger("agentguard.network.gateway")

IDEMPOTENCY_TTL = 600
IDEMPOTENCY_MAX = 50_000
MAX_TIMEOUT = 60.0
SWEEP_INTERVAL = 1.0
HEDGE_MIN = 0.05  # seconds before a slow quorum is widened to every operator
# The reference network does not run on blocks (its expiries are unix timestamps); Newton's
# block fields (``taskCreatedBlock``, ``reference_block``) are present, as 0.
REFERENCE_BLOCK = 0

_ADDR = re.compile(r"^0x[0-9a-fA-F]{40}$")
_B32 = re.compile(r"^0x[0-9a-fA-F]{64}$")
_HEX = re.compile(r"^(0x)?([0-9a-fA-F]{2})*$")
_DECISIONS = ("allow", "deny", "approval_required")
_FALSE_WORD = [0] * 32
_TRUE_WORD = [0] * 31 + [1]


def _invalid(message: str) -> RPCError:
    return RPCError(INVALID_PARAMS, message)


def _address(params: Mapping[str, Any], field: str) -> str:
    value = params.get(field)
    if not isinstance(value, str) or not _ADDR.match(value):
        raise _invalid(f"{field} must be a 0x-prefixed 20-byte address")
    return value


def _windows(params: Any) -> tuple[int, ...]:
    """Every ``window_seconds`` value anywhere in the params, plus 3600 and 86400."""
    found: set[int] = set(DEFAULT_WINDOWS)
    stack = [params]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "window_seconds" and isinstance(value, int) and value > 0:
                    found.add(value)
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return tuple(sorted(found))


@dataclass(frozen=True)
class _Client:
    """A registered policy client: shared policy logic + its owner-signed configuration."""

    address: str
    policy: Policy
    registration: Registration
    registration_json: dict[str, Any]
    params: Any
    expire_after: int
    chain_id: int
    policy_id: bytes
    windows: tuple[int, ...]
    material: dict[str, Any]
    params_hex: str

    @property
    def code_hash(self) -> bytes:
        return self.policy.code_hash


class _OperatorLink:
    def __init__(self, entry: OperatorEntry) -> None:
        self.url = entry.url
        self.address = entry.address
        self.address_bytes = bytes.fromhex(entry.address[2:])
        self.operator_id = "0x" + keccak(self.address_bytes).hex()
        self.has_code: set[bytes] = set()
        self.http = KeepAliveClient(entry.url, token=load_token(entry.token_file, ""))


# Newton's ``operator_errors[].error_code`` is a number; ours are these (HTTP-like for
# transport trouble), or the operator's own JSON-RPC error code; ``error_type`` names it.
_ERROR_CODES = {
    "timeout": 408,
    "unreachable": 503,
    "invalid_response": 502,
    "mismatch": 409,
    "bad_signature": 401,
    "internal": 500,
}


class _OperatorFailure(Exception):
    def __init__(self, code: str, message: str, *, retryable: bool, rpc_code: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.rpc_code = rpc_code

    @property
    def number(self) -> int:
        if self.rpc_code is not None:
            return self.rpc_code
        if self.code.startswith("http_") and self.code[5:].isdigit():
            return int(self.code[5:])
        return _ERROR_CODES.get(self.code, 500)


@dataclass
class _Vote:
    link: _OperatorLink
    reasons: list[str]
    signature: str


def _validated_params(policy: Policy, params: Any) -> None:
    if not isinstance(params, dict):
        raise _invalid("params must be a JSON object")
    if not policy.params_schema:
        return
    import jsonschema

    schema = dict(policy.params_schema)
    validator_cls = jsonschema.validators.validator_for(schema)
    try:
        validator_cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise _invalid(f"the policy's params schema is invalid: {exc.message}") from None
    errors = sorted(validator_cls(schema).iter_errors(params), key=lambda e: list(e.path))
    if errors:
        shown = []
        for error in errors[:5]:
            where = "params" + "".join(
                f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.path
            )
            shown.append(f"{where}: {error.message}")
        raise _invalid("params do not match the policy's schema: " + "; ".join(shown))


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
    ) -> None:
        self.config = config
        self.state = state
        self.chain = chain
        # With a chain RPC the chain usage check is always on: a vault client's use of an
        # attestation is a fact onchain, whatever its host reports.
        self.usage_check = usage_check if usage_check is not None else chain
        self._clock = clock
        self._keys: dict[str, ApiKeyEntry] = {k.sha256: k for k in config.api_keys}
        self._operators = [_OperatorLink(op) for op in config.operators]
        self._clients: dict[str, _Client] = {}
        self._idempotent: OrderedDict[tuple[str, str], tuple[float, bytes, asyncio.Future[Any]]]
        self._idempotent = OrderedDict()
        self._background: set[asyncio.Future[Any]] = set()
        self._engine: Any = None
        self._rotation = 0
        self._latency = 0.0  # moving average of time-to-quorum, seconds
        for record in state.policy_clients():
            self._clients[record.registration.policy_client_hex] = self._client(record)

    def _hedge_delay(self) -> float:
        """How long a quorum may take before the remaining operators are asked too."""
        return max(HEDGE_MIN, 3 * self._latency) if self._latency else HEDGE_MIN

    def _observe_latency(self, seconds: float) -> None:
        self._latency = seconds if not self._latency else 0.9 * self._latency + 0.1 * seconds

    # -- lifecycle -----------------------------------------------------------------------------

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        for link in self._operators:
            link.http.close()

    async def sweep_forever(self) -> None:
        """Give back released attestations once they expire; settle the rest via usage check."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                usage_check = self.usage_check
                if usage_check is not None and usage_check is self.chain:
                    usage_check = _OnItsChain(self.chain, self._chain_of)
                released = self.state.sweep_expired(
                    int(self._clock()), usage_check, self.trusts_release
                )
                if released:
                    log.info("released expired unused attestations", count=released)
            except Exception as exc:  # a broken usage check must not stop the gateway
                log.warning("usage check failed", error=str(exc))

    # -- auth ----------------------------------------------------------------------------------

    def authenticate(self, header: str | None) -> ApiKeyEntry:
        if not header or not header.startswith("Bearer "):
            raise RPCError(
                UNAUTHORIZED,
                "missing API key: send 'Authorization: Bearer <api key>'",
                http_status=401,
            )
        entry = self._keys.get(api_key_digest(header[7:].strip()))
        if entry is None:
            raise RPCError(
                UNAUTHORIZED, "the API key is not valid for this gateway", http_status=401
            )
        return entry

    @staticmethod
    def _require_admin(key: ApiKeyEntry) -> None:
        if not key.admin:
            raise RPCError(UNAUTHORIZED, "this method needs the admin API key", http_status=403)

    def _usable_client(self, key: ApiKeyEntry, address: str) -> _Client:
        client = self._clients.get(address.lower())
        if client is None:
            raise _invalid(
                f"policy client {address} is not registered with this gateway "
                "(register it with agentguard_registerPolicyClient)"
            )
        if not key.may_use(address):
            raise RPCError(
                UNAUTHORIZED, f"this API key may not use policy client {address}", http_status=403
            )
        return client

    # -- registration --------------------------------------------------------------------------

    @staticmethod
    def _client(record: PolicyClientRecord) -> _Client:
        registration = record.registration
        return _Client(
            address=to_checksum_address(registration.policy_client_hex),
            policy=record.policy,
            registration=registration,
            registration_json=registration.to_json(),
            params=registration.params,
            expire_after=registration.expire_after,
            chain_id=registration.chain_id,
            policy_id=registration.policy_id,
            windows=_windows(registration.params),
            material=policy_material(record.policy),
            params_hex="0x" + registration.params_json.hex(),
        )

    def register(self, params: Mapping[str, Any], *, allow_paths: bool = False) -> dict[str, Any]:
        """Accept an owner-signed registration (the operators check it again themselves)."""
        if "registration" not in params:
            raise _invalid(
                "registration is missing: a policy client's policy, params and expiry must be "
                "signed by its owner (ReferenceNetwork.register_policy_client or "
                "'agentguard network register' produce one)"
            )
        try:
            registration = Registration.from_json(params.get("registration"))
            policy = policy_from_spec(params.get("policy"), allow_paths=allow_paths)
        except ConfigurationError as exc:
            raise _invalid(exc.message) from None
        if policy.code_hash != registration.policy_code_hash:
            raise _invalid(
                f"the policy hashes to 0x{policy.code_hash.hex()}, not to the registered "
                f"policy_code_hash 0x{registration.policy_code_hash.hex()}"
            )
        _validated_params(policy, registration.params)
        if registration.chain_id not in self.config.gateway.chain_ids:
            raise _invalid(f"chain_id {registration.chain_id} is not served by this gateway")
        held = self._clients.get(registration.policy_client_hex)
        try:
            chain_owner = self._check_owner(registration)
            registration.replaces(held.registration if held else None, chain_owner=chain_owner)
        except ConfigurationError as exc:
            raise _invalid(exc.message) from None
        record = PolicyClientRecord(registration, policy)
        self.state.save_policy_client(record)
        client = self._client(record)
        self._clients[registration.policy_client_hex] = client
        return {
            "policy_client": client.address,
            "owner": to_checksum_address(registration.owner_hex),
            "policy_id": "0x" + client.policy_id.hex(),
            "policy_code_hash": "0x" + client.code_hash.hex(),
            "expire_after": client.expire_after,
            "chain_id": client.chain_id,
            "version": registration.version,
        }

    def _check_owner(self, registration: Registration) -> str | None:
        """A contract client (a vault) must be registered by its ``owner()``; returns the
        owner the chain confirmed (``None``: cannot tell)."""
        if self.chain is not None:
            return self.chain.check_owner(registration)
        if not registration.self_owned:
            log.warning(
                "no chain RPC: cannot check the owner of a contract policy client; its "
                "released attestations stay counted (set gateway.chain_rpc)",
                policy_client=registration.policy_client_hex,
            )
        return None

    async def deliver(self, clients: Sequence[_Client] | None = None) -> list[str]:
        """Hand registrations to every operator now (they also travel with each task), so an
        operator holds the owner's before anyone can offer it another. Returns the operators
        that did not take them (they get them with their next task)."""
        targets = list(self._clients.values()) if clients is None else list(clients)
        if not targets:
            return []

        async def one(link: _OperatorLink) -> str | None:
            for client in targets:
                envelope = {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "agentguard_holdRegistration",
                    "params": {"registration": client.registration_json},
                }
                try:
                    status, content = await link.http.post(json.dumps(envelope).encode(), 5.0)
                    reply = strict_loads(content) if status == 200 else None
                except (TimeoutError, HTTPError, ValueError):
                    reply = None
                if not isinstance(reply, dict) or "result" not in reply:
                    log.warning("operator did not take a registration", operator=link.address)
                    return link.address
            return None

        missed = await asyncio.gather(*(one(link) for link in self._operators))
        return [m for m in missed if m is not None]

    def trusts_release(self, policy_client: str) -> bool:
        """Whether a release the host reports stands at expiry when the usage check cannot
        tell (see ``State.sweep_expired``): for a policy client whose own key signed its
        registration (an EOA, not a vault), and with the chain usage check, which cannot tell
        only when there is no code at the address (no vault could have used it)."""
        client = self._clients.get(policy_client.lower())
        if client is not None and client.registration.self_owned:
            return True
        return (
            self.chain is not None
            and self.usage_check is self.chain
            and self._chain_of(policy_client) == self.chain.chain_id
        )

    def _chain_of(self, policy_client: str) -> int | None:
        client = self._clients.get(policy_client.lower())
        return None if client is None else client.chain_id

    # -- the task request ----------------------------------------------------------------------

    def _task_input(self, key: ApiKeyEntry, params: Mapping[str, Any]) -> _TaskInput:
        client = self._usable_client(key, _address(params, "policy_client"))
        try:
            intent = TransactionIntent.from_wire(params.get("intent"))  # type: ignore[arg-type]
            spend = intent.spend
        except AgentGuardError as exc:
            raise _invalid(f"intent: {exc.message}") from None
        if intent.chain_id != client.chain_id:
            raise _invalid(
                f"intent chain_id {intent.chain_id} differs from the policy client's "
                f"registered chain {client.chain_id}"
            )
        # Newton's SDK sends null for what it leaves to the gateway's defaults
        pct = params.get("quorum_threshold_percentage")
        pct = self.config.gateway.threshold_percentage if pct is None else pct
        if isinstance(pct, bool) or not isinstance(pct, int) or not 0 < pct <= 100:
            raise _invalid("quorum_threshold_percentage must be an integer in 1..100, or null")
        quorum = params.get("quorum_number")
        if quorum not in ("0x00", "00", "0x", "", None):
            raise _invalid("quorum_number must be 00 (the reference network has one quorum)")
        timeout = params.get("timeout")
        timeout = self.config.gateway.timeout if timeout is None else timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise _invalid("timeout must be a positive number of seconds")
        signature = params.get("intent_signature")
        signature = "0x" if signature is None else signature
        if not isinstance(signature, str) or not _HEX.match("0x" + signature.removeprefix("0x")):
            raise _invalid("intent_signature must be hex (or null)")
        if signature.removeprefix("0x") and len(signature.removeprefix("0x")) != 130:
            raise _invalid("intent_signature must be a 65-byte EIP-712 signature (or null)")
        wasm_args_hex = params.get("wasm_args")
        wasm_args_hex = "0x" if wasm_args_hex is None else wasm_args_hex
        if isinstance(wasm_args_hex, str) and not wasm_args_hex.startswith("0x"):
            wasm_args_hex = "0x" + wasm_args_hex  # the SDK strips the prefix
        wasm_args = self._wasm_args(wasm_args_hex)
        x402 = wasm_args.get("x402")
        if x402 is not None:
            x402 = self._check_x402(x402, intent)
        return _TaskInput(
            client=client,
            intent=intent,
            spend_asset=spend.asset.lower(),
            spend_amount=spend.amount,
            spend_recipient=(spend.recipient or "").lower(),
            percentage=pct,
            timeout=min(float(timeout), MAX_TIMEOUT),
            intent_signature=signature if signature.startswith("0x") else "0x" + signature,
            wasm_args_hex=wasm_args_hex if isinstance(wasm_args_hex, str) else "0x",
            x402=x402,
        )

    @staticmethod
    def _wasm_args(value: Any) -> dict[str, Any]:
        if value in (None, "", "0x"):
            return {}
        if not isinstance(value, str) or not _HEX.match(value):
            raise _invalid("wasm_args must be 0x-hex of UTF-8 JSON")
        try:
            parsed = strict_loads(bytes.fromhex(value.removeprefix("0x")))
        except ValueError as exc:
            raise _invalid(f"wasm_args is not hex of acceptable UTF-8 JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise _invalid("wasm_args must encode a JSON object")
        return parsed

    @staticmethod
    def _check_x402(x402: Any, intent: TransactionIntent) -> dict[str, Any]:
        """A payment's x402 details, canonical, describing exactly the transfer authorized."""
        try:
            return canonical_x402(x402, intent)
        except AgentGuardError as exc:
            raise _invalid(f"wasm_args.x402: {exc.message}") from None

    async def create_task(
        self, key: ApiKeyEntry, rpc_id: str, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Idempotent by (API key, rpc id): a retry gets the first answer, counted once."""
        cache_key = (key.sha256, rpc_id)
        fingerprint = hashlib.sha256(canonical_json(params)).digest()
        now = self._clock()
        cached = self._idempotent.get(cache_key)
        if cached is not None and cached[0] > now - IDEMPOTENCY_TTL:
            if cached[1] != fingerprint:
                raise _invalid(
                    f"JSON-RPC id {rpc_id} was already used for a different request; "
                    "use a fresh UUID per task"
                )
            result: dict[str, Any] = await asyncio.shield(cached[2])
            return result
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._idempotent[cache_key] = (now, fingerprint, future)
        self._idempotent.move_to_end(cache_key)
        while len(self._idempotent) > IDEMPOTENCY_MAX or (
            self._idempotent and next(iter(self._idempotent.values()))[0] <= now - IDEMPOTENCY_TTL
        ):
            self._idempotent.popitem(last=False)
        try:
            result = await self._create_task(key, rpc_id, params)
        except BaseException as exc:
            self._idempotent.pop(cache_key, None)  # errors record nothing: a retry re-runs
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            elif not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: concurrent retries see it, nobody else must
            raise
        if result["status"] != "success":
            self._idempotent.pop(cache_key, None)
        future.set_result(result)
        return result

    async def _create_task(
        self, key: ApiKeyEntry, rpc_id: str, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        task = self._task_input(key, params)
        client, intent = task.client, task.intent
        intent_hash = intent.intent_hash
        task_id = keccak(
            address_word(bytes.fromhex(client.address[2:])) + intent_hash + rpc_id.encode()
        )
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
            wasm = self._wasm(
                task, reservation.history, now, intent_hash_hex, approved=approval is not None
            )
            decision, votes, errors, failure = await self._fan_out(
                task, task_id, wasm, expires_at, intent_hash, approval
            )
            result = self._result(
                task, task_id_hex, now, expires_at, wasm, decision, votes, errors, failure
            )
            if decision == "allow":
                try:
                    self.state.record(reservation, expires_at=expires_at, result=result)
                except sqlite3.IntegrityError:  # the same task from another key, concurrently
                    stored = self.state.stored_result(task_id_hex)
                    if stored is None:
                        raise
                    return stored
                recorded = True
                if approval is not None:
                    self.state.use_approval(client.address, intent_hash_hex, task_id_hex)
            elif decision == "approval_required":
                parked = self.state.park_approval(
                    policy_client=client.address,
                    intent_hash=intent_hash_hex,
                    intent=task.intent.wire(),
                    spend=wasm["spend"],
                    reasons=votes[0].reasons,
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

    def _wasm(
        self,
        task: _TaskInput,
        history: Mapping[int, WindowTotals],
        now: int,
        intent_hash_hex: str,
        *,
        approved: bool,
    ) -> dict[str, Any]:
        asset, amount = task.spend_asset, task.spend_amount
        windows: dict[str, Any] = {}
        for seconds, totals in history.items():
            spent = {a: str(v) for a, v in totals.spent.items()}
            projected = dict(spent)
            projected[asset] = str(totals.spent.get(asset, 0) + amount)
            windows[str(seconds)] = {"count": totals.count, "spent": spent, "projected": projected}
        wasm: dict[str, Any] = {
            "now": now,
            "intent_hash": intent_hash_hex,
            "approved": approved,
            "spend": task.intent.spend.wasm(),
            "history": windows,
        }
        if task.x402 is not None:
            wasm["x402"] = task.x402
        return wasm

    # -- operators -----------------------------------------------------------------------------

    async def _call_operator(
        self, link: _OperatorLink, code_hash: bytes, bodies: _Bodies, timeout: float
    ) -> Any:
        with_policy = code_hash not in link.has_code
        for _ in range(2):
            try:
                status, content = await link.http.post(bodies.get(with_policy), timeout)
            except TimeoutError:
                raise _OperatorFailure(
                    "timeout", "operator did not answer in time", retryable=True
                ) from None
            except HTTPError as exc:
                raise _OperatorFailure(
                    "unreachable", f"operator unreachable: {exc}", retryable=True
                ) from None
            if status != 200:
                raise _OperatorFailure(
                    f"http_{status}", f"operator answered HTTP {status}", retryable=status >= 500
                )
            try:
                reply = strict_loads(content)
            except ValueError:
                raise _OperatorFailure(
                    "invalid_response", "operator answered non-JSON", retryable=True
                ) from None
            if not isinstance(reply, dict):
                raise _OperatorFailure(
                    "invalid_response", "operator answer is not an object", retryable=True
                )
            error = reply.get("error")
            if isinstance(error, dict):
                code = error.get("code")
                if code == POLICY_REQUIRED and not with_policy:
                    link.has_code.discard(code_hash)  # the operator restarted: send the code
                    with_policy = True
                    continue
                raise _OperatorFailure(
                    f"rpc_{code}",
                    str(error.get("message", "operator error"))[:500],
                    retryable=False,
                    rpc_code=code if isinstance(code, int) else None,
                )
            link.has_code.add(code_hash)
            return reply.get("result")
        raise _OperatorFailure(
            "invalid_response", "operator kept asking for the policy", retryable=False
        )

    @staticmethod
    def _vote(
        link: _OperatorLink,
        reply: Any,
        *,
        intent_hash_hex: str,
        policy_id_hex: str,
        digests: Mapping[bool, bytes],
    ) -> tuple[str, _Vote]:
        """Accept an operator's answer only if its signature verifies against our digest."""
        if not isinstance(reply, dict):
            raise _OperatorFailure("invalid_response", "result is not an object", retryable=False)
        decision = reply.get("decision")
        if decision not in _DECISIONS:
            raise _OperatorFailure(
                "invalid_response", f"unknown decision {decision!r:.40}", retryable=False
            )
        if str(reply.get("intent_hash", "")).lower() != intent_hash_hex:
            raise _OperatorFailure(
                "mismatch", "operator evaluated a different intent", retryable=False
            )
        if str(reply.get("policy_id", "")).lower() != policy_id_hex:
            raise _OperatorFailure(
                "mismatch",
                "operator computed a different policy id (different policy code or params)",
                retryable=False,
            )
        reasons = reply.get("reasons", [])
        if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
            raise _OperatorFailure(
                "invalid_response", "reasons must be a list of strings", retryable=False
            )
        signature = reply.get("signature")
        try:
            if not isinstance(signature, str) or not _HEX.match(signature):
                raise MalformedSignature("signature is not hex")
            raw = bytes.fromhex(signature.removeprefix("0x"))
            signer = recover_signer(digests[decision == "allow"], raw)
        except MalformedSignature as exc:
            raise _OperatorFailure("bad_signature", exc.message, retryable=False) from None
        if signer != link.address_bytes:
            raise _OperatorFailure(
                "bad_signature",
                f"signature recovers to 0x{signer.hex()}, not to the operator's registered key",
                retryable=False,
            )
        return decision, _Vote(link, [r[:500] for r in reasons[:32]], "0x" + raw.hex())

    async def _fan_out(
        self,
        task: _TaskInput,
        task_id: bytes,
        wasm: dict[str, Any],
        expires_at: int,
        intent_hash: bytes,
        approval: dict[str, Any] | None = None,
    ) -> tuple[str | None, list[_Vote], list[dict[str, Any]], str | None]:
        client = task.client
        request: dict[str, Any] = {
            "task_id": "0x" + task_id.hex(),
            "policy_client": client.address,
            "chain_id": task.intent.chain_id,
            "intent": task.intent.wire(),
            "policy_code_hash": "0x" + client.code_hash.hex(),
            "params": client.params,
            "expire_after": client.expire_after,
            "expires_at": expires_at,
            "registration": client.registration_json,
            "wasm": wasm,
        }
        if approval is not None:
            request["approval"] = approval  # each operator checks it before trusting approved
        bodies = _Bodies(request, client.material)
        pc_bytes = bytes.fromhex(client.address[2:])
        digests = {
            allow: attestation_digest(
                chain_id=task.intent.chain_id,
                policy_client=pc_bytes,
                task_id=task_id,
                policy_id=client.policy_id,
                intent_hash=intent_hash,
                allow=allow,
                expires_at=expires_at,
            )
            for allow in (True, False)
        }
        expected = {
            "intent_hash_hex": "0x" + intent_hash.hex(),
            "policy_id_hex": "0x" + client.policy_id.hex(),
        }
        total = len(self._operators)
        needed = -(-total * task.percentage // 100)
        # Hedged fan-out: ask a quorum's worth of operators first (rotating, so load and fault
        # reports spread), and widen to the rest when one fails, when they disagree, or when
        # the answers are slower than usual. On a small host every extra evaluation competes
        # for the same cores; a healthy quorum never needs it.
        start = self._rotation % total
        self._rotation += 1
        order = self._operators[start:] + self._operators[:start]
        waiting = list(order)
        calls: dict[asyncio.Future[Any], _OperatorLink] = {}

        def launch(count: int) -> None:
            for _ in range(min(count, len(waiting))):
                link = waiting.pop(0)
                call = asyncio.ensure_future(
                    self._call_operator(link, client.code_hash, bodies, task.timeout)
                )
                calls[call] = link

        launch(needed)
        votes: dict[str, list[_Vote]] = {}
        errors: list[dict[str, Any]] = []
        failures: list[_OperatorFailure] = []
        winner: str | None = None
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + task.timeout
        hedge_at = started + self._hedge_delay()
        pending = set(calls)
        while pending and winner is None:
            now = loop.time()
            if now >= deadline:
                break
            wake = deadline if not waiting else min(deadline, hedge_at)
            done, pending = await asyncio.wait(
                pending, timeout=max(0.0, wake - now), return_when=asyncio.FIRST_COMPLETED
            )
            widen = 0
            for call in done:
                link = calls[call]
                try:
                    decision, vote = self._vote(link, call.result(), digests=digests, **expected)
                except _OperatorFailure as exc:
                    failures.append(exc)
                    errors.append(self._operator_error(link, exc))
                    widen += 1
                    continue
                except Exception as exc:  # never let one operator break the task
                    internal = _OperatorFailure("internal", type(exc).__name__, retryable=True)
                    failures.append(internal)
                    errors.append(self._operator_error(link, internal))
                    widen += 1
                    continue
                votes.setdefault(decision, []).append(vote)
                if winner is None and len(votes[decision]) * 100 >= total * task.percentage:
                    winner = decision
                    self._observe_latency(loop.time() - started)
            if winner is None and waiting:
                if len(votes) > 1 or loop.time() >= hedge_at:
                    widen = len(waiting)  # disagreement or slowness: ask everyone left
                if widen:
                    before = set(calls)
                    launch(widen)
                    pending |= set(calls) - before
        for call in pending:
            if winner is None:
                call.cancel()
                late = _OperatorFailure(
                    "timeout", f"no answer within {task.timeout:g}s", retryable=True
                )
                failures.append(late)
                errors.append(self._operator_error(calls[call], late))
            self._background.add(call)  # finishes in the background, keeping its connection
            call.add_done_callback(self._forget)
        if winner is not None:
            return winner, votes[winner], errors, None
        if (
            failures
            and len(failures) == total
            and all(f.rpc_code == POLICY_EVALUATION_ERROR for f in failures)
        ):
            raise RPCError(POLICY_EVALUATION_ERROR, failures[0].message)
        tally = ", ".join(f"{d}: {len(v)}" for d, v in sorted(votes.items())) or "no valid answers"
        message = (
            f"quorum_not_reached: {needed} of {total} operators must agree "
            f"({task.percentage}%); got {tally}; {len(errors)} operator error(s)"
        )
        if errors:
            message += ": " + "; ".join(f"{e['operator_address']}: {e['message']}" for e in errors)
        return None, [], errors, message

    def _forget(self, call: asyncio.Future[Any]) -> None:
        self._background.discard(call)
        if not call.cancelled():
            call.exception()  # mark retrieved; late answers are not needed

    def _operator_error(self, link: _OperatorLink, failure: _OperatorFailure) -> dict[str, Any]:
        """Newton's ``OperatorError``: numeric ``error_code``, ``timestamp`` as a string (RFC
        3339, UTC); ``error_type`` is the reference network's name for the code."""
        stamp = datetime.datetime.fromtimestamp(int(self._clock()), datetime.UTC)
        return {
            "operator_address": link.address,
            "operator_id": link.operator_id,
            "error_code": failure.number,
            "error_type": failure.code,
            "message": failure.message,
            "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "retryable": failure.retryable,
        }

    def _result(
        self,
        task: _TaskInput,
        task_id_hex: str,
        now: int,
        expires_at: int,
        wasm: dict[str, Any],
        decision: str | None,
        votes: list[_Vote],
        errors: list[dict[str, Any]],
        failure: str | None,
    ) -> dict[str, Any]:
        client = task.client
        wire = task.intent.wire()
        policy_id_hex = "0x" + client.policy_id.hex()
        result: dict[str, Any] = {
            "task_id": task_id_hex,
            "status": "success" if decision is not None else "failed",
            "error": failure,
            "timestamp": now,
            "task": {
                "taskId": task_id_hex,
                "policyClient": client.address,
                "taskCreatedBlock": REFERENCE_BLOCK,
                "quorumThresholdPercentage": task.percentage,
                "intent": wire,
                "intentSignature": task.intent_signature,
                "wasmArgs": task.wasm_args_hex,
                "quorumNumbers": "0x00",
                "initializationTimestamp": now,
            },
            "task_response": None,
            "reference_block": REFERENCE_BLOCK,
            "expiration": expires_at,
            "operator_errors": errors,
            "attestation": None,
        }
        if decision is None:
            return result
        result["task_response"] = {
            "task_id": task_id_hex,
            "policy_client": client.address,
            "policy_id": policy_id_hex,
            "policy_address": NATIVE_ASSET,
            "intent": wire,
            "intent_signature": task.intent_signature,
            "evaluation_result": _TRUE_WORD if decision == "allow" else _FALSE_WORD,
            "policy_task_data": {
                "policyId": policy_id_hex,
                "policyAddress": NATIVE_ASSET,
                "policy": "0x",
                "policyCodeHash": "0x" + client.code_hash.hex(),
                "policyData": [
                    {
                        "wasmArgs": task.wasm_args_hex,
                        "data": "0x" + canonical_json(wasm).hex(),
                        "policyDataAddress": NATIVE_ASSET,
                        "expireBlock": 0,
                    }
                ],
            },
            "policy_config": {
                "policyParams": client.params_hex,
                "expireAfter": client.expire_after,
            },
            "initialization_timestamp": now,
        }
        result["attestation"] = {
            "scheme": "ecdsa",
            "decision": decision,
            "task_id": task_id_hex,
            "policy_id": policy_id_hex,
            "policy_client": client.address,
            "intent_hash": wasm["intent_hash"],
            "expires_at": expires_at,
            "signatures": [{"operator": v.link.address, "signature": v.signature} for v in votes],
            "reasons": votes[0].reasons,
        }
        return result

    # -- the other methods ---------------------------------------------------------------------

    def _simulated_task(self, key: ApiKeyEntry, params: Mapping[str, Any]) -> _TaskInput:
        """Newton's ``newt_simulateTask`` params, ``{intent, policy_task_data}``: the policy
        client is the one registered under ``policyId``; the x402 details of a payment come
        in ``policyData[].wasmArgs``."""
        data = params.get("policy_task_data")
        if not isinstance(data, dict):
            raise _invalid("policy_task_data must be an object {policyId, policyAddress, ...}")
        policy_id = data.get("policyId", data.get("policy_id"))
        if not isinstance(policy_id, str) or not _B32.match(policy_id):
            raise _invalid("policy_task_data.policyId must be 0x followed by 64 hex digits")
        wanted = bytes.fromhex(policy_id[2:])
        client = next((c for c in self._clients.values() if c.policy_id == wanted), None)
        if client is None:
            raise _invalid(f"no policy client is registered under policy id {policy_id}")
        entries = data.get("policyData", data.get("policy_data")) or []
        if not isinstance(entries, list) or len(entries) > 1:
            raise _invalid("policy_task_data.policyData must be a list of at most one entry")
        wasm_args: Any = None
        if entries:
            entry = entries[0]
            if not isinstance(entry, dict):
                raise _invalid("policy_task_data.policyData[0] must be an object")
            wasm_args = entry.get("wasmArgs", entry.get("wasm_args"))
        task_params = {
            "policy_client": client.address,
            "intent": params.get("intent"),
            "wasm_args": wasm_args,
        }
        return self._task_input(key, task_params)

    async def simulate(self, key: ApiKeyEntry, params: Mapping[str, Any]) -> dict[str, Any]:
        """Evaluate once here, sign nothing, record nothing; Newton's result shape
        ``{success, result: {allow, reason}, error, details}``, with ``decision`` and
        ``reasons`` added inside ``result`` (``approval_required`` has no Newton spelling)."""
        task = self._simulated_task(key, params)
        client, intent = task.client, task.intent
        now = int(self._clock())
        history = self.state.totals(
            policy_client=client.address, agent=intent.from_, windows=client.windows, now=now
        )
        intent_hash_hex = "0x" + intent.intent_hash.hex()
        approved = self.state.approved(client.address, intent_hash_hex, now)
        wasm = self._wasm(task, history, now, intent_hash_hex, approved=approved)
        if self._engine is None:
            from agentguard.policies._engine import PolicyEngine

            self._engine = PolicyEngine()
        from agentguard.policies._engine import PolicyEngineError

        parsed = intent.parsed()
        try:
            evaluation = self._engine.evaluate(
                client.policy, input=parsed, params=client.params, wasm=wasm
            )
        except PolicyEngineError as exc:
            return {
                "success": False,
                "result": None,
                "error": f"policy evaluation failed: {exc}",
                "details": None,
            }
        reasons = list(evaluation.reasons)
        return {
            "success": True,
            "result": {
                "allow": evaluation.decision == "allow",
                "reason": "; ".join(reasons) or evaluation.decision,
                "decision": evaluation.decision,
                "reasons": reasons,
            },
            "error": None,
            "details": {"parsed_intent": parsed, "policy_id": "0x" + client.policy_id.hex()},
        }

    def network_info(self) -> dict[str, Any]:
        """What a client may rely on: ECDSA quorum attestations, and ``newt_createTask`` is
        deduplicated by (API key, JSON-RPC id), so a retry with the same id is the same task.
        Deliberately no operator list: a client takes its operators from its own config."""
        return {
            "scheme": "ecdsa",
            "dedupes": True,
            "network": "agentguard-reference",
            "expiry": "unix-seconds",
        }

    def _task_for(self, key: ApiKeyEntry, params: Mapping[str, Any]) -> str:
        task_id = params.get("task_id")
        if not isinstance(task_id, str) or not _B32.match(task_id):
            raise _invalid("task_id must be 0x followed by 64 hex digits")
        task_id = task_id.lower()
        record = self.state.task(task_id)
        if record is None:
            raise _invalid(f"no attested task {task_id} (only allowed tasks are recorded)")
        if not key.may_use(record.policy_client):
            raise RPCError(
                UNAUTHORIZED, "this API key may not use that task's policy client", http_status=403
            )
        return task_id

    def release(self, key: ApiKeyEntry, params: Mapping[str, Any]) -> dict[str, Any]:
        task_id = self._task_for(key, params)
        record = self.state.task(task_id)
        # Given back at once only if nobody need ask the chain; otherwise the sweep decides.
        trusted = (
            self.usage_check is None
            and record is not None
            and self.trusts_release(record.policy_client)
        )
        status = self.state.release(task_id, int(self._clock()), trusted=trusted)
        if status is None:
            current = record.status if record else "unknown"
            raise _invalid(f"task {task_id} is {current}; only an attested task can be released")
        counts_until = record.expires_at if record and status == "releasing" else None
        return {"task_id": task_id, "status": status, "counts_until": counts_until}

    def commit(self, key: ApiKeyEntry, params: Mapping[str, Any]) -> dict[str, Any]:
        task_id = self._task_for(key, params)
        outcome = params.get("outcome", "")
        if not isinstance(outcome, str) or len(outcome) > 1000:
            raise _invalid(
                "outcome must be a string (e.g. a transaction hash) of at most 1000 chars"
            )
        if not self.state.commit(task_id, outcome):
            record = self.state.task(task_id)
            status = record.status if record else "unknown"
            raise _invalid(f"task {task_id} is {status}; only an attested task can be committed")
        return {"task_id": task_id, "status": "committed"}

    # -- human approvals ------------------------------------------------------------------------

    def _request_key(self, params: Mapping[str, Any]) -> tuple[_Client, str]:
        address = _address(params, "policy_client")
        client = self._clients.get(address.lower())
        if client is None:
            raise _invalid(f"policy client {address} is not registered with this gateway")
        intent_hash = params.get("intent_hash")
        if not isinstance(intent_hash, str) or not _B32.match(intent_hash):
            raise _invalid("intent_hash must be 0x followed by 64 hex digits")
        return client, intent_hash.lower()

    def list_approvals(self, key: ApiKeyEntry, params: Mapping[str, Any]) -> dict[str, Any]:
        """``agentguard_listApprovals`` (admin): parked requests, newest first."""
        self._require_admin(key)
        status = params.get("status")
        if status is not None and status not in STATUSES:
            raise _invalid(f"status must be one of {', '.join(STATUSES)}")
        now = int(self._clock())
        if "intent_hash" in params:  # one request
            client, intent_hash = self._request_key(params)
            request = self.state.approval_request(client.address, intent_hash, now)
            found = [request] if request and status in (None, request.status) else []
        else:
            client_filter = _address(params, "policy_client") if "policy_client" in params else None
            found = self.state.approval_requests(now, status=status, policy_client=client_filter)
        return {"approvals": [r.to_json() for r in found]}

    def approve(self, key: ApiKeyEntry, params: Mapping[str, Any]) -> dict[str, Any]:
        """``agentguard_approve`` (admin): deliver an approver's signed approval for a pending
        request. Checked here as each operator will check it again (the gateway's word on an
        approval counts for nothing with them)."""
        self._require_admin(key)
        try:
            approval = SignedApproval.from_json(params.get("approval"))
        except ConfigurationError as exc:
            raise _invalid(
                f"{exc.message} (approvals are signed by an approver key: "
                "'agentguard approvals approve' or the approval console)"
            ) from None
        address = "0x" + approval.policy_client.hex()
        client, intent_hash = self._request_key(
            {"policy_client": address, "intent_hash": "0x" + approval.intent_hash.hex()}
        )
        now = int(self._clock())
        request = self.state.approval_request(client.address, intent_hash, now)
        if request is None or request.status != "pending":
            current = request.status if request else "unknown"
            raise _invalid(f"approval request {intent_hash} is {current}, not pending")
        if approval.expires_at > request.expires_at:
            raise _invalid("the approval outlives the request it approves")
        try:
            approval.check(
                client.registration,
                intent_hash=approval.intent_hash,
                chain_id=client.chain_id,
                now=now,
            )
        except ConfigurationError as exc:
            raise _invalid(exc.message) from None
        if not self.state.approve(
            client.address,
            intent_hash,
            approval=approval.to_json(),
            approver=approval.signer_hex,
            expires_at=approval.expires_at,
            now=now,
        ):
            raise _invalid(f"approval request {intent_hash} is no longer pending")
        return {
            "policy_client": client.address,
            "intent_hash": intent_hash,
            "status": "approved",
            "approver": approval.signer_hex,
            "expires_at": approval.expires_at,
        }

    def reject(self, key: ApiKeyEntry, params: Mapping[str, Any]) -> dict[str, Any]:
        """``agentguard_reject`` (admin): a pending (or approved, unclaimed) request is rejected
        for good. A rejection needs no approver signature: refusing is always safe."""
        self._require_admin(key)
        client, intent_hash = self._request_key(params)
        now = int(self._clock())
        if not self.state.reject(client.address, intent_hash, now):
            request = self.state.approval_request(client.address, intent_hash, now)
            current = request.status if request else "unknown"
            raise _invalid(f"approval request {intent_hash} is {current}; it cannot be rejected")
        return {"policy_client": client.address, "intent_hash": intent_hash, "status": "rejected"}

    def approval_status(self, key: ApiKeyEntry, params: Mapping[str, Any]) -> dict[str, Any]:
        """``agentguard_approvalStatus`` (any key that may use the client): for the waiting
        agent. Only a hint: whatever it says, operators sign only on a valid approval."""
        client, intent_hash = self._request_key(params)
        if not key.may_use(client.address):
            raise RPCError(
                UNAUTHORIZED,
                f"this API key may not use policy client {client.address}",
                http_status=403,
            )
        request = self.state.approval_request(client.address, intent_hash, int(self._clock()))
        return {
            "policy_client": client.address,
            "intent_hash": intent_hash,
            "status": request.status if request else "unknown",
            "expires_at": request.expires_at if request else None,
        }

    async def dispatch(
        self, key: ApiKeyEntry, rpc_id: Any, method: str, params: Mapping[str, Any]
    ) -> Any:
        if method == "newt_createTask":
            # Newton's SDK sends no id at all: such a request is a task of its own (nothing
            # to deduplicate on). Any string id deduplicates, as a UUID does.
            if rpc_id is None:
                return await self._create_task(key, str(uuid.uuid4()), params)
            if not isinstance(rpc_id, str) or not 0 < len(rpc_id) <= 200:
                raise RPCError(INVALID_REQUEST, "id must be a string of 1..200 characters")
            return await self.create_task(key, rpc_id, params)
        if method == "agentguard_networkInfo":
            return self.network_info()
        if method == "newt_simulateTask":
            return await self.simulate(key, params)
        if method == "agentguard_releaseTask":
            return self.release(key, params)
        if method == "agentguard_commitTask":
            return self.commit(key, params)
        if method == "agentguard_approve":
            return self.approve(key, params)
        if method == "agentguard_reject":
            return self.reject(key, params)
        if method == "agentguard_listApprovals":
            return self.list_approvals(key, params)
        if method == "agentguard_approvalStatus":
            return self.approval_status(key, params)
        if method == "agentguard_registerPolicyClient":
            self._require_admin(key)
            result = self.register(params)
            client = self._clients[result["policy_client"].lower()]
            result["operators_missed"] = await self.deliver([client])
            return result
        raise RPCError(METHOD_NOT_FOUND, f"unknown method {method!r}")


class _OnItsChain:
    """The chain usage check, asked only about policy clients registered on the chain its RPC
    serves: about a vault on another chain it can tell nothing (no code at that address here,
    or someone else's contract), so the answer is "cannot tell" and a release stays counted."""

    def __init__(self, chain: ChainUsageCheck, chain_of: Callable[[str], int | None]) -> None:
        self._chain = chain
        self._chain_of = chain_of

    def was_used(self, task: TaskRecord) -> bool | Pending | None:
        if self._chain_of(task.policy_client) != self._chain.chain_id:
            return None
        return self._chain.was_used(task)


class _Bodies:
    """The operator request, serialized once without and (only if needed) once with the code."""

    def __init__(self, request: dict[str, Any], material: dict[str, Any]) -> None:
        self._request = request
        self._material = material
        self._lean: bytes | None = None
        self._full: bytes | None = None

    def get(self, with_policy: bool) -> bytes:
        if with_policy:
            if self._full is None:
                self._full = self._encode({**self._request, "policy": self._material})
            return self._full
        if self._lean is None:
            self._lean = self._encode(self._request)
        return self._lean

    @staticmethod
    def _encode(request: dict[str, Any]) -> bytes:
        envelope = {"jsonrpc": "2.0", "id": 1, "method": "newt_evaluateAndSign", "params": request}
        return json.dumps(envelope, separators=(",", ":")).encode()


@dataclass(frozen=True)
class _TaskInput:
    client: _Client
    intent: TransactionIntent
    spend_asset: str
    spend_amount: int
    spend_recipient: str
    percentage: int
    timeout: float
    intent_signature: str
    wasm_args_hex: str
    x402: dict[str, Any] | None


def create_app(gateway: Gateway) -> Starlette:
    async def rpc(request: Request) -> Response:
        rpc_id: Any = None
        try:
            key = gateway.authenticate(request.headers.get("authorization"))
            rpc_id, method, params = await read_request(request)
            return result_response(rpc_id, await gateway.dispatch(key, rpc_id, method, params))
        except RPCError as exc:
            return error_response(exc.rpc_id if rpc_id is None else rpc_id, exc)
        except Exception as exc:  # a bug must still answer JSON-RPC, never leak details
            log.error("internal error", error_type=type(exc).__name__, error=str(exc))
            return error_response(rpc_id, RPCError(INTERNAL_ERROR, "internal gateway error"))

    async def health(request: Request) -> Response:
        # the pid lets a launcher tell its own gateway from another one on the same port
        return json_response(
            {"status": "ok", "operators": len(gateway.config.operators), "pid": os.getpid()}
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.deliver()
        sweeper = asyncio.ensure_future(gateway.sweep_forever())
        try:
            yield
        finally:
            sweeper.cancel()
            await gateway.close()

    return Starlette(
        routes=[Route("/rpc", rpc, methods=["POST"]), Route("/health", health)],
        lifespan=lifespan,
    )


def _load_usage_check(spec: str) -> UsageCheck:
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot load usage check {spec!r}: {exc}") from None
    check: UsageCheck = factory()
    return check


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging("INFO")  # a server process: its stderr is its log file
    import uvicorn

    parser = argparse.ArgumentParser(
        prog="python -m agentguard.network.gateway", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", required=True, help="network config JSON (see config.py)")
    parser.add_argument("--port", type=int, help="override gateway.port")
    parser.add_argument(
        "--usage-check", help="module:factory returning a UsageCheck for expired attestations"
    )
    args = parser.parse_args(argv)
    try:
        config = NetworkConfig.load(args.config)
        state = State(config.gateway.state_db)
        chain = None
        if config.gateway.chain_rpc:
            from agentguard.network.usage import ChainUsageCheck

            chain = ChainUsageCheck(config.gateway.chain_rpc)
        spec = args.usage_check or config.gateway.usage_check
        gateway = Gateway(
            config,
            state,
            usage_check=_load_usage_check(spec) if spec else None,
            chain=chain,
        )
        for entry in config.policy_clients:
            spec_policy = entry.get("policy")
            if (
                isinstance(spec_policy, str)
                and not Path(spec_policy).is_absolute()
                and (Path(args.config).parent / spec_policy).is_dir()
            ):
                entry = {**entry, "policy": str(Path(args.config).parent / spec_policy)}
            gateway.register(entry, allow_paths=True)
    except (AgentGuardError, RPCError, OSError, ValueError, sqlite3.Error) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    port = args.port or config.gateway.port
    print(
        f"gateway listening on http://{config.gateway.host}:{port}/rpc "
        f"with {len(config.operators)} operators",
        flush=True,
    )
    uvicorn.run(
        create_app(gateway),
        host=config.gateway.host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
