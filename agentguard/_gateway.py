"""``NewtonGateway``: the authorizer that speaks Newton's gateway JSON-RPC.

The same client talks to Newton's real gateway (URL + API key) and to agentguard's reference
network. Request building and response parsing are pure functions shared by the sync and the
async client; only the I/O differs, so both behave identically. A plain ``http://`` gateway is
reached through the lean keep-alive client (``agentguard._http_client``), ``https://`` (and
proxies, injected transports, trio) through httpx.

Retries happen only where a second try is safe. Newton documents no idempotency,
so a ``newt_createTask`` that may have reached the gateway is never sent again (a second task
could be created): only a request that provably never left (connection refused, DNS failure,
connect timeout, a write refused before its first byte) is retried, unless the gateway is
known to deduplicate by JSON-RPC id (``dedupe=True``, or the reference network saying so in
``agentguard_networkInfo``); then
timeouts, HTTP 5xx and 429 are retried too, with the same id. Reads (simulation, approval
status) are retried on any transport failure. A deny, an RPC error or an answer we cannot
parse is final.

Every answer is read bounded (size, time, encoding, JSON depth) and type-checked field by
field before use, so whatever a gateway sends ends as an ``Attestation`` or an
``AuthorizationError``; never as a dependency's exception, never as a hang.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import random
import re
import sys
import time
import urllib.request
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Protocol, cast

import anyio
import httpx

from agentguard._attestation import Attestation, with_policy_data
from agentguard._exceptions import (
    AuthorizationError,
    ConfigurationError,
    DataProviderError,
    GatewayAuthError,
    GatewayProtocolError,
    GatewayRPCError,
    GatewayUnavailable,
    IncompatiblePolicyVersion,
    IntentError,
    MalformedAttestation,
    OperatorNotRegistered,
    PolicyContractError,
    PolicyEvaluationError,
    PolicyProbeUnavailable,
    QuorumNotReached,
    TierQuorumNotReached,
)
from agentguard._http_client import AsyncPool, Origin, SyncPool, TransportError
from agentguard._intent import PaymentIntent, TransactionIntent, wasm_args_hex
from agentguard._json import json_bytes, one_spelling, preview, strict_loads
from agentguard._logging import get_logger
from agentguard._redact import register_secret
from agentguard._task_id import canonical_x402, task_id
from agentguard._tiers import known

__all__ = [
    "NEWTON_TASK_TIMEOUT",
    "ApprovalStatus",
    "AsyncAuthorizer",
    "AsyncNewtonGateway",
    "Authorizer",
    "NewtonGateway",
    "Simulation",
    "is_newton_url",
    "probe_network",
]

log = get_logger("agentguard.gateway")

Intent = TransactionIntent | PaymentIntent
_MAX_BODY = 1 << 20  # a gateway answer is a few KiB; refuse to parse megabytes of anything
_MAX_OPERATOR_ERRORS = 256

_RPC_ERRORS: dict[int, type[GatewayRPCError]] = {
    -32615: PolicyEvaluationError,
    -32616: PolicyContractError,
    -32617: OperatorNotRegistered,
    -32618: IncompatiblePolicyVersion,
    -32619: IncompatiblePolicyVersion,
    -32620: DataProviderError,
    -32623: PolicyProbeUnavailable,
    -32002: GatewayAuthError,
}


class Authorizer(Protocol):
    """What a ``Guard`` needs from the remote side: a decision, and bookkeeping after it.

    ``NewtonGateway`` is the implementation; anything else that returns attestations a
    ``Verifier`` accepts (a test quorum, another transport) can stand in.
    """

    def authorize(
        self, intent: Intent, *, wasm_args: Mapping[str, Any] | None = None
    ) -> Attestation: ...

    def release(self, task_id: str) -> None: ...

    def commit(self, task_id: str, outcome: str) -> None: ...

    def close(self) -> None: ...


class AsyncAuthorizer(Protocol):
    """``Authorizer`` for asyncio (``AsyncNewtonGateway``)."""

    async def authorize(
        self, intent: Intent, *, wasm_args: Mapping[str, Any] | None = None
    ) -> Attestation: ...

    async def release(self, task_id: str) -> None: ...

    async def commit(self, task_id: str, outcome: str) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Simulation:
    """A dry run: what the policy would say, with nothing signed and nothing recorded."""

    decision: str
    reasons: tuple[str, ...]
    policy_id: str | None
    raw: Mapping[str, Any]


@dataclass(frozen=True)
class ApprovalStatus:
    """What the gateway says about the human approval of one intent. Only a hint for a waiting
    agent: operators sign only on a valid signed approval, whatever this says."""

    intent_hash: str
    status: Literal["pending", "approved", "rejected", "expired", "used", "unknown"]
    expires_at: int | None


_APPROVAL_STATUSES = ("pending", "approved", "rejected", "expired", "used", "unknown")


# -- pure request/response logic -------------------------------------------------------------


def _bytes_field(value: Any, field: str) -> bytes:
    """Newton returns Solidity ``bytes`` as JSON number arrays; we also accept 0x-hex."""
    try:
        return json_bytes(value)
    except ValueError as exc:
        raise GatewayProtocolError(f"{field}: {exc}") from None


_ABI_STRING_TRUE = b"true" + b"\x00" * 28


def _evaluation_allows(result: bytes) -> bool:
    """Newton's ``TaskLib.evaluateResult`` byte for byte (newton-contracts
    ``src/libraries/TaskLib.sol``): exactly 32 bytes whose word is 1 (ABI ``bool true``), or at
    least 96 bytes whose second word is 4 and whose third is ``"true"`` zero-padded (ABI string).
    Newton reads neither the offset word nor anything past the third word, so neither do we:
    the decision must be the one its contracts reach. Every other form is deny, never a revert.
    """
    if len(result) == 32:
        return int.from_bytes(result, "big") == 1
    if len(result) >= 96:
        return int.from_bytes(result[32:64], "big") == 4 and result[64:96] == _ABI_STRING_TRUE
    return False


class _Body:
    """Reads one answer body, bounded in size, in time and in what its encoding may expand to.

    Sans-IO: the sync and async clients feed it raw chunks. We ask for ``identity``; a body
    labelled ``gzip``/``deflate`` anyway is decoded here with an output limit (a small
    compressed body must not inflate to gigabytes), and any other encoding is refused.
    """

    def __init__(
        self, call: _Call, headers: Mapping[str, str], deadline: float, preread: bool
    ) -> None:
        """``headers`` with lower-case names (or httpx's case-blind ``Headers``); ``preread``:
        an in-memory response (httpx.MockTransport) that httpx already read and decoded."""
        self.call = call
        self.preread = preread
        self._deadline = deadline
        self._raw = 0
        self._out = bytearray()
        length = headers.get("content-length", "")
        if length.isascii() and length.isdigit() and int(length) > _MAX_BODY:
            raise self._oversized(f"announces {int(length)} bytes")
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if self.preread:
            encoding = "identity"
        self._encoding = encoding
        self._inflate: Any = None
        if encoding in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._inflate = zlib.decompressobj()
        elif encoding not in ("identity", ""):
            raise GatewayProtocolError(
                f"gateway labelled its answer to {call.method} Content-Encoding {encoding[:40]!r}, "
                "which this client does not accept (it asks for identity)"
            )

    def _oversized(self, detail: str) -> GatewayProtocolError:
        return GatewayProtocolError(
            f"gateway answer to {self.call.method} {detail}; answers over {_MAX_BODY} bytes "
            "are refused unread"
        )

    def feed(self, chunk: bytes) -> None:
        if time.monotonic() > self._deadline:
            raise GatewayUnavailable(
                f"gateway answer to {self.call.method} was still arriving when its time ran "
                "out (a stalled or slow-drip body)"
            )
        self._raw += len(chunk)
        if self._raw > _MAX_BODY:
            raise self._oversized(f"exceeds {_MAX_BODY} bytes")
        if self._inflate is None:
            self._out += chunk
            return
        room = _MAX_BODY - len(self._out)
        try:
            self._out += self._inflate.decompress(chunk, room + 1)
        except zlib.error:
            raise self._not_encoded() from None
        if len(self._out) > _MAX_BODY or self._inflate.unconsumed_tail:
            raise self._oversized(f"inflates past {_MAX_BODY} bytes ({self._encoding})")

    def finish(self) -> bytes:
        if self._inflate is not None and (not self._inflate.eof or self._inflate.unused_data):
            raise self._not_encoded()
        return bytes(self._out)

    def _not_encoded(self) -> GatewayProtocolError:
        return GatewayProtocolError(
            f"gateway labelled its answer to {self.call.method} {self._encoding!r} but the body "
            f"is not complete {self._encoding} data"
        )


_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))
"""``json.dumps(..., separators=(",", ":"))`` without building an encoder per call."""


def _call_id() -> str:
    """A random (version 4) UUID's text, as ``str(uuid.uuid4())`` spells it, without the
    ``UUID`` object: every call of a payment's authorization makes one."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _Call:
    """One JSON-RPC call: its id is fixed so retries are idempotent at the gateway."""

    def __init__(self, method: str, params: Mapping[str, Any], timeout: float) -> None:
        self.id = _call_id()
        self.method = method
        self.timeout = timeout
        self.body = _COMPACT_JSON.encode(
            {"jsonrpc": "2.0", "id": self.id, "method": method, "params": params}
        ).encode()

    def start(
        self, status: int, headers: Mapping[str, str], deadline: float, preread: bool = False
    ) -> _Body:
        """Judge the status line and headers before reading any body; ``deadline`` (monotonic)
        is when this attempt, which started before the request was sent, must be over."""
        if status == 429 or status >= 500:
            raise GatewayUnavailable(f"gateway answered HTTP {status} to {self.method}")
        if 300 <= status < 400:
            location = headers.get("location", "")[:200]
            raise GatewayProtocolError(
                f"gateway answered {self.method} with a redirect (HTTP {status}) to "
                f"{location or 'nowhere'!r}; redirects are never followed, so the request and "
                "its API key stay with the configured host. Configure the final gateway URL."
            )
        return _Body(self, headers, deadline, preread)

    def parse(self, status: int, raw: bytes) -> Any:
        try:
            doc = strict_loads(raw)
        except ValueError as exc:
            if status in (401, 403):
                raise GatewayAuthError("API key rejected", code=-32002) from None
            raise GatewayProtocolError(
                f"gateway answered {self.method} with HTTP {status} and a body that is not "
                f"acceptable JSON ({len(raw)} bytes: {exc})"
            ) from None
        if not isinstance(doc, dict):
            raise GatewayProtocolError(f"gateway answer is {preview(doc)}, not a JSON-RPC object")
        error = doc.get("error")
        if error is not None:
            raise _rpc_error(error, status)
        if status in (401, 403):
            raise GatewayAuthError("API key rejected", code=-32002)
        if status != 200:
            raise GatewayProtocolError(f"gateway answered HTTP {status} without a JSON-RPC error")
        if doc.get("jsonrpc") != "2.0" or doc.get("id") != self.id or "result" not in doc:
            raise GatewayProtocolError(
                f"gateway answer is not the JSON-RPC 2.0 response to this {self.method} (wrong "
                "jsonrpc version, id mismatch or no result)"
            )
        return doc["result"]


def _rpc_error(error: Any, status: int) -> AuthorizationError:
    code = error.get("code") if isinstance(error, dict) else None
    if type(code) is not int and status in (401, 403):  # whatever the body says
        return GatewayAuthError(f"API key rejected (HTTP {status})", code=-32002)
    if type(code) is not int:
        return GatewayProtocolError(
            "gateway sent a malformed JSON-RPC error object (no integer code)"
        )
    message = error.get("message")
    message = message[:500] if isinstance(message, str) else "(no message)"
    cls = _RPC_ERRORS.get(code)
    if cls is None and status in (401, 403):
        cls = GatewayAuthError
    if cls is None:
        hint = None
        if code == -32602:
            hint = "The gateway rejected the request's parameters; fix the intent or config."
        elif code == -32601:
            hint = "The gateway does not know this method; check the gateway URL and version."
        return GatewayRPCError(message, code=code, data=error.get("data"), hint=hint)
    return cls(message, code=code, data=error.get("data"))


def _wasm_args(intent: Intent, wasm_args: Mapping[str, Any] | None) -> str:
    """The task's ``wasm_args``: a payment's own x402 details plus the caller's. The caller
    may not replace a payment's details: the operators sign the transfer's hash, not them, so
    a policy shown ``exact`` would otherwise allow an ``upto`` intent (or another resource)."""
    args: dict[str, Any] = dict(intent.wasm_args()) if isinstance(intent, PaymentIntent) else {}
    if not wasm_args:
        return wasm_args_hex(args)
    args.update(wasm_args)
    try:
        text = wasm_args_hex(args)  # encoded once: what is checked is what is sent
    except (TypeError, ValueError) as exc:  # not JSON: a set, bytes, NaN, mixed key types
        raise IntentError(f"wasm_args must be JSON ({type(exc).__name__}: {exc})"[:200]) from None
    if isinstance(intent, PaymentIntent):
        sent = json.loads(bytes.fromhex(text[2:])).get("x402")
        own = intent.wasm_args()["x402"]
        if _canonical(sent) != _canonical(own):  # JSON's ``true`` is not ``1``, nor 1.0
            raise IntentError(
                "wasm_args.x402 differs from the payment's own x402 details (scheme, resource, "
                "...); a payment's details come from its PaymentIntent"
            )
    return text


def _canonical(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _intent_signature(gateway: _GatewayConfig, intent: Intent) -> str | None:
    """The agent's EIP-712 signature of the intent, or ``None``: never ``"0x"``, which
    Newton's gateway refuses ("expected exactly 65 bytes")."""
    if gateway.intent_signer is None:
        return None
    try:
        raw = gateway.intent_signer(intent)
        signature = raw if isinstance(raw, bytes) else bytes.fromhex(str(raw).removeprefix("0x"))
    except Exception as exc:  # the caller's signer: typed, and never its message (a key?)
        raise ConfigurationError(f"intent_signer failed: {type(exc).__name__}") from None
    if len(signature) != 65:
        raise ConfigurationError(
            f"intent_signer returned {len(signature)} bytes; an EIP-712 signature is 65"
        )
    return "0x" + signature.hex()


def _task_params(
    gateway: _GatewayConfig, intent: Intent, wasm_args: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``newt_createTask`` params as Newton's SDK sends them: ``quorum_number`` without 0x,
    ``null`` for a threshold or signature left to the gateway's defaults. ``compact`` (only
    for a reference network that offers it) asks for the answer without the fields this
    client never reads (``agentguard.network.gateway._results.compact_result``)."""
    params = {
        "policy_client": gateway.policy_client,
        "intent": intent.wire(),
        "intent_signature": _intent_signature(gateway, intent),
        "quorum_number": gateway.quorum_number,
        "quorum_threshold_percentage": gateway.quorum_threshold_percentage,
        "wasm_args": _wasm_args(intent, wasm_args),
        "timeout": gateway.task_timeout,
    }
    if gateway.compact:
        params[COMPACT_PARAM] = True
    return params


_ZERO_ADDRESS = "0x" + "00" * 20
COMPACT_PARAM = "agentguard_compact"
"""The ``newt_createTask`` param asking a reference network for its compact answer."""


def _simulate_params(
    gateway: _GatewayConfig, intent: Intent, wasm_args: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``newt_simulateTask`` params, Newton's ``{intent, policy_task_data}``.

    A real ``policy_task_data`` names the policy contract, its code and each PolicyData
    oracle's address, read from the chain; this client knows the pinned policy id and, if
    configured, the policy address, and sends the rest as Newton's documented minimum
    (``policy: "0x"``, one PolicyData entry carrying the wasm args, data ``"0x"``, expire
    block 0). The gateway evaluates with its own view of the policy either way.
    """
    if gateway.policy_id is None:
        raise ConfigurationError(
            "simulate() needs the policy id (newt_simulateTask names the policy, not the "
            "policy client): pass policy_id= to the gateway or pin it in Guard.connect"
        )
    args = _wasm_args(intent, wasm_args)
    policy_data = [
        {
            "wasmArgs": args,
            "data": "0x",
            "policyDataAddress": _ZERO_ADDRESS,
            "expireBlock": 0,
        }
    ]
    return {
        "intent": intent.wire(),
        "policy_task_data": {
            "policyId": gateway.policy_id,
            "policyAddress": gateway.policy_address or _ZERO_ADDRESS,
            "policy": "0x",
            "policyData": policy_data if args != "0x" else [],
        },
    }


def _parse_task(result: Any, policy_client: str) -> Attestation:
    """Turn a ``newt_createTask`` result into an (unverified) Attestation, or raise.

    Every field read is type-checked first: whatever the gateway sends, the outcome is an
    ``Attestation`` or an ``AuthorizationError``.
    """
    if not isinstance(result, dict):
        raise GatewayProtocolError(f"newt_createTask result is {preview(result)}, not an object")
    status = result.get("status")
    raw_errors = result.get("operator_errors")
    operator_errors = (
        [e for e in raw_errors[:_MAX_OPERATOR_ERRORS] if isinstance(e, dict)]
        if isinstance(raw_errors, list)
        else []
    )
    if status == "failed":
        error = result.get("error")
        error = error[:500] if isinstance(error, str) and error else "task failed"
        tier = result.get("tier")
        if "quorum" in error and known(tier) and tier:
            raise TierQuorumNotReached(error, tier=tier, operator_errors=operator_errors)
        if "quorum" in error:
            raise QuorumNotReached(error, operator_errors=operator_errors)
        raise AuthorizationError(f"gateway reported the task failed: {error}")
    if status != "success":
        raise GatewayProtocolError(f"task status {preview(status)} is neither success nor failed")
    response = result.get("task_response")
    if response is not None and not isinstance(response, dict):
        raise GatewayProtocolError(f"task_response is {preview(response)}, not an object")
    att = result.get("attestation")
    if att is None:
        return _newton_bls_attestation(result, response, policy_client)
    attestation = Attestation.from_json(att, operator_errors=operator_errors)
    if attestation.scheme != "ecdsa":
        raise GatewayProtocolError("the attestation field must carry ECDSA signatures")
    task_id = result.get("task_id")
    if (
        task_id is not None
        # the same text the attestation's id was read from reads as the same bytes
        and not (type(task_id) is str and _same_text(att, "task_id", task_id))
        and _b32_any(task_id, "task_id") != attestation.task_id
    ):
        raise GatewayProtocolError("attestation task id differs from the task's id")
    evaluation = (response or {}).get("evaluation_result")
    if evaluation is not None and _evaluation_allows(
        _bytes_field(evaluation, "task_response.evaluation_result")
    ) != (attestation.decision == "allow"):
        raise GatewayProtocolError("evaluation_result contradicts the attestation decision")
    data = _policy_data(response)
    return attestation if data is None else with_policy_data(attestation, data)


class _Task:
    """One ``newt_createTask`` call, and what its answer must attest: a reference network's
    ECDSA task id derives from what this client asked (``agentguard._task_id``), so operators
    who checked the id evaluated this client's x402 details, not ones a gateway chose. A BLS
    answer (Newton's gateway assigns its own ids) is left to its verifier: an ECDSA
    ``Verifier`` refuses it whatever shape the gateway picked."""

    def __init__(
        self, cfg: _GatewayConfig, intent: Intent, wasm_args: Mapping[str, Any] | None
    ) -> None:
        params = _task_params(cfg, intent, wasm_args)
        self.call = _Call("newt_createTask", params, cfg.attempt_timeout)
        self._intent = intent
        self._wasm_args: str = params["wasm_args"]
        self._policy_client = cfg.policy_client

    def attestation(self, result: Any) -> Attestation:
        """The answer's attestation, if it is for the task asked; ``GatewayProtocolError``
        otherwise."""
        attestation = _parse_task(result, self._policy_client)
        if attestation.scheme == "ecdsa" and attestation.task_id != self._asked_id():
            raise GatewayProtocolError(
                f"the gateway's task 0x{attestation.task_id.hex()} is not the one asked for: "
                "its id does not derive from this policy client, intent, x402 details and "
                "request id, so what the operators signed may not be what was asked"
            )
        return attestation

    def _asked_id(self) -> bytes:
        intent = self._intent
        if isinstance(intent, PaymentIntent):  # ``_wasm_args`` sent its own details
            x402: Any = intent.wasm_args()["x402"]
            transfer = intent.newton_intent()
        else:
            x402 = None
            if self._wasm_args != "0x":
                x402 = json.loads(bytes.fromhex(self._wasm_args[2:])).get("x402")
            transfer = intent
        try:
            details = None if x402 is None else canonical_x402(x402, transfer)
        except IntentError:  # the gateway had to refuse them: it did not
            raise GatewayProtocolError(
                "the gateway accepted a task with x402 details that do not describe its intent"
            ) from None
        return task_id(self._policy_client, intent.intent_hash, details, self.call.id)


def _same_text(doc: object, key: str, text: str) -> bool:
    """Whether ``doc[key]`` is exactly the ``str`` ``text`` (no subclass's ``__eq__`` runs)."""
    if type(doc) is not dict:
        return False
    value = doc.get(key)
    return type(value) is str and value == text


def _policy_data(response: dict[str, Any] | None) -> str | None:
    """The policy data of a reference network's ``task_response`` (one ``policyData`` entry,
    hex of a JSON object), as text for the audit log; None for any other shape (a Newton
    gateway's, or garbage: it decides nothing, so it is kept or left out, never refused)."""
    data = (response or {}).get("policy_task_data")
    entries = data.get("policyData") if isinstance(data, dict) else None
    if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
        return None
    raw = entries[0].get("data")
    if type(raw) is str and len(raw) <= _MEMO_POLICY_DATA:
        return _policy_text_memo(raw)
    return _policy_text(raw)


_MEMO_POLICY_DATA = 16_384  # a policy's data is the same in every answer; memo the usual sizes


def _policy_text(raw: object) -> str | None:
    """The JSON object text ``raw`` (0x-hex of UTF-8) spells, or None."""
    try:
        text = bytes.fromhex(raw.removeprefix("0x")).decode() if isinstance(raw, str) else ""
        return text if isinstance(strict_loads(text), dict) else None
    except ValueError:
        return None


# pure, on exact ``str`` keys only (no ``__eq__``/``__hash__`` of a gateway's choosing)
_policy_text_memo = lru_cache(maxsize=32)(_policy_text)


def _field(doc: dict[str, Any], snake: str, camel: str, where: str) -> Any:
    """A field Newton may spell either way; both spellings disagreeing is refused."""
    try:
        return one_spelling(doc, snake, camel)
    except ValueError as exc:
        raise MalformedAttestation(f"{where}: {exc}") from None


def _wire_intent(doc: dict[str, Any], where: str) -> TransactionIntent:
    wire = doc.get("intent")
    if not isinstance(wire, dict):
        raise GatewayProtocolError(f"{where}.intent is {preview(wire)}, not an object")
    try:
        return TransactionIntent.from_wire(wire)
    except IntentError as exc:
        raise GatewayProtocolError(f"{where}.intent is malformed: {exc.message}") from None


def _newton_bls_attestation(
    result: dict[str, Any], response: dict[str, Any] | None, policy_client: str
) -> Attestation:
    """A real Newton answer: BLS-aggregated, so only its binding fields can be read here.

    ``task_response`` is what the operators signed; ``task``, when present, must name the same
    task, client and intent (Newton's ``TaskLib.sanityCheckTaskResponse`` requires as much).
    """
    if response is None:
        raise GatewayProtocolError("result has neither an attestation nor a task_response")
    attested = _wire_intent(response, "task_response")
    evaluation = _field(response, "evaluation_result", "evaluationResult", "task_response")
    if evaluation is None:
        raise GatewayProtocolError("task_response has no evaluation_result")
    allow = _evaluation_allows(_bytes_field(evaluation, "task_response.evaluation_result"))
    expiration = result.get("expiration")
    if type(expiration) is not int or not 0 <= expiration < 1 << 64:
        raise GatewayProtocolError(
            f"Newton result's expiration is {preview(expiration)}, not a uint64 integer"
        )
    task_id = result.get("task_id")
    response_id = _field(response, "task_id", "taskId", "task_response")
    task_id_bytes = _b32_any(task_id if task_id is not None else response_id, "task_id")
    if response_id is not None and _b32_any(response_id, "task_response.task_id") != task_id_bytes:
        raise GatewayProtocolError("task_response.task_id differs from the task's id")
    client = _field(response, "policy_client", "policyClient", "task_response")
    client = policy_client if client is None else client
    task = result.get("task")
    if task is not None:
        _check_task(task, task_id_bytes, client, attested)
    return Attestation(
        decision="allow" if allow else "deny",
        task_id=task_id_bytes,
        policy_id=_b32_any(
            _field(response, "policy_id", "policyId", "task_response"), "task_response.policy_id"
        ),
        policy_client=client,
        intent_hash=attested.intent_hash,
        expires_at=expiration,
        scheme="newton-bls",
        newton_result=json.dumps(result, separators=(",", ":"), ensure_ascii=False),
    )


def _check_task(task: Any, task_id: bytes, client: Any, attested: TransactionIntent) -> None:
    """Newton's ``task`` echoes what was asked; any disagreement with the signed response is
    a gateway that cannot be trusted."""
    if not isinstance(task, dict):
        raise GatewayProtocolError(f"task is {preview(task)}, not an object")
    tid = _field(task, "task_id", "taskId", "task")
    if tid is not None and _b32_any(tid, "task.taskId") != task_id:
        raise GatewayProtocolError("task.taskId differs from the task's id")
    task_client = _field(task, "policy_client", "policyClient", "task")
    if task_client is not None and (
        not isinstance(task_client, str)
        or not isinstance(client, str)
        or task_client.lower() != client.lower()
    ):
        raise GatewayProtocolError("task.policyClient differs from task_response.policy_client")
    _field(task, "task_created_block", "taskCreatedBlock", "task")
    if "intent" in task and _wire_intent(task, "task").intent_hash != attested.intent_hash:
        raise GatewayProtocolError("task.intent differs from the intent in task_response")


def _b32_any(value: Any, field: str) -> bytes:
    raw = _bytes_field(value, field)
    if len(raw) != 32:
        raise GatewayProtocolError(f"{field} is {len(raw)} bytes, expected a 32-byte id")
    return raw


def _parse_simulation(result: Any, policy_id: str | None) -> Simulation:
    """Newton's ``{success, result: {allow, reason}, error, details}``. Only ``allow: true``
    reads as allow; the reference network adds ``decision`` (for ``approval_required``) and
    ``reasons`` inside ``result``, read only where they agree with ``allow``. A simulation is
    a hint: nothing is ever signed on it."""
    if not isinstance(result, dict) or type(result.get("success")) is not bool:
        raise GatewayProtocolError(
            f"newt_simulateTask result is {preview(result)}, not {{success, result, error}}"
        )
    if not result["success"]:
        error = result.get("error")
        error = error[:500] if isinstance(error, str) and error else "(no error message)"
        raise PolicyEvaluationError(f"simulation failed: {error}", code=-32615)
    body = result.get("result")
    allow = body.get("allow") if isinstance(body, dict) else None
    if type(allow) is not bool:
        raise GatewayProtocolError("newt_simulateTask result.allow is not a boolean")
    assert isinstance(body, dict)
    extra = body.get("decision")
    decision = "allow" if allow else "deny"
    if not allow and extra == "approval_required":
        decision = "approval_required"
    if extra is not None and extra != decision:
        raise GatewayProtocolError(
            f"newt_simulateTask result says allow={allow} and decision {preview(extra)}"
        )
    reasons = body.get("reasons")
    if isinstance(reasons, list):
        listed = tuple(r[:500] for r in reasons[:_MAX_OPERATOR_ERRORS] if isinstance(r, str))
    else:
        reason = body.get("reason")
        listed = (reason[:500],) if isinstance(reason, str) and reason else ()
    return Simulation(decision=decision, reasons=listed, policy_id=policy_id, raw=result)


def _approval_params(policy_client: str, intent_hash: str) -> dict[str, Any]:
    if not isinstance(intent_hash, str) or not re.fullmatch(r"0x[0-9a-fA-F]{64}", intent_hash):
        raise ConfigurationError("intent_hash must be 0x followed by 64 hex digits")
    return {"policy_client": policy_client, "intent_hash": intent_hash.lower()}


_METHOD_NOT_FOUND = -32601
MAX_COMMITS = 256
"""Commits one ``agentguard_commitTasks`` call may carry (the gateway refuses more)."""
BATCH_REPROBE = 300.0
"""Seconds commits go one by one after the gateway answered ``agentguard_commitTasks`` with
-32601; then the batch method is tried again (a gateway upgraded, or a proxy's hiccup)."""


def _commits_params(commits: list[tuple[str, str]]) -> dict[str, Any]:
    """The batch's params; more than the gateway takes is refused here, before anything is
    sent (a refusal after sending would leave the caller unsure what landed)."""
    if len(commits) > MAX_COMMITS:
        raise ConfigurationError(
            f"commit_many takes at most {MAX_COMMITS} commits a call, got {len(commits)}; "
            "split them"
        )
    return {"commits": [{"task_id": task, "outcome": outcome} for task, outcome in commits]}


def _parse_commits(result: Any, commits: list[tuple[str, str]]) -> list[Exception | None]:
    """The ``agentguard_commitTasks`` answer, item by item in request order: ``None`` only for
    an entry at the item's own position naming its task and saying ``committed``; the entry's
    JSON-RPC error (the gateway's final word) where it sent one; a ``GatewayProtocolError``
    (worth a retry: a second commit of a landed task is refused, never counted twice) for a
    missing, surplus, misplaced or malformed entry."""
    entries = result.get("results") if isinstance(result, dict) else None
    if not isinstance(entries, list) or len(entries) != len(commits):
        problem = GatewayProtocolError(
            f"gateway answered {len(commits)} commits with "
            + (f"{len(entries)} results" if isinstance(entries, list) else "no results list")
        )
        return [problem] * len(commits)
    return [_commit_error(entry, task) for (task, _), entry in zip(commits, entries, strict=True)]


def _commit_error(entry: Any, task: str) -> Exception | None:
    """One commit's answer (a batch entry, or ``agentguard_commitTask``'s result): ``None``
    only when it names ``task`` and says ``committed``; its JSON-RPC error where it has one;
    else a ``GatewayProtocolError`` (retried: a second commit is refused, never counted)."""
    named = entry.get("task_id") if isinstance(entry, dict) else None
    if not isinstance(named, str) or named.lower() != task.lower():
        return GatewayProtocolError(f"gateway's commit result for {task} names another")
    if "error" in entry:
        return _rpc_error(entry["error"], 200)
    if entry.get("status") == "committed":
        return None
    return GatewayProtocolError(f"gateway's commit result for {task} is unreadable")


def _committed(result: Any, task: str) -> None:
    """A single commit lands only on the answer a batch entry needs (a gateway that answered
    -32601 to the batch, then anything to each commit, must not have its items counted)."""
    error = _commit_error(result, task)
    if error is not None:
        raise error


def _parse_approval_status(result: Any, intent_hash: str) -> ApprovalStatus:
    """Strict: the answer must be about this intent, with a known status."""
    if not isinstance(result, dict):
        raise GatewayProtocolError(
            f"agentguard_approvalStatus result is {preview(result)}, not an object"
        )
    status, expires_at = result.get("status"), result.get("expires_at")
    if str(result.get("intent_hash", "")).lower() != intent_hash.lower():
        raise GatewayProtocolError("agentguard_approvalStatus answered about another intent")
    if status not in _APPROVAL_STATUSES:
        raise GatewayProtocolError(f"approval status {preview(status)} is not one agentguard knows")
    if expires_at is not None and (type(expires_at) is not int or not 0 <= expires_at < 1 << 64):
        raise GatewayProtocolError(f"approval expires_at {preview(expires_at)} is not a uint64")
    return ApprovalStatus(
        intent_hash=intent_hash.lower(),
        status=cast(Any, status),
        expires_at=expires_at,
    )


@dataclass(frozen=True, repr=False)
class _GatewayConfig:
    url: str
    api_key: str | None
    policy_client: str
    quorum_number: str
    quorum_threshold_percentage: int | None
    task_timeout: int
    deadline: float
    attempts: int
    dedupe: bool
    intent_signer: Callable[[Intent], bytes | str] | None
    policy_id: str | None
    policy_address: str | None
    bookkeeping: bool
    compact: bool = False

    @property
    def attempt_timeout(self) -> float:
        """Wall-clock bound on one attempt, body included (the gateway waits up to
        ``task_timeout`` for operators, then sends a few KiB)."""
        return self.task_timeout + 3.0

    def headers(self) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "accept-encoding": "identity",
        }
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    def __repr__(self) -> str:  # never shows the API key
        return f"NewtonGateway(url={self.url!r}, policy_client={self.policy_client!r})"


NEWTON_TASK_TIMEOUT = 30
"""Newton's documented ``newt_createTask`` timeout default, seconds (rpc-api.mdx)."""
REFERENCE_TASK_TIMEOUT = 5
_NEWTON_HOSTS = (".newton.xyz", ".newt.foundation")
_QUORUM_NUMBER = re.compile(r"^(0x)?([0-9a-fA-F]{2})+\Z")


def is_newton_url(url: str) -> bool:
    """A URL of Newton's own gateways (``gateway.newton.xyz`` and its testnet/staging),
    also spelled as a fully qualified name (``gateway.newton.xyz.``, the same host): what is
    kept from Newton (the compact flag, bookkeeping, retries) must not pass by a dot."""
    try:
        host = httpx.URL(url).host.lower() if url.startswith(("http://", "https://")) else ""
    except httpx.InvalidURL:
        return False
    host = host.rstrip(".")
    return any(host.endswith(suffix) for suffix in _NEWTON_HOSTS)


def _config(
    url: str,
    api_key: str | None,
    policy_client: str,
    quorum_number: str,
    quorum_threshold_percentage: int | None,
    task_timeout: int | None,
    deadline: float | None,
    attempts: int,
    dedupe: bool,
    intent_signer: Callable[[Intent], bytes | str] | None,
    policy_id: str | None,
    policy_address: str | None,
    bookkeeping: bool | None = None,
    compact: bool = False,
) -> _GatewayConfig:
    if api_key:
        register_secret(api_key)
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"gateway URL {url!r} must start with http:// or https://")
    if quorum_threshold_percentage is not None and (
        type(quorum_threshold_percentage) is not int or not 0 < quorum_threshold_percentage <= 100
    ):
        raise ConfigurationError("quorum_threshold_percentage must be in 1..100 (or None)")
    if not isinstance(quorum_number, str) or not _QUORUM_NUMBER.match(quorum_number):
        raise ConfigurationError('quorum_number must be hex bytes such as "00"')
    if task_timeout is None:
        task_timeout = NEWTON_TASK_TIMEOUT if is_newton_url(url) else REFERENCE_TASK_TIMEOUT
    if type(task_timeout) is not int or task_timeout <= 0 or attempts <= 0:
        raise ConfigurationError("task_timeout (whole seconds) and attempts must be positive")
    if type(dedupe) is not bool:
        raise ConfigurationError("dedupe must be True or False")
    if bookkeeping is None:
        bookkeeping = not is_newton_url(url)
    if type(bookkeeping) is not bool:
        raise ConfigurationError("bookkeeping must be True or False (or None)")
    if type(compact) is not bool:
        raise ConfigurationError("compact must be True or False")
    if intent_signer is not None and not callable(intent_signer):
        raise ConfigurationError("intent_signer must be a function of the intent")
    for name, value, width in (
        ("policy_id", policy_id, 64),
        ("policy_address", policy_address, 40),
    ):
        if value is not None and not re.fullmatch(f"0x[0-9a-fA-F]{{{width}}}", str(value)):
            raise ConfigurationError(f"{name} must be 0x followed by {width} hex digits")
    rpc_url = url if url.rstrip("/").endswith("/rpc") else url.rstrip("/") + "/rpc"
    return _GatewayConfig(
        url=rpc_url,
        api_key=api_key,
        policy_client=policy_client,
        quorum_number=quorum_number.removeprefix("0x"),
        quorum_threshold_percentage=quorum_threshold_percentage,
        task_timeout=task_timeout,
        deadline=deadline if deadline is not None else task_timeout + 5.0,
        attempts=attempts,
        dedupe=dedupe,
        intent_signer=intent_signer,
        policy_id=policy_id,
        policy_address=policy_address,
        bookkeeping=bookkeeping,
        compact=compact,
    )


class _NotSent(GatewayUnavailable):
    """The request never reached the gateway (connection refused, DNS failure, connect or
    pool timeout): safe to send again whatever the gateway does with ids."""


_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_CREATES = frozenset({"newt_createTask"})


def _transport_error(call: _Call, exc: Exception) -> GatewayUnavailable:
    """Network trouble. ``httpx.HTTPError`` is all httpx raises on the way, ``TransportError``
    all the lean client does; with redirects off and raw reads, none of it says anything about
    the gateway's decision. Whether the request got out decides whether it may be sent again
    (the lean client says so itself: ``sent``)."""
    name = type(exc).__name__
    if isinstance(exc, TransportError):
        name = f"{exc.kind} ({exc.detail})" if exc.detail else exc.kind
    if isinstance(exc, _NOT_SENT) or (isinstance(exc, TransportError) and not exc.sent):
        return _NotSent(f"{call.method} never reached the gateway: {name}")
    return GatewayUnavailable(f"{call.method} failed in transport: {name}")


class _Retry:
    """When to send a call again. A call that creates a task is sent again only if it never
    left, or if the gateway deduplicates by id; everything else (reads, the reference network's
    bookkeeping) on any transport failure, 5xx or 429. At most ``attempts`` tries, none started
    after ``deadline`` seconds, with exponential backoff and jitter between them (50 ms, 100 ms,
    ... up to 1 s). A plain loop: tenacity cost a tenth of the lean client's CPU per call."""

    def __init__(self, cfg: _GatewayConfig, method: str) -> None:
        self._once = method in _CREATES and not cfg.dedupe
        self._attempts = cfg.attempts
        self._deadline = time.monotonic() + cfg.deadline
        self._tried = 0

    def pause(self, exc: GatewayUnavailable) -> float | None:
        """Seconds to wait before the next try after ``exc``, or ``None``: give up."""
        self._tried += 1
        if self._once and not isinstance(exc, _NotSent):
            return None
        if self._tried >= self._attempts or time.monotonic() >= self._deadline:
            return None
        return min(0.05 * (1 << (self._tried - 1)) + random.uniform(0, 0.05), 1.0)


def _lost(call: _Call, cfg: _GatewayConfig, exc: GatewayUnavailable) -> GatewayUnavailable:
    """A task request that may have reached a gateway not known to deduplicate: sending it
    again could create a second task, so the caller is told the first may exist."""
    if isinstance(exc, _NotSent):  # the private marker never reaches a caller
        return GatewayUnavailable(exc.message)
    if call.method not in _CREATES or cfg.dedupe:
        return exc
    return GatewayUnavailable(
        f"{exc.message}; the request may have reached the gateway, so a task may exist at "
        "Newton for this intent (not sent again: Newton does not deduplicate retries). "
        "Authorize again only if a second task is acceptable",
        hint="Nothing was signed; the local hold is released.",
    )


def _parse_network_info(result: Any) -> dict[str, Any]:
    if not isinstance(result, dict) or not isinstance(result.get("scheme"), str):
        raise GatewayProtocolError(f"agentguard_networkInfo result is {preview(result)}")
    if type(result.get("dedupes", False)) is not bool:
        raise GatewayProtocolError("agentguard_networkInfo dedupes is not a boolean")
    if type(result.get("compact_answers", False)) is not bool:
        raise GatewayProtocolError("agentguard_networkInfo compact_answers is not a boolean")
    return {
        "scheme": result["scheme"],
        "dedupes": result.get("dedupes", False),
        "compact_answers": result.get("compact_answers", False),
    }


PROBE_TIMEOUT = 3.0
CONNECT_TIMEOUT = 2.0

if importlib.util.find_spec("sniffio") is None:  # pragma: no branch
    # httpcore asks for sniffio at every async lock set-up, and a failed import is not cached:
    # each retry scans sys.path (13 % of the async client's CPU). Marking the absent module
    # absent makes that import fail at once; nothing else changes, since it cannot be imported.
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]


def _lean_origin(cfg: _GatewayConfig) -> Origin | None:
    """The lean keep-alive client's view of the gateway, or ``None`` where httpx keeps the hop:
    ``https://`` (TLS), credentials in the URL, or a proxy the environment names for it."""
    if not Origin.handles(cfg.url):
        return None
    proxies = urllib.request.getproxies()
    if ("http" in proxies or "all" in proxies) and not urllib.request.proxy_bypass(
        httpx.URL(cfg.url).host
    ):
        return None
    try:
        return Origin(cfg.url, cfg.headers())
    except ValueError:
        raise ConfigurationError(
            "the API key holds a line break or NUL, which cannot travel in an HTTP header"
        ) from None


def _sync_exchange(pool: SyncPool, call: _Call) -> Any:
    """One attempt of ``call`` over the lean client: the answer's result, or typed errors."""
    deadline = time.monotonic() + call.timeout
    try:
        with pool.post(call.body, deadline) as response:
            body = call.start(response.status, response.headers, deadline)
            for chunk in response.iter_raw():
                body.feed(chunk)
            raw = body.finish()
    except TransportError as exc:
        raise _transport_error(call, exc) from None
    return call.parse(response.status, raw)


async def _async_exchange(pool: AsyncPool, call: _Call) -> Any:
    """``_sync_exchange`` for asyncio. Every read waits at most until the attempt's deadline,
    so the whole attempt, headers included, is bounded without a cancel scope."""
    deadline = time.monotonic() + call.timeout
    try:
        async with await pool.post(call.body, deadline) as response:
            body = call.start(response.status, response.headers, deadline)
            async for chunk in response.aiter_raw():
                body.feed(chunk)
            raw = body.finish()
    except TransportError as exc:
        raise _transport_error(call, exc) from None
    return call.parse(response.status, raw)


def _attempt(call: Callable[..., object], *args: Any) -> Exception | None:
    """``call(*args)``'s error, or ``None``: one item of a batch answered on its own."""
    try:
        call(*args)
    except Exception as exc:
        return exc
    return None


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # trio (through anyio): httpx serves it
        return False
    return True


def probe_network(url: str, api_key: str | None) -> dict[str, Any] | None:
    """Ask a gateway, once and briefly, what it is (``agentguard_networkInfo``): ``{scheme,
    dedupes}`` from a reference network, ``None`` from anything else (Newton's gateway knows
    no such method) or when it cannot be reached. Used only for the choices it can make
    safer (retrying a deduplicated task; refusing a reference network without operators);
    never for operators or keys."""
    cfg = _config(url, api_key, "0x" + "00" * 20, "00", None, 1, None, 1, False, None, None, None)
    call = _Call("agentguard_networkInfo", {}, PROBE_TIMEOUT)
    origin = _lean_origin(cfg)
    if origin is not None:
        pool = SyncPool(origin, connect_timeout=PROBE_TIMEOUT)
        try:
            return _parse_network_info(_sync_exchange(pool, call))
        except (AuthorizationError, TransportError):
            return None
        finally:
            pool.close()
    try:
        with (
            httpx.Client(
                timeout=httpx.Timeout(PROBE_TIMEOUT, connect=PROBE_TIMEOUT),
                headers=cfg.headers(),
                follow_redirects=False,
            ) as http,
            http.stream("POST", cfg.url, content=call.body) as response,
        ):
            body = call.start(
                response.status_code, response.headers, time.monotonic() + PROBE_TIMEOUT
            )
            for chunk in response.iter_raw():
                body.feed(chunk)
            return _parse_network_info(call.parse(response.status_code, body.finish()))
    except (AuthorizationError, httpx.HTTPError, httpx.InvalidURL):
        return None


# -- the clients ------------------------------------------------------------------------------


class _GatewayClient:
    """What the sync and async clients share: configuration, headers, a safe repr."""

    def __init__(
        self,
        url: str,
        *,
        policy_client: str,
        api_key: str | None = None,
        quorum_threshold_percentage: int | None = None,
        quorum_number: str = "00",
        task_timeout: int | None = None,
        deadline: float | None = None,
        attempts: int = 4,
        dedupe: bool = False,
        intent_signer: Callable[[Intent], bytes | str] | None = None,
        policy_id: str | None = None,
        policy_address: str | None = None,
        bookkeeping: bool | None = None,
        compact: bool = False,
    ) -> None:
        """``task_timeout`` defaults to Newton's documented 30 s for Newton's own gateways and
        5 s elsewhere; ``quorum_threshold_percentage=None`` leaves the gateway's default.
        ``dedupe=True`` only for a gateway that deduplicates by JSON-RPC id (the reference
        network: ``Guard.connect`` asks it). ``intent_signer(intent)`` returns the agent's
        65-byte EIP-712 signature for ``intent_signature`` (``agentguard._intent_signature``);
        without it ``null`` is sent. ``policy_id`` / ``policy_address`` name the policy for
        ``simulate``. ``bookkeeping``: send ``agentguard_commitTask`` / ``releaseTask`` (only
        the reference network knows them; default: not to Newton's own gateways, and
        ``Guard.connect`` sends them only to a gateway that answered ``agentguard_networkInfo``).
        ``compact=True`` asks a reference network for its compact ``newt_createTask`` answer
        (fewer bytes to read; ``Guard.connect`` asks only one whose ``agentguard_networkInfo``
        offers ``compact_answers``); the answer is read by the same code either way."""
        self._cfg = _config(
            url,
            api_key,
            policy_client,
            quorum_number,
            quorum_threshold_percentage,
            task_timeout,
            deadline,
            attempts,
            dedupe,
            intent_signer,
            policy_id,
            policy_address,
            bookkeeping,
            compact,
        )
        self._timeout = httpx.Timeout(self._cfg.task_timeout + 1.0, connect=CONNECT_TIMEOUT)
        # monotonic time until which commits go one by one: the gateway said it knows no
        # agentguard_commitTasks (``_batches_refused``)
        self._no_batches_until = 0.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}{repr(self._cfg).removeprefix('NewtonGateway')}"

    @property
    def policy_client(self) -> str:
        return self._cfg.policy_client

    def _batches(self) -> bool:
        return time.monotonic() >= self._no_batches_until

    def _batches_refused(self, exc: GatewayRPCError) -> None:
        """-32601 to the batch method: one by one for ``BATCH_REPROBE`` s; anything else is
        the whole call's answer (raised)."""
        if exc.code != _METHOD_NOT_FOUND:
            raise exc
        self._no_batches_until = time.monotonic() + BATCH_REPROBE


class NewtonGateway(_GatewayClient):
    """Synchronous authorizer. ``authorize(intent)`` → unverified ``Attestation``."""

    def __init__(
        self, url: str, *, transport: httpx.BaseTransport | None = None, **options: Any
    ) -> None:
        super().__init__(url, **options)
        origin = _lean_origin(self._cfg) if transport is None else None
        self._lean = (
            SyncPool(origin, connect_timeout=CONNECT_TIMEOUT) if origin is not None else None
        )
        self._http = (
            httpx.Client(
                transport=transport,
                timeout=self._timeout,
                headers=self._cfg.headers(),
                follow_redirects=False,
            )
            if origin is None
            else None
        )

    def _rpc(self, method: str, params: Mapping[str, Any]) -> Any:
        return self._send(_Call(method, params, self._cfg.attempt_timeout))

    def _send(self, call: _Call) -> Any:
        lean, http = self._lean, self._http

        def attempt() -> Any:
            if lean is not None:
                return _sync_exchange(lean, call)
            assert http is not None
            try:
                deadline = time.monotonic() + call.timeout
                with http.stream("POST", self._cfg.url, content=call.body) as response:
                    body = call.start(
                        response.status_code,
                        response.headers,
                        deadline,
                        response.is_stream_consumed,
                    )
                    for chunk in [response.content] if body.preread else response.iter_raw():
                        body.feed(chunk)
                    raw = body.finish()
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise _transport_error(call, exc) from None
            return call.parse(response.status_code, raw)

        retry = _Retry(self._cfg, call.method)
        while True:
            try:
                return attempt()
            except GatewayUnavailable as exc:
                wait = retry.pause(exc)
                if wait is None:
                    raise _lost(call, self._cfg, exc) from None
            time.sleep(wait)

    def authorize(
        self, intent: Intent, *, wasm_args: Mapping[str, Any] | None = None
    ) -> Attestation:
        started = time.perf_counter()
        task = _Task(self._cfg, intent, wasm_args)
        attestation = task.attestation(self._send(task.call))
        log.debug(
            "authorized",
            task_id="0x" + attestation.task_id.hex(),
            decision=attestation.decision,
            ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return attestation

    def simulate(self, intent: Intent, *, wasm_args: Mapping[str, Any] | None = None) -> Simulation:
        """``newt_simulateTask``: what the policy would say. Signs and records nothing."""
        params = _simulate_params(self._cfg, intent, wasm_args)
        return _parse_simulation(self._rpc("newt_simulateTask", params), self._cfg.policy_id)

    def network_info(self) -> dict[str, Any]:
        """The reference network's ``agentguard_networkInfo`` (``{scheme, dedupes}``); Newton's
        gateway answers it with a JSON-RPC error."""
        return _parse_network_info(self._rpc("agentguard_networkInfo", {}))

    def approval_status(self, intent_hash: str) -> ApprovalStatus:
        """Where the human approval of ``intent_hash`` (for this policy client) stands."""
        params = _approval_params(self._cfg.policy_client, intent_hash)
        return _parse_approval_status(
            self._rpc("agentguard_approvalStatus", params), params["intent_hash"]
        )

    def release(self, task_id: str) -> None:
        """Tell the network an attestation was never used, so its amount counts no more
        (a reference network only; Newton's gateway knows no such call)."""
        if self._cfg.bookkeeping:
            self._rpc("agentguard_releaseTask", {"task_id": task_id})

    def commit(self, task_id: str, outcome: str) -> None:
        if self._cfg.bookkeeping:
            params = {"task_id": task_id, "outcome": outcome}
            _committed(self._rpc("agentguard_commitTask", params), task_id)

    def commit_many(self, commits: list[tuple[str, str]]) -> list[Exception | None]:
        """Several commits (task id, outcome) in one round trip (``agentguard_commitTasks``);
        each item's error or ``None`` once it landed. A gateway without the method gets them
        one by one. Raises what the whole call met (nothing is known to have landed); none
        is nothing to send."""
        if not self._cfg.bookkeeping or not commits:
            return [None] * len(commits)
        if self._batches():
            try:
                result = self._rpc("agentguard_commitTasks", _commits_params(commits))
            except GatewayRPCError as exc:
                self._batches_refused(exc)
            else:
                return _parse_commits(result, commits)
        return [_attempt(self.commit, task, outcome) for task, outcome in commits]

    def close(self) -> None:
        if self._lean is not None:
            self._lean.close()
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> NewtonGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncNewtonGateway(_GatewayClient):
    """The same surface as ``NewtonGateway``, for asyncio."""

    def __init__(
        self, url: str, *, transport: httpx.AsyncBaseTransport | None = None, **options: Any
    ) -> None:
        super().__init__(url, **options)
        origin = _lean_origin(self._cfg) if transport is None else None
        self._lean = (
            AsyncPool(origin, connect_timeout=CONNECT_TIMEOUT) if origin is not None else None
        )
        self._transport = transport
        self._http: httpx.AsyncClient | None = None  # made when first needed (https, trio)

    def _httpx(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                transport=self._transport,
                timeout=self._timeout,
                headers=self._cfg.headers(),
                follow_redirects=False,
            )
        return self._http

    async def _rpc(self, method: str, params: Mapping[str, Any]) -> Any:
        return await self._send(_Call(method, params, self._cfg.attempt_timeout))

    async def _send(self, call: _Call) -> Any:
        lean = self._lean if self._lean is not None and _on_asyncio() else None
        retry = _Retry(self._cfg, call.method)
        while True:
            try:
                if lean is not None:
                    return await _async_exchange(lean, call)
                return await self._httpx_attempt(call)
            except GatewayUnavailable as exc:
                wait = retry.pause(exc)
                if wait is None:
                    raise _lost(call, self._cfg, exc) from None
            await anyio.sleep(wait)

    async def _httpx_attempt(self, call: _Call) -> Any:
        http = self._httpx()
        try:
            # the whole attempt is bounded here, headers included (httpx bounds each read by
            # the read timeout, the body reader the body by the clock)
            deadline = time.monotonic() + call.timeout
            with anyio.fail_after(call.timeout):
                async with http.stream("POST", self._cfg.url, content=call.body) as response:
                    body = call.start(
                        response.status_code,
                        response.headers,
                        deadline,
                        response.is_stream_consumed,
                    )
                    if body.preread:
                        body.feed(response.content)
                    else:
                        async for chunk in response.aiter_raw():
                            body.feed(chunk)
                    raw = body.finish()
        except (TimeoutError, httpx.HTTPError, httpx.InvalidURL) as exc:
            raise _transport_error(call, exc) from None
        return call.parse(response.status_code, raw)

    async def authorize(
        self, intent: Intent, *, wasm_args: Mapping[str, Any] | None = None
    ) -> Attestation:
        task = _Task(self._cfg, intent, wasm_args)
        return task.attestation(await self._send(task.call))

    async def simulate(
        self, intent: Intent, *, wasm_args: Mapping[str, Any] | None = None
    ) -> Simulation:
        params = _simulate_params(self._cfg, intent, wasm_args)
        return _parse_simulation(await self._rpc("newt_simulateTask", params), self._cfg.policy_id)

    async def network_info(self) -> dict[str, Any]:
        return _parse_network_info(await self._rpc("agentguard_networkInfo", {}))

    async def approval_status(self, intent_hash: str) -> ApprovalStatus:
        params = _approval_params(self._cfg.policy_client, intent_hash)
        return _parse_approval_status(
            await self._rpc("agentguard_approvalStatus", params), params["intent_hash"]
        )

    async def release(self, task_id: str) -> None:
        if self._cfg.bookkeeping:
            await self._rpc("agentguard_releaseTask", {"task_id": task_id})

    async def commit(self, task_id: str, outcome: str) -> None:
        if self._cfg.bookkeeping:
            params = {"task_id": task_id, "outcome": outcome}
            _committed(await self._rpc("agentguard_commitTask", params), task_id)

    async def commit_many(self, commits: list[tuple[str, str]]) -> list[Exception | None]:
        """``NewtonGateway.commit_many`` for asyncio."""
        if not self._cfg.bookkeeping or not commits:
            return [None] * len(commits)
        if self._batches():
            try:
                result = await self._rpc("agentguard_commitTasks", _commits_params(commits))
            except GatewayRPCError as exc:
                self._batches_refused(exc)
            else:
                return _parse_commits(result, commits)
        out: list[Exception | None] = []
        for task, outcome in commits:
            try:
                await self.commit(task, outcome)
            except Exception as exc:  # this item's own answer
                out.append(exc)
            else:
                out.append(None)
        return out

    async def aclose(self) -> None:
        if self._lean is not None:
            self._lean.close()
        if self._http is not None:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncNewtonGateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
