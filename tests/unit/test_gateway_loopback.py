"""The hostile-transport cases over a real HTTP server on 127.0.0.1, sync and async client.

``httpx.MockTransport`` hands the client bodies already in memory; these cases only mean
something when bytes arrive off a socket: a body labelled gzip that is not (was
``httpx.DecodingError``), JSON nested 200,000 deep (was ``RecursionError``), a body that never
ends (was read whole into memory), a body dripped a byte at a time (was bounded by nothing: each
read came in under the read timeout), and a redirect to another host.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agentguard import (
    AgentGuardError,
    AsyncNewtonGateway,
    Attestation,
    GatewayProtocolError,
    GatewayUnavailable,
    NewtonGateway,
)

from .conftest import POLICY_CLIENT, bound
from .test_gateway_client import API_KEY
from .test_gateway_hostile import reference_result

Respond = Callable[["_Handler", dict[str, Any]], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
        try:
            self.server.respond(self, body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up: what a bounded client does to an endless answer

    def answer(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        fields = {name.replace("_", "-"): value for name, value in headers.items()}
        fields.setdefault("content-length", str(len(body)))
        for name, value in fields.items():
            self.send_header(name, value)
        self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, respond: Respond) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.respond = respond
        self.seen: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.stop = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def loopback() -> Iterator[Callable[[Respond], _Server]]:
    servers: list[_Server] = []

    def start(respond: Respond) -> _Server:
        server = _Server(respond)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop.set()
        server.shutdown()
        server.server_close()


def authorize(mode: str, url: str, intent: Any, **options: Any) -> Attestation:
    kw = {"policy_client": POLICY_CLIENT, "api_key": API_KEY, "attempts": 1, **options}
    if mode == "sync":
        with NewtonGateway(url, **kw) as client:
            return client.authorize(intent)

    async def run() -> Attestation:
        async with AsyncNewtonGateway(url, **kw) as client:
            return await client.authorize(intent)

    return asyncio.run(run())


MODES = pytest.mark.parametrize("mode", ["sync", "async"])


def _envelope(request: dict[str, Any], result: Any) -> bytes:
    result = bound(result, request)  # for the task asked (``tests/unit/conftest.bound``)
    return json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}).encode()


@MODES
def test_a_real_answer_over_loopback_is_read(loopback, operators, intent, mode):
    """The baseline: the bounded streaming reader accepts an honest answer off a socket."""
    result = reference_result(operators, intent)
    server = loopback(lambda h, req: h.answer(200, _envelope(req, result)))
    assert authorize(mode, server.url, intent).allowed
    headers, _ = server.seen[0]
    assert headers["accept-encoding"] == "identity"


@MODES
def test_gzip_label_on_a_body_that_is_not_gzip(loopback, operators, intent, mode):
    result = reference_result(operators, intent)
    server = loopback(lambda h, req: h.answer(200, _envelope(req, result), content_encoding="gzip"))
    with pytest.raises(GatewayProtocolError, match="gzip"):
        authorize(mode, server.url, intent)


@MODES
def test_an_honest_gzip_body_is_read(loopback, operators, intent, mode):
    result = reference_result(operators, intent)
    server = loopback(
        lambda h, req: h.answer(200, gzip.compress(_envelope(req, result)), content_encoding="gzip")
    )
    assert authorize(mode, server.url, intent).allowed


@MODES
def test_json_nested_200000_deep(loopback, intent, mode):
    deep = b'{"jsonrpc":"2.0","result":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    server = loopback(lambda h, req: h.answer(200, deep))
    with pytest.raises(GatewayProtocolError, match="nested deeper"):
        authorize(mode, server.url, intent)


def _endless(handler: _Handler, request: dict[str, Any]) -> None:
    """A chunked body that never ends (no Content-Length to refuse up front)."""
    handler.send_response(200)
    handler.send_header("transfer-encoding", "chunked")
    handler.end_headers()
    chunk = b" " * 65536
    while not handler.server.stop.is_set():
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))


@MODES
def test_an_endless_body_is_cut_at_the_limit(loopback, intent, mode):
    server = loopback(_endless)
    with pytest.raises(GatewayProtocolError, match="exceeds"):
        authorize(mode, server.url, intent)


def _drip(handler: _Handler, request: dict[str, Any]) -> None:
    """A byte at a time, each well inside the read timeout, for ever."""
    handler.send_response(200)
    handler.send_header("content-length", "100000")
    handler.end_headers()
    while not handler.server.stop.is_set():
        handler.wfile.write(b" ")
        handler.wfile.flush()
        time.sleep(0.2)


@MODES
def test_a_slow_drip_body_ends_at_the_attempt_deadline(loopback, intent, mode):
    """At a deduplicating gateway: retried (it is a timeout), with the same JSON-RPC id, then
    GatewayUnavailable."""
    server = loopback(_drip)
    with pytest.raises(GatewayUnavailable, match=r"still arriving|ReadTimeout|TimeoutError"):
        authorize(mode, server.url, intent, task_timeout=1, attempts=2, dedupe=True)
    ids = {body["id"] for _, body in server.seen}
    assert len(server.seen) == 2 and len(ids) == 1


@MODES
def test_a_slow_drip_body_at_newton_is_not_sent_again(loopback, intent, mode):
    """Before: the timed-out ``newt_createTask`` was sent again, and Newton (which does not
    deduplicate) could create a second task. Now a request that reached the gateway is sent
    once, and the error says a task may exist."""
    server = loopback(_drip)
    with pytest.raises(GatewayUnavailable, match="a task may exist"):
        authorize(mode, server.url, intent, task_timeout=1, attempts=3)
    assert len(server.seen) == 1


@MODES
def test_slow_drip_headers_end_at_the_attempt_deadline(loopback, intent, mode):
    """Headers dripped one line at a time: both clients bound the whole attempt. (The sync
    client over httpx could not interrupt a header read; only h11's 64 KiB header cap bounded
    it. The lean client checks the attempt's deadline before every read.)"""

    def drip_headers(handler: _Handler, request: dict[str, Any]) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        while not handler.server.stop.is_set():
            handler.wfile.write(b"x-drip: 1\r\n")
            handler.wfile.flush()
            time.sleep(0.2)

    server = loopback(drip_headers)
    with pytest.raises(GatewayUnavailable, match="ReadTimeout"):
        authorize(mode, server.url, intent, task_timeout=1)


@MODES
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed(loopback, operators, intent, mode, status):
    """An attacker-controlled redirect must not carry the request (and API key) elsewhere."""
    result = reference_result(operators, intent)
    elsewhere = loopback(lambda h, req: h.answer(200, _envelope(req, result)))
    server = loopback(lambda h, req: h.answer(status, b"", location=f"{elsewhere.url}/rpc"))
    with pytest.raises(GatewayProtocolError, match="redirect") as info:
        authorize(mode, server.url, intent)
    assert elsewhere.url in str(info.value)
    assert elsewhere.seen == []
    assert len(server.seen) == 1


@MODES
def test_a_lying_content_length_is_a_typed_error(loopback, operators, intent, mode):
    """Fewer bytes than announced, then the connection closes: transport trouble, typed."""
    result = reference_result(operators, intent)

    def short(handler: _Handler, request: dict[str, Any]) -> None:
        body = _envelope(request, result)
        handler.answer(200, body[:20], content_length=str(len(body)))

    server = loopback(short)
    with pytest.raises(AgentGuardError):
        authorize(mode, server.url, intent)
