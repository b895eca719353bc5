"""``NewtonGateway``: the authorizer that speaks Newton's gateway JSON-RPC.

The same client talks to Newton's real gateway (URL + API key) and to agentguard's reference
network. Request building and response parsing are pure functions shared by the sync and the
async client; only the I/O differs, so both behave identically.

Retries (tenacity) happen only where a second try is safe and useful: transport failures,
timeouts, HTTP 5xx and 429. The JSON-RPC ``id`` is kept across retries, and the gateway
dedupes on it, so a retried task is the same task. A deny, an RPC error or an answer we cannot
parse is final.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from agentguard._attestation import Attestation
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
    OperatorNotRegistered,
    PolicyContractError,
    PolicyEvaluationError,
    QuorumNotReached,
)
from agentguard._intent import PaymentIntent, TransactionIntent, wasm_args_hex
from agentguard._logging import get_logger
from agentguard._redact import register_secret

__all__ = [
    "AsyncAuthorizer",
    "AsyncNewtonGateway",
    "Authorizer",
    "NewtonGateway",
    "Simulation",
]

log = get_logger("agentguard.gateway")

Intent = TransactionIntent | PaymentIntent
_MAX_BODY = 1 << 20  # a gateway answer is a few KiB; refuse to parse megabytes of anything

_RPC_ERRORS: dict[int, type[GatewayRPCError]] = {
    -32615: PolicyEvaluationError,
    -32616: PolicyContractError,
    -32617: OperatorNotRegistered,
    -32618: IncompatiblePolicyVersion,
    -32619: IncompatiblePolicyVersion,
    -32620: DataProviderError,
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


# -- pure request/response logic -------------------------------------------------------------


def _bytes_field(value: Any) -> bytes:
    """Newton returns Solidity ``bytes`` as JSON number arrays; we also accept 0x-hex."""
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value)
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    raise GatewayProtocolError(f"expected a byte array or 0x-hex, got {str(value)[:40]!r}")


def _evaluation_allows(result: bytes) -> bool:
    """Newton's ``TaskLib.evaluateResult``: ABI ``bool true`` or ABI string ``"true"``."""
    if len(result) == 32:
        return result == b"\x00" * 31 + b"\x01"
    if len(result) >= 64:
        try:
            offset = int.from_bytes(result[:32], "big")
            length = int.from_bytes(result[offset : offset + 32], "big")
            return result[offset + 32 : offset + 32 + length] == b"true"
        except (ValueError, IndexError):
            return False
    return False


class _Call:
    """One JSON-RPC call: its id is fixed so retries are idempotent at the gateway."""

    def __init__(self, method: str, params: Mapping[str, Any]) -> None:
        self.id = str(uuid.uuid4())
        self.method = method
        self.body = json.dumps(
            {"jsonrpc": "2.0", "id": self.id, "method": method, "params": params},
            separators=(",", ":"),
        ).encode()

    def parse(self, response: httpx.Response) -> Any:
        status = response.status_code
        if status == 429 or status >= 500:
            raise GatewayUnavailable(f"gateway answered HTTP {status} to {self.method}")
        raw = response.content
        if len(raw) > _MAX_BODY:
            raise GatewayProtocolError(f"gateway answer is {len(raw)} bytes, refusing to parse it")
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            if status in (401, 403):
                raise GatewayAuthError("API key rejected", code=-32002) from None
            raise GatewayProtocolError(
                f"gateway answered HTTP {status} with a body that is not JSON "
                f"({len(raw)} bytes; truncated or garbage)"
            ) from None
        if not isinstance(doc, dict):
            raise GatewayProtocolError("gateway answer is not a JSON-RPC object")
        error = doc.get("error")
        if error is not None:
            raise _rpc_error(error, status)
        if status in (401, 403):
            raise GatewayAuthError("API key rejected", code=-32002)
        if status != 200:
            raise GatewayProtocolError(f"gateway answered HTTP {status} without a JSON-RPC error")
        if doc.get("jsonrpc") != "2.0" or doc.get("id") != self.id or "result" not in doc:
            raise GatewayProtocolError(
                "gateway answer is not the JSON-RPC 2.0 response to this request (id mismatch "
                "or no result)"
            )
        return doc["result"]


def _rpc_error(error: Any, status: int) -> AuthorizationError:
    if not isinstance(error, dict) or not isinstance(error.get("code"), int):
        return GatewayProtocolError("gateway sent a malformed JSON-RPC error object")
    code: int = error["code"]
    message = str(error.get("message", ""))[:500]
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


def _task_params(
    gateway: _GatewayConfig, intent: Intent, wasm_args: Mapping[str, Any] | None
) -> dict[str, Any]:
    args: dict[str, Any] = dict(intent.wasm_args()) if isinstance(intent, PaymentIntent) else {}
    if wasm_args:
        args.update(wasm_args)
    return {
        "policy_client": gateway.policy_client,
        "intent": intent.wire(),
        "intent_signature": "0x",
        "quorum_number": gateway.quorum_number,
        "quorum_threshold_percentage": gateway.quorum_threshold_percentage,
        "wasm_args": wasm_args_hex(args),
        "timeout": gateway.task_timeout,
    }


def _parse_task(result: Any, intent: Intent, policy_client: str) -> Attestation:
    """Turn a ``newt_createTask`` result into an (unverified) Attestation, or raise."""
    if not isinstance(result, dict):
        raise GatewayProtocolError("newt_createTask result is not an object")
    status = result.get("status")
    operator_errors = result.get("operator_errors") or []
    if not isinstance(operator_errors, list):
        operator_errors = []
    if status == "failed":
        error = str(result.get("error") or "task failed")[:500]
        if error.startswith("quorum_not_reached") or "quorum" in error:
            raise QuorumNotReached(error, operator_errors=operator_errors)
        raise AuthorizationError(f"gateway reported the task failed: {error}")
    if status != "success":
        raise GatewayProtocolError(
            f"task status {str(status)[:40]!r} is neither success nor failed"
        )
    try:
        if "attestation" in result and result["attestation"] is not None:
            att = result["attestation"]
            if not isinstance(att, dict):
                raise GatewayProtocolError("attestation is not an object")
            attestation = Attestation.model_validate(
                {**att, "operator_errors": tuple(e for e in operator_errors if isinstance(e, dict))}
            )
            if attestation.scheme != "ecdsa":
                raise GatewayProtocolError("the attestation field must carry ECDSA signatures")
            task_id = result.get("task_id")
            if task_id is not None and str(task_id).lower() != "0x" + attestation.task_id.hex():
                raise GatewayProtocolError("attestation task id differs from the task's id")
            evaluation = (result.get("task_response") or {}).get("evaluation_result")
            if evaluation is not None and _evaluation_allows(_bytes_field(evaluation)) != (
                attestation.decision == "allow"
            ):
                raise GatewayProtocolError("evaluation_result contradicts the attestation decision")
            return attestation
        return _newton_bls_attestation(result, intent, policy_client)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise GatewayProtocolError(f"attestation is malformed at {where}: {first['msg']}") from None


def _newton_bls_attestation(
    result: dict[str, Any], intent: Intent, policy_client: str
) -> Attestation:
    """A real Newton answer: BLS-aggregated, so only its binding fields can be read here."""
    response = result.get("task_response")
    if not isinstance(response, dict):
        raise GatewayProtocolError("result has neither an attestation nor a task_response")
    try:
        attested = TransactionIntent.from_wire(response.get("intent") or {})
    except IntentError as exc:
        raise GatewayProtocolError(f"task_response.intent is malformed: {exc.message}") from None
    allow = _evaluation_allows(_bytes_field(response.get("evaluation_result", [])))
    expiration = result.get("expiration")
    if not isinstance(expiration, int):
        raise GatewayProtocolError("Newton result has no integer expiration")
    return Attestation(
        decision="allow" if allow else "deny",
        task_id=_b32_any(result.get("task_id") or response.get("task_id")),
        policy_id=_b32_any(response.get("policy_id")),
        policy_client=str(response.get("policy_client") or policy_client),
        intent_hash=attested.intent_hash,
        expires_at=expiration,
        scheme="newton-bls",
    )


def _b32_any(value: Any) -> bytes:
    raw = _bytes_field(value)
    if len(raw) != 32:
        raise GatewayProtocolError("expected a 32-byte id")
    return raw


def _parse_simulation(result: Any) -> Simulation:
    if not isinstance(result, dict) or result.get("decision") not in (
        "allow",
        "deny",
        "approval_required",
    ):
        raise GatewayProtocolError("newt_simulateTask result has no decision")
    reasons = result.get("reasons") or []
    return Simulation(
        decision=result["decision"],
        reasons=tuple(str(r) for r in reasons) if isinstance(reasons, list) else (),
        policy_id=result.get("policy_id"),
        raw=result,
    )


@dataclass(frozen=True, repr=False)
class _GatewayConfig:
    url: str
    api_key: str | None
    policy_client: str
    quorum_number: str
    quorum_threshold_percentage: int
    task_timeout: int
    deadline: float
    attempts: int

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    def __repr__(self) -> str:  # never shows the API key
        return f"NewtonGateway(url={self.url!r}, policy_client={self.policy_client!r})"


def _config(
    url: str,
    api_key: str | None,
    policy_client: str,
    quorum_number: str,
    quorum_threshold_percentage: int,
    task_timeout: int,
    deadline: float | None,
    attempts: int,
) -> _GatewayConfig:
    if api_key:
        register_secret(api_key)
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"gateway URL {url!r} must start with http:// or https://")
    if not 0 < quorum_threshold_percentage <= 100:
        raise ConfigurationError("quorum_threshold_percentage must be in 1..100")
    if task_timeout <= 0 or attempts <= 0:
        raise ConfigurationError("task_timeout and attempts must be positive")
    rpc_url = url if url.rstrip("/").endswith("/rpc") else url.rstrip("/") + "/rpc"
    return _GatewayConfig(
        url=rpc_url,
        api_key=api_key,
        policy_client=policy_client,
        quorum_number=quorum_number,
        quorum_threshold_percentage=quorum_threshold_percentage,
        task_timeout=task_timeout,
        deadline=deadline if deadline is not None else task_timeout + 5.0,
        attempts=attempts,
    )


def _transport_error(call: _Call, exc: Exception) -> GatewayUnavailable:
    return GatewayUnavailable(f"{call.method} failed in transport: {type(exc).__name__}")


def _retry_kwargs(cfg: _GatewayConfig) -> dict[str, Any]:
    return {
        "retry": retry_if_exception_type(GatewayUnavailable),
        "stop": stop_after_attempt(cfg.attempts) | stop_after_delay(cfg.deadline),
        "wait": wait_exponential_jitter(multiplier=0.05, max=1.0, jitter=0.05),
        "reraise": True,
    }


# -- the clients ------------------------------------------------------------------------------


class _GatewayClient:
    """What the sync and async clients share: configuration, headers, a safe repr."""

    def __init__(
        self,
        url: str,
        *,
        policy_client: str,
        api_key: str | None = None,
        quorum_threshold_percentage: int = 66,
        quorum_number: str = "0x00",
        task_timeout: int = 5,
        deadline: float | None = None,
        attempts: int = 4,
    ) -> None:
        self._cfg = _config(
            url,
            api_key,
            policy_client,
            quorum_number,
            quorum_threshold_percentage,
            task_timeout,
            deadline,
            attempts,
        )
        self._timeout = httpx.Timeout(task_timeout + 1.0, connect=2.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}{repr(self._cfg).removeprefix('NewtonGateway')}"

    @property
    def policy_client(self) -> str:
        return self._cfg.policy_client


class NewtonGateway(_GatewayClient):
    """Synchronous authorizer. ``authorize(intent)`` → unverified ``Attestation``."""

    def __init__(
        self, url: str, *, transport: httpx.BaseTransport | None = None, **options: Any
    ) -> None:
        super().__init__(url, **options)
        self._http = httpx.Client(
            transport=transport, timeout=self._timeout, headers=self._cfg.headers()
        )

    def _rpc(self, method: str, params: Mapping[str, Any]) -> Any:
        call = _Call(method, params)

        def attempt() -> Any:
            try:
                response = self._http.post(self._cfg.url, content=call.body)
            except (httpx.TransportError, httpx.InvalidURL) as exc:
                raise _transport_error(call, exc) from None
            return call.parse(response)

        return Retrying(**_retry_kwargs(self._cfg))(attempt)

    def authorize(
        self, intent: Intent, *, wasm_args: Mapping[str, Any] | None = None
    ) -> Attestation:
        started = time.perf_counter()
        result = self._rpc("newt_createTask", _task_params(self._cfg, intent, wasm_args))
        attestation = _parse_task(result, intent, self._cfg.policy_client)
        log.debug(
            "authorized",
            task_id="0x" + attestation.task_id.hex(),
            decision=attestation.decision,
            ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return attestation

    def simulate(self, intent: Intent, *, wasm_args: Mapping[str, Any] | None = None) -> Simulation:
        return _parse_simulation(
            self._rpc("newt_simulateTask", _task_params(self._cfg, intent, wasm_args))
        )

    def release(self, task_id: str) -> None:
        """Tell the network an attestation was never used, so its amount counts no more."""
        self._rpc("agentguard_releaseTask", {"task_id": task_id})

    def commit(self, task_id: str, outcome: str) -> None:
        self._rpc("agentguard_commitTask", {"task_id": task_id, "outcome": outcome})

    def close(self) -> None:
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
        self._http = httpx.AsyncClient(
            transport=transport, timeout=self._timeout, headers=self._cfg.headers()
        )

    async def _rpc(self, method: str, params: Mapping[str, Any]) -> Any:
        call = _Call(method, params)
        async for attempt in AsyncRetrying(**_retry_kwargs(self._cfg)):
            with attempt:
                try:
                    response = await self._http.post(self._cfg.url, content=call.body)
                except (httpx.TransportError, httpx.InvalidURL) as exc:
                    raise _transport_error(call, exc) from None
                return call.parse(response)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def authorize(
        self, intent: Intent, *, wasm_args: Mapping[str, Any] | None = None
    ) -> Attestation:
        result = await self._rpc("newt_createTask", _task_params(self._cfg, intent, wasm_args))
        return _parse_task(result, intent, self._cfg.policy_client)

    async def simulate(
        self, intent: Intent, *, wasm_args: Mapping[str, Any] | None = None
    ) -> Simulation:
        return _parse_simulation(
            await self._rpc("newt_simulateTask", _task_params(self._cfg, intent, wasm_args))
        )

    async def release(self, task_id: str) -> None:
        await self._rpc("agentguard_releaseTask", {"task_id": task_id})

    async def commit(self, task_id: str, outcome: str) -> None:
        await self._rpc("agentguard_commitTask", {"task_id": task_id, "outcome": outcome})

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncNewtonGateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
