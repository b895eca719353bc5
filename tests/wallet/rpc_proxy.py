"""A JSON-RPC proxy on loopback in front of anvil that loses answers on purpose.

``after[method]`` forwards the call to the node and then answers HTTP 504 instead of the
node's reply (the node DID get it: the answer was lost); ``before[method]`` answers 504
without forwarding; ``rewrite[method]`` replaces the node's ``result``. Each rule is a count of
calls it still applies to (``-1``: always).

``script[method]`` is a queue of faults, one taken per call (the property tests draw them):
``ok``; ``lost`` (forwarded, answer lost: 504); ``504``/``502`` (not forwarded);
``timeout`` (forwarded, answered only after ``delay`` seconds, past the client's timeout);
``nonce_too_low``/``already_known`` (forwarded, then the node's answer replaced by that
JSON-RPC error, as a node does for a retried transaction); ``lie_nonce_too_low`` /
``lie_already_known`` (not forwarded: the node never saw it, yet the error is claimed; its text
is ``lie_text`` when set).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import httpx


class RpcProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.after: dict[str, int] = {}
        self.before: dict[str, int] = {}
        self.rewrite: dict[str, Any] = {}
        self.script: dict[str, list[str]] = {}
        self.delay = 3.0
        self.lie_text = ""  # when set, the text of every lie_* error (a node echoing things)
        self.seen: list[str] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, answer = proxy._handle(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.handle_error = lambda *_: None  # type: ignore[method-assign]  # a client gone
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _take(self, rules: dict[str, int], method: str) -> bool:
        with self._lock:
            left = rules.get(method, 0)
            if left == 0:
                return False
            if left > 0:
                rules[method] = left - 1
            return True

    def _next_fault(self, method: str) -> str:
        with self._lock:
            queue = self.script.get(method)
            return queue.pop(0) if queue else "ok"

    def _scripted(self, fault: str, body: bytes) -> tuple[int, bytes]:
        if fault in ("504", "502"):
            return int(fault), b'{"error": "bad gateway"}'
        if not fault.startswith("lie_"):
            reply = httpx.post(
                self.upstream, content=body, headers={"Content-Type": "application/json"}
            )
        if fault == "lost":
            return 504, b'{"error": "gateway timeout"}'
        if fault == "timeout":
            time.sleep(self.delay)
            return reply.status_code, reply.content
        message = "already known" if fault.endswith("already_known") else "nonce too low"
        if fault.startswith("lie_") and self.lie_text:
            message = self.lie_text
        error = {"jsonrpc": "2.0", "id": json.loads(body).get("id"),
                 "error": {"code": -32000, "message": message}}  # fmt: skip
        return 200, json.dumps(error).encode()

    def _handle(self, body: bytes) -> tuple[int, bytes]:
        method = str(json.loads(body).get("method"))
        self.seen.append(method)
        fault = self._next_fault(method)
        if fault != "ok":
            return self._scripted(fault, body)
        if self._take(self.before, method):
            return 504, b'{"error": "gateway timeout"}'
        reply = httpx.post(
            self.upstream, content=body, headers={"Content-Type": "application/json"}
        )
        if self._take(self.after, method):
            return 504, b'{"error": "gateway timeout"}'
        if method in self.rewrite:
            data = reply.json()
            data["result"] = self.rewrite[method]
            return 200, json.dumps(data).encode()
        return reply.status_code, reply.content

    def heal(self) -> None:
        with self._lock:
            self.after.clear()
            self.before.clear()
            self.rewrite.clear()
            self.script.clear()

    def __enter__(self) -> RpcProxy:
        self._thread.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
