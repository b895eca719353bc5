"""A fake of Newton's gateway, built only from Newton's documented request and result shapes.

Authorities (stored public sources): newt-foundation/newton-sdk v1.0.5 (``src/types/task.ts``
``GatewayCreateTaskResult``, ``Task``, ``OperatorError``, ``SimulateTaskResult``;
``site/developers/reference/rpc-api.mdx`` for ``newt_createTask``, ``newt_simulateTask``, the
error codes -32615..-32620 and -32002, HTTP 401/403/429/5xx) and newt-foundation/newton-contracts
(``TaskLib.evaluateResult``: an ABI ``bool`` or an ABI ``string`` ``"true"``).

It is a real HTTP server on 127.0.0.1 (``ThreadingHTTPServer``): the client meets sockets,
not an in-memory transport. Every request is recorded (``requests``) so tests assert the exact
shape the client sends. What it answers is scripted per call with ``Answer`` values (queued
with ``answer(...)`` for ``newt_*`` calls; the ``default`` answers when the queue is empty;
a method Newton's gateway does not have is "Method not found"). ``certify(result)``
may add ``signature_data`` / ``aggregation_response`` to a successful result: the hook where a
real BLS quorum is wired in (tests/newton/newton_quorum.py ``NewtonQuorum.certify``); by default
nothing is added, as an uncertified answer. ``task_response`` carries Newton's full
``TaskResponse`` (newton-contracts ``INewtonProverTaskManager``: ``policy_task_data`` with the
policy's code and a ``PolicyData`` entry, ``policy_config``), so a certificate over it is over
what Newton's operators sign. ``chain_block`` ties the task's blocks to a real chain (anvil).
``recorded`` replays one recorded exchange (``recorded.py``): the request must be the recorded
one, the answer is the recorded result, byte for byte.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Certify = Callable[[dict[str, Any]], dict[str, Any]]

POLICY_ID = "0x" + "cd" * 32
POLICY_ADDRESS = "0x" + "11" * 20
POLICY_DATA_ADDRESS = "0x" + "12" * 20
POLICY_CODE = b"package agentguard\n\ndefault allow := false\n"
REFERENCE_BLOCK = 40_000_000


def word(n: int) -> bytes:
    return n.to_bytes(32, "big")


def abi_bool(flag: bool) -> bytes:
    return word(1 if flag else 0)


def abi_string(text: str) -> bytes:
    raw = text.encode()
    return word(32) + word(len(raw)) + raw + bytes(-len(raw) % 32)


@dataclass(frozen=True)
class Answer:
    """One scripted answer to one request.

    ``decision``: allow or deny, written as ``encoding`` (ABI ``bool`` or ``string``);
    ``casing``: ``camel`` as Newton's SDK types the result, or ``snake`` as its RPC docs show;
    ``bytes_as``: Solidity ``bytes`` as JSON number ``array`` (as the gateway sends) or ``hex``;
    ``expire_after``: blocks after the reference block; ``rpc_error``: a JSON-RPC error code
    instead of a result; ``http``: an HTTP status with no JSON-RPC body; ``truncated``: the
    body cut in half (``cut_connection``: and the connection closed before its announced end);
    ``intent``: the intent the answer attests (default: the one asked about); ``task_id``.
    """

    decision: str = "allow"
    encoding: str = "bool"
    casing: str = "camel"
    bytes_as: str = "array"
    expire_after: int = 100
    rpc_error: int | None = None
    http: int | None = None
    truncated: bool = False
    cut_connection: bool = False
    intent: dict[str, Any] | None = None
    task_id: str | None = None
    status: str = "success"
    simulate_allow: bool | None = None
    threshold: int | None = None
    """The task's ``quorumThresholdPercentage`` as the gateway claims it (unsigned)."""
    quorum: str | None = None
    """The task's ``quorumNumbers`` as the gateway claims it (unsigned), e.g. ``"0x01"``."""


@dataclass
class FakeNewton:
    certify: Certify = lambda result: result
    default: Answer = field(default_factory=Answer)
    block: int = REFERENCE_BLOCK
    chain_block: Callable[[], int] | None = None
    chain_time: Callable[[], int] | None = None
    """The signed ``initializationTimestamp`` (default: the host's clock, which anvil follows)."""
    recorded: dict[str, Any] | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)  # each newt_* result, as answered
    headers: list[dict[str, str]] = field(default_factory=list)
    _queue: list[Answer] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def answer(self, *answers: Answer) -> None:
        with self._lock:
            self._queue.extend(answers)

    def _next(self) -> Answer:
        with self._lock:
            return self._queue.pop(0) if self._queue else self.default

    def calls(self, method: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r.get("method") == method]

    # -- results in Newton's shapes ---------------------------------------------------------

    def _bytes(self, raw: bytes, how: str) -> Any:
        return list(raw) if how == "array" else "0x" + raw.hex()

    def _block(self) -> int:
        return self.chain_block() if self.chain_block is not None else self.block

    def create_result(self, params: dict[str, Any], a: Answer) -> dict[str, Any]:
        asked = params["intent"]
        intent = a.intent or asked
        task_id = a.task_id or "0x" + os.urandom(32).hex()  # task ids are process-unique
        block = self._block()
        created = self.chain_time() if self.chain_time is not None else int(time.time())
        allow = a.decision == "allow"
        evaluation = (
            abi_bool(allow) if a.encoding == "bool" else abi_string("true" if allow else "false")
        )
        camel_intent = {
            "from": intent["from"],
            "to": intent["to"],
            "value": intent["value"],
            "data": intent["data"],
            "chainId": intent["chain_id"],
            "functionSignature": intent["function_signature"],
        }
        wire_intent = camel_intent if a.casing == "camel" else dict(intent)
        signature = params.get("intent_signature") or "0x"
        if not signature.startswith("0x"):
            signature = "0x" + signature
        threshold = a.threshold or params.get("quorum_threshold_percentage") or 67
        quorum = a.quorum or "0x" + (params.get("quorum_number") or "00").removeprefix("0x")
        wasm_args = params.get("wasm_args") or "0x"
        if a.casing == "camel":  # as newton-sdk's GatewayCreateTaskResult types it
            task: dict[str, Any] = {
                "taskId": task_id,
                "policyClient": params["policy_client"],
                "taskCreatedBlock": block,
                "quorumThresholdPercentage": threshold,
                "intent": wire_intent,
                "intentSignature": signature,
                "wasmArgs": wasm_args,
                "quorumNumbers": quorum,
                "initializationTimestamp": hex(created),
            }
        else:  # as the RPC reference shows it
            task = {
                "task_id": task_id,
                "policy_client": params["policy_client"],
                "task_created_block": block,
                "quorum_threshold_percentage": threshold,
                "intent": wire_intent,
                "intent_signature": signature,
                "wasm_args": wasm_args,
                "quorum_numbers": quorum,
                "initialization_timestamp": hex(created),
            }
        response = {  # INewtonProverTaskManager.TaskResponse, snake_case as the RPC docs
            "task_id": task_id,
            "policy_client": params["policy_client"],
            "policy_id": POLICY_ID,
            "policy_address": POLICY_ADDRESS,
            "intent": wire_intent,
            "intent_signature": signature,
            "evaluation_result": self._bytes(evaluation, a.bytes_as),
            "policy_task_data": {
                "policy_id": POLICY_ID,
                "policy_address": POLICY_ADDRESS,
                "policy": self._bytes(POLICY_CODE, a.bytes_as),
                "policy_data": [
                    {
                        "wasm_args": self._bytes(b"", a.bytes_as),
                        "data": self._bytes(b'{"price":"1.00"}', a.bytes_as),
                        "policy_data_address": POLICY_DATA_ADDRESS,
                        "expire_block": block + 1000,
                    }
                ],
            },
            "policy_config": {
                "policyParams": self._bytes(b"{}", a.bytes_as),
                "expireAfter": a.expire_after,
            },
            "initialization_timestamp": hex(created),
        }
        result: dict[str, Any] = {
            "task_id": task_id,
            "status": a.status,
            "error": None if a.status == "success" else "quorum_not_reached: 1 of 3",
            "timestamp": 1_705_123_456,
            "task": task,
            "task_response": response,
            "reference_block": block,
            "expiration": block + a.expire_after,
            "operator_errors": []
            if a.status == "success"
            else [
                {
                    "operator_address": "0x" + "22" * 20,
                    "operator_id": "0x" + "33" * 32,
                    "error_code": 1001,
                    "message": "timeout",
                    "timestamp": "2026-01-01T00:00:00Z",
                    "retryable": True,
                }
            ],
        }
        return self.certify(result) if a.status == "success" else result

    def simulate_result(self, params: dict[str, Any], a: Answer) -> dict[str, Any]:
        allow = a.decision == "allow" if a.simulate_allow is None else a.simulate_allow
        return {
            "success": True,
            "result": {"allow": allow, "reason": "Policy conditions met" if allow else "denied"},
            "error": None,
            "details": None,
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        fake = self.server.fake
        raw = self.rfile.read(int(self.headers.get("content-length", "0")))
        body = json.loads(raw)
        fake.requests.append(body)
        fake.headers.append({k.lower(): v for k, v in self.headers.items()})
        method, rpc_id = body.get("method"), body.get("id")
        if method not in ("newt_createTask", "newt_simulateTask"):  # not Newton's: no script
            error = {"code": -32601, "message": "Method not found"}
            return self._send(200, self._json({"jsonrpc": "2.0", "id": rpc_id, "error": error}))
        answer = fake._next()
        if answer.http is not None:
            return self._send(answer.http, b'{"error":"HTTP %d"}' % answer.http)
        if answer.rpc_error is not None:
            error = {"code": answer.rpc_error, "message": f"Newton error {answer.rpc_error}"}
            status = 401 if answer.rpc_error == -32002 else 200
            return self._send(status, self._json({"jsonrpc": "2.0", "id": rpc_id, "error": error}))
        if method == "newt_createTask" and fake.recorded is not None:
            recorded = fake.recorded["newt_createTask"]
            if body.get("params") != recorded["request"]["params"]:
                error = {"code": -32602, "message": "not the recorded request"}
                return self._send(200, self._json({"jsonrpc": "2.0", "id": rpc_id, "error": error}))
            result: Any = recorded["response"]["result"]
        elif method == "newt_createTask":
            result = fake.create_result(body["params"], answer)
        else:
            result = fake.simulate_result(body["params"], answer)
        fake.results.append(result)
        data = self._json({"jsonrpc": "2.0", "id": rpc_id, "result": result})
        if answer.truncated:
            half = data[: len(data) // 2]
            if answer.cut_connection:
                return self._send(200, half, length=len(data))
            return self._send(200, half)
        return self._send(200, data)

    @staticmethod
    def _json(doc: Any) -> bytes:
        return json.dumps(doc, separators=(",", ":")).encode()

    def _send(self, status: int, body: bytes, *, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body) if length is None else length))
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if length is not None:
            self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeNewton) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


@contextmanager
def fake_newton(certify: Certify | None = None, **options: Any) -> Iterator[FakeNewton]:
    """A running fake gateway on 127.0.0.1; ``fake.url`` is its base URL."""
    fake = FakeNewton(**options) if certify is None else FakeNewton(certify=certify, **options)
    server = _Server(fake)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


__all__ = ["Answer", "FakeNewton", "abi_bool", "abi_string", "fake_newton"]
