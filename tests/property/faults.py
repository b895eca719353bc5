"""Fault injection at the boundaries a bad network or a hostile server controls, and the
independent tallies the property tests check their invariants against.

``HttpFaultProxy`` is a loopback reverse proxy (in front of the gateway or an x402 server):
each request ``faulty(request)`` selects takes the next fault from ``script``:
``ok``; ``lost`` (forwarded, then the connection is closed with no answer: the server did
the work, the client never heard); ``timeout`` (forwarded, answered only after ``delay``
seconds, past the client's read timeout); ``500``/``502``/``504`` (forwarded, answer replaced);
``down`` (503 without forwarding: the server never saw the request);
``402`` (forwarded, then answered with the server's own unpaid 402, as a server refusing after
it was paid would).

``Tally`` records, in this process, every attestation the ``Verifier`` issued a ticket for and
every signature the ``Signer`` produced (with the task id it redeemed and, for a payment, its
EIP-3009 nonce): the two sides of "signatures ≤ verified attestations, each signed once".
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

import agentguard._signer as signer_module
import agentguard._verifier as verifier_module

_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class HttpFaultProxy:
    def __init__(self, upstream: str, faulty: Callable[[Request], bool]) -> None:
        self.upstream, self.faulty = upstream.rstrip("/"), faulty
        self.script: list[str] = []
        self.applied: list[str] = []
        self.delay = 5.0
        self._lock = threading.Lock()
        self._http = httpx.Client(timeout=30.0)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    self.command,
                    self.path,
                    {k: v for k, v in self.headers.items() if k.lower() not in _HOP},
                    self.rfile.read(length) if length else b"",
                )
                answer = proxy._handle(request)
                if answer is None:  # the answer is lost: close without a byte
                    self.close_connection = True
                    return
                status, headers, content = answer
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.handle_error = lambda *_: None  # type: ignore[method-assign]  # a client gone
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _forward(self, request: Request) -> httpx.Response:
        return self._http.request(
            request.method,
            self.upstream + request.path,
            headers=request.headers,
            content=request.body,
        )

    def _handle(self, request: Request) -> tuple[int, list[tuple[str, str]], bytes] | None:
        fault = "ok"
        if self.faulty(request):
            with self._lock:
                fault = self.script.pop(0) if self.script else "ok"
                self.applied.append(fault)
        if fault == "down":
            return 503, [("Content-Type", "text/plain")], b"unavailable"
        reply = self._forward(request)
        if fault == "lost":
            return None
        if fault == "timeout":
            time.sleep(self.delay)
        if fault in ("500", "502", "504"):
            return int(fault), [("Content-Type", "text/plain")], b"upstream failed"
        if fault == "402":  # the server's own unpaid answer, after it was paid
            reply = self._forward(Request(request.method, request.path, {}, b""))
        headers = [(k, v) for k, v in reply.headers.items() if k.lower() not in _HOP]
        return reply.status_code, headers, reply.content

    def __enter__(self) -> HttpFaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()


@dataclass
class Tally:
    """What this process verified and signed, by task id (hex, 0x-prefixed)."""

    verified: list[str] = field(default_factory=list)
    signed: list[str] = field(default_factory=list)
    tx_hashes: dict[str, str] = field(default_factory=dict)  # tx hash -> task id
    payment_nonces: dict[str, str] = field(default_factory=dict)  # EIP-3009 nonce -> task id
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def signed_twice(self) -> list[str]:
        return [task for task, n in Counter(self.signed).items() if n > 1]


@contextmanager
def tally() -> Iterator[Tally]:
    """Instruments the Verifier's ticket issue and the Signer's signing paths (transactions,
    payments from typed data, EIP-3009 payments from their fields)."""
    record = Tally()
    issue = verifier_module._issue
    transaction = signer_module.Signer._transaction
    payment = signer_module.Signer._payment
    eip3009 = signer_module.Signer._eip3009

    def counted_issue(ticket: Any, *args: Any, **kwargs: Any) -> Any:
        out = issue(ticket, *args, **kwargs)
        with record._lock:
            record.verified.append("0x" + ticket.task_id.hex())
        return out

    def counted_transaction(self: Any, ticket: Any, **kwargs: Any) -> Any:
        signed = transaction(self, ticket, **kwargs)
        with record._lock:
            record.signed.append(signed.task_id)
            record.tx_hashes[signed.hash.lower()] = signed.task_id
        return signed

    def counted_payment(self: Any, ticket: Any, typed_data: Any, *args: Any) -> Any:
        signature = payment(self, ticket, typed_data, *args)
        task = "0x" + ticket.task_id.hex()
        with record._lock:
            record.signed.append(task)
            nonce = typed_data.get("message", {}).get("nonce")
            record.payment_nonces[str(nonce).lower()] = task
        return signature

    def counted_eip3009(self: Any, ticket: Any, fields: tuple[Any, ...]) -> Any:
        before = len(record.signed)
        signature = eip3009(self, ticket, fields)
        task = "0x" + ticket.task_id.hex()
        with record._lock:
            if task not in record.signed[before:]:  # its general path counted it already
                record.signed.append(task)
            record.payment_nonces[str(fields[-1]).lower()] = task
        return signature

    verifier_module._issue = counted_issue  # type: ignore[assignment]
    signer_module.Signer._transaction = counted_transaction  # type: ignore[method-assign]
    signer_module.Signer._payment = counted_payment  # type: ignore[method-assign]
    signer_module.Signer._eip3009 = counted_eip3009  # type: ignore[method-assign]
    try:
        yield record
    finally:
        verifier_module._issue = issue
        signer_module.Signer._transaction = transaction  # type: ignore[method-assign]
        signer_module.Signer._payment = payment  # type: ignore[method-assign]
        signer_module.Signer._eip3009 = eip3009  # type: ignore[method-assign]
