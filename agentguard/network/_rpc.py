"""JSON-RPC 2.0 plumbing shared by the gateway and the operators.

Every failure a caller can cause becomes an ``RPCError`` with one of Newton's codes and a
message that says what to fix; nothing a client sends can turn into an HTTP 500.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from agentguard._json import strict_loads
from agentguard._logging import get_logger

if TYPE_CHECKING:
    from agentguard.network._server import Handler

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "POLICY_EVALUATION_ERROR",
    "POLICY_REQUIRED",
    "PROBE_UNAVAILABLE",
    "REGISTRATION_REQUIRED",
    "UNAUTHORIZED",
    "Encoded",
    "PreEncoded",
    "RPCError",
    "encode",
    "error_response",
    "json_response",
    "parse_request",
    "probe_unavailable",
    "result_response",
    "rpc_handler",
]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
UNAUTHORIZED = -32002
POLICY_EVALUATION_ERROR = -32615
# Reference-network extension: an operator does not hold the policy code for a code hash
# and asks the gateway to send it (the gateway then retries once with the material).
POLICY_REQUIRED = -32621
# Likewise for a registration named by its hash (``Registration.wire_hash``) that the operator
# does not hold (never sent, or it restarted): the gateway retries once with the registration.
REGISTRATION_REQUIRED = -32622
# Likewise: the policy could not be judged now (no probe child could start: EAGAIN, ENOMEM...,
# the machine's state, not the policy's). Nothing was refused or signed: retry later.
PROBE_UNAVAILABLE = -32623

# An operator host's method: one evaluation, one answer per operator key it names.
EVALUATE_FOR_KEYS = "agentguard_evaluateForKeys"
# The most operator addresses one such call may name (the gateway splits a longer one).
MAX_HOST_KEYS = 256
# An operator's method: several tasks in one message, each checked, evaluated, signed and
# answered on its own (the gateway coalesces the tasks queued for one operator link).
EVALUATE_BATCH = "agentguard_evaluateBatch"
# The most tasks one such message may carry.
MAX_BATCH = 32
# An operator host's: several tasks each naming its ``operators`` (one ``EVALUATE_FOR_KEYS``
# each), at most ``MAX_BATCH`` tasks and ``MAX_HOST_KEYS`` keys named in all.
EVALUATE_BATCH_FOR_KEYS = "agentguard_evaluateBatchForKeys"
MAX_BODY = 256 * 1024
MAX_DEPTH = 64
BODY_TIMEOUT = 10.0

_Caller = TypeVar("_Caller")
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class RPCError(Exception):
    """A JSON-RPC error object; ``http_status`` is 200 except for auth failures (401/403)."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        data: Any = None,
        http_status: int = 200,
        rpc_id: Any = None,
    ) -> None:
        super().__init__(message)
        self.rpc_id = rpc_id
        self.code = code
        self.message = message
        self.data = data
        self.http_status = http_status

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def probe_unavailable(who: str, exc: Exception) -> RPCError:
    """``PROBE_UNAVAILABLE`` for a ``ProbeUnavailable`` (``agentguard.policies._probe``) met
    by ``who`` (the operator, the gateway): retryable, unlike a refusal."""
    return RPCError(
        PROBE_UNAVAILABLE,
        f"the {who} could not judge the policy now ({exc}); nothing was refused or signed: "
        "retry later",
    )


def encode(body: Any) -> bytes:
    """Compact JSON, UTF-8 (a ``PreEncoded`` result's bytes as they were built)."""
    if type(body) is PreEncoded:
        return body.json
    return _dumps(body).encode()


class PreEncoded(dict[str, Any]):
    """A result that also carries its JSON, built along with it (the gateway's answer to a
    task, ``gateway._results``): exactly ``encode`` of the same dict, proven by a differential
    test, so whoever reads the dict (the state's record) and whoever sends the bytes agree."""

    __slots__ = ("json",)

    def __init__(self, result: dict[str, Any], json: bytes) -> None:
        super().__init__(result)
        self.json = json


@dataclass(frozen=True, slots=True)
class Encoded:
    """A result already encoded as JSON (encoded once, kept as bytes, sent as is)."""

    data: bytes


def json_response(body: Any, status: int = 200) -> tuple[int, bytes]:
    return status, encode(body)


def result_response(rpc_id: Any, result: Any) -> tuple[int, bytes]:
    if isinstance(result, Encoded):
        return 200, b'{"jsonrpc":"2.0","id":' + encode(rpc_id) + b',"result":' + result.data + b"}"
    return json_response({"jsonrpc": "2.0", "id": rpc_id, "result": result})


def error_response(rpc_id: Any, error: RPCError) -> tuple[int, bytes]:
    return json_response(
        {"jsonrpc": "2.0", "id": rpc_id, "error": error.to_json()}, status=error.http_status
    )


def parse_request(body: bytes) -> tuple[Any, str, dict[str, Any]]:
    """``(id, method, params)`` of a single JSON-RPC request, or an ``RPCError``.

    Parsed strictly (``agentguard._json.strict_loads``): no ``NaN``/``Infinity``, no key twice,
    no lone surrogates, no integer longer than a uint256, at most ``MAX_DEPTH`` levels, so
    nothing that reaches the handlers can fail later when it is hashed or re-encoded. The
    body's size and arrival time are bounded by the server (``_server``: ``MAX_BODY``,
    ``BODY_TIMEOUT``) before it gets here."""
    if len(body) > MAX_BODY:
        raise RPCError(INVALID_REQUEST, f"request body is larger than {MAX_BODY} bytes")
    try:
        message = strict_loads(body, max_depth=MAX_DEPTH)
    except ValueError as exc:
        raise RPCError(PARSE_ERROR, f"request body is not acceptable JSON: {exc}") from None
    if not isinstance(message, dict):
        raise RPCError(
            INVALID_REQUEST, "send one JSON-RPC 2.0 request object (batches are not supported)"
        )
    rpc_id = message.get("id")
    if message.get("jsonrpc") != "2.0":
        raise RPCError(INVALID_REQUEST, 'the request must carry "jsonrpc": "2.0"', rpc_id=rpc_id)
    method = message.get("method")
    if not isinstance(method, str):
        raise RPCError(INVALID_REQUEST, "method must be a string", rpc_id=rpc_id)
    params = message.get("params", {})
    if isinstance(params, list) and len(params) == 1 and isinstance(params[0], dict):
        params = params[0]  # Newton's SDK wraps the params object in a one-element array
    if not isinstance(params, dict):
        raise RPCError(INVALID_PARAMS, "params must be a JSON object", rpc_id=rpc_id)
    return rpc_id, method, params


def rpc_handler(
    authorize: Callable[[str | None], _Caller],
    call: Callable[[_Caller, Any, str, dict[str, Any]], Awaitable[Any]],
    *,
    health: Any,
    name: str,
) -> Handler:
    """The HTTP side of a JSON-RPC server (``_server.Handler``): ``POST /rpc`` checks the
    ``Authorization`` header with ``authorize`` (before reading the body's JSON), parses one
    request and answers ``call(caller, id, method, params)``; ``GET /health`` answers
    ``health``. Every failure is a JSON-RPC error; a bug is logged and answered as an
    internal error, never with its details."""
    health_body = encode(health)
    internal = RPCError(INTERNAL_ERROR, f"internal {name} error")
    log = get_logger(f"agentguard.network.{name}")

    async def handle(
        method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, bytes]:
        if path == "/rpc":
            if method != "POST":
                return 405, encode({"error": "send JSON-RPC 2.0 requests as POST /rpc"})
            rpc_id: Any = None
            try:
                caller = authorize(headers.get("authorization"))
                rpc_id, rpc_method, params = parse_request(body)
                return result_response(rpc_id, await call(caller, rpc_id, rpc_method, params))
            except RPCError as exc:
                return error_response(exc.rpc_id if rpc_id is None else rpc_id, exc)
            except Exception as exc:  # a bug must still answer JSON-RPC, never leak details
                log.error("internal error", error_type=type(exc).__name__, error=str(exc))
                return error_response(rpc_id, internal)
        if path == "/health" and method in ("GET", "HEAD"):
            return 200, health_body
        return 404, encode({"error": f"no such resource {path[:100]!r}: use POST /rpc"})

    return handle
