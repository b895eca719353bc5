"""JSON-RPC 2.0 plumbing shared by the gateway and the operators.

Every failure a caller can cause becomes an ``RPCError`` with one of Newton's codes and a
message that says what to fix; nothing a client sends can turn into an HTTP 500.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from agentguard._json import strict_loads

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "POLICY_EVALUATION_ERROR",
    "POLICY_REQUIRED",
    "UNAUTHORIZED",
    "RPCError",
    "error_response",
    "json_response",
    "read_request",
    "result_response",
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

MAX_BODY = 256 * 1024
MAX_DEPTH = 64
BODY_TIMEOUT = 10.0

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


def json_response(body: Any, status: int = 200) -> Response:
    return Response(_dumps(body), status_code=status, media_type="application/json")


def result_response(rpc_id: Any, result: Any) -> Response:
    return json_response({"jsonrpc": "2.0", "id": rpc_id, "result": result})


def error_response(rpc_id: Any, error: RPCError) -> Response:
    return json_response(
        {"jsonrpc": "2.0", "id": rpc_id, "error": error.to_json()}, status=error.http_status
    )


async def read_request(request: Request) -> tuple[Any, str, dict[str, Any]]:
    """``(id, method, params)`` of a single JSON-RPC request, or an ``RPCError``.

    Parsed strictly (``agentguard._json.strict_loads``): no ``NaN``/``Infinity``, no key twice,
    no lone surrogates, no integer longer than a uint256, at most ``MAX_DEPTH`` levels, so
    nothing that reaches the handlers can fail later when it is hashed or re-encoded."""
    chunks, size = [], 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT):  # a dripped body must not hold us forever
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY:
                    raise RPCError(INVALID_REQUEST, f"request body is larger than {MAX_BODY} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RPCError(
            INVALID_REQUEST, f"the request body did not arrive within {BODY_TIMEOUT:g} s"
        ) from None
    except ClientDisconnect:
        raise RPCError(INVALID_REQUEST, "the client left before sending the whole body") from None
    try:
        message = strict_loads(b"".join(chunks), max_depth=MAX_DEPTH)
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
