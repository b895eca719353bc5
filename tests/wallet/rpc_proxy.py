"""A JSON-RPC proxy on loopback in front of anvil that loses answers on purpose.

``after[method]`` forwards the call to the node and then answers HTTP 504 instead of the
node's reply (the node DID get it: the answer was lost); ``before[method]`` answers 504
without forwarding; ``rewrite[method]`` replaces the node's ``result``. Each rule is a count of
calls it still applies to (``-1``: always).
"""

from __future__ import annotations

import json
import threading
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

    def _handle(self, body: bytes) -> tuple[int, bytes]:
        method = str(json.loads(body).get("method"))
        self.seen.append(method)
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

    def __enter__(self) -> RpcProxy:
        self._thread.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
