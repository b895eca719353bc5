"""A lean asyncio HTTP/1.1 keep-alive server for the network's JSON-RPC hops.

The gateway and the operators answer small JSON POSTs from a few keep-alive clients; a
general ASGI stack (uvicorn + Starlette) cost a third of an operator's CPU per request. This
server does only that: parse with ``httptools``, hand ``(method, path, headers, body)`` to one
handler, write its ``(status, JSON body)``. It binds before anything else (a port in use is an
``OSError`` at once) and defends itself without the handler's help:

- heads are bounded (``MAX_HEAD`` bytes, ``MAX_HEADERS`` fields) and must arrive within
  ``HEAD_TIMEOUT``; bodies are bounded (``max_body``, checked against ``Content-Length`` before
  any byte is read, and while chunks arrive) and must arrive within ``BODY_TIMEOUT``;
- a malformed request gets 400 with a JSON-RPC error and the connection is closed (the parser
  cannot know where the next request would start);
- pipelined requests are answered in order, at most ``MAX_PIPELINE`` (or ``max_body`` bytes
  of bodies) queued before reading pauses; a client that does not read its answers stops
  being read (write backpressure);
- a client that leaves mid-request loses its answer, never the server's state: a handler runs
  to completion (the gateway records an ``allow`` whoever waits for it);
- at most ``MAX_CONNECTIONS`` connections: past that an idle one is closed to make room, or
  the new one is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import httptools

from agentguard._logging import get_logger
from agentguard.network._rpc import BODY_TIMEOUT, INTERNAL_ERROR, INVALID_REQUEST

__all__ = ["MAX_CONNECTIONS", "Handler", "run", "serve"]

Handler = Callable[[str, str, Mapping[str, str], bytes], Awaitable[tuple[int, bytes]]]
"""``(method, path, lower-cased headers, body) -> (status, JSON body)``."""

log = get_logger("agentguard.network.server")

MAX_HEAD = 16 * 1024
MAX_HEADERS = 64
MAX_PIPELINE = 16
MAX_CONNECTIONS = 1024
HEAD_TIMEOUT = 10.0
IDLE_TIMEOUT = 300.0  # the gateway keeps its operator connections for the next task
DEFAULT_MAX_BODY = 1 << 20

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


_UNCHANGED = object()  # no timer change asked for while the parser ran


def _error_body(code: int, message: str) -> bytes:
    envelope = {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}
    return json.dumps(envelope, separators=(",", ":")).encode()


def _head(status: int, length: int, keep_alive: bool) -> bytes:
    reason = _REASONS.get(status, "Status")
    close = b"" if keep_alive else b"connection: close\r\n"
    return (
        (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {length}\r\n"
        ).encode()
        + close
        + b"\r\n"
    )


class _Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "path")

    def __init__(
        self, method: str, path: str, headers: dict[str, str], body: bytes, keep_alive: bool
    ) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive


class _Refusal:
    """An answer the server gives itself (malformed, too large, too slow); then it closes."""

    __slots__ = ("body", "status")

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body


class _Server:
    def __init__(self, handler: Handler, max_body: int) -> None:
        self.handler = handler
        self.max_body = max_body
        self.connections: dict[_Connection, None] = {}  # insertion order: oldest first

    def admit(self, connection: _Connection) -> bool:
        """Make room for a new connection by closing the oldest idle one, if it must."""
        if len(self.connections) >= MAX_CONNECTIONS:
            idle = next((c for c in self.connections if c.idle), None)
            if idle is None:
                return False
            idle.close()
        self.connections[connection] = None
        return True

    def close_all(self) -> None:
        for connection in list(self.connections):
            connection.close()


class _Connection(asyncio.Protocol):
    def __init__(self, server: _Server) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._queue: deque[_Request | _Refusal] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        # while the parser runs (``data_received``), the last timer change it asked for: one
        # real change per chunk, not one per parser event (a whole request in one chunk
        # armed and cancelled the head and body timers for nothing)
        self._feeding = False
        self._deferred: tuple[float, Callable[[], None]] | object | None = _UNCHANGED
        self._loop = asyncio.get_running_loop()
        self._lost = False
        self._refused = False  # parsing stopped; the queue ends with a refusal
        self._reading_paused = False
        self._queued_bytes = 0  # bodies waiting in the queue
        self._writable: asyncio.Future[None] | None = None
        # the message being read
        self._in_message = False
        self._in_head = False
        self._head_bytes = 0
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0

    @property
    def idle(self) -> bool:
        return not self._in_message and not self._queue and self._worker is None

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    # -- transport events ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = stream = cast(asyncio.Transport, transport)
        if not self._server.admit(self):
            stream.abort()
            return
        self._arm(HEAD_TIMEOUT, self._on_idle)  # a fresh connection must start a request soon

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._cancel_timer()
        self._server.connections.pop(self, None)
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._in_message or self._in_head:
            self._head_bytes += len(data)
        self._feeding = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not supported")
        except httptools.HttpParserError:
            if not self._refused:
                self._refuse(400, "malformed HTTP request")
        finally:
            self._feeding = False
            deferred, self._deferred = self._deferred, _UNCHANGED
            if deferred is None:
                self._cancel_timer()
            elif deferred is not _UNCHANGED:
                self._arm(*cast(tuple[float, Callable[[], None]], deferred))
        if self._in_head and self._head_bytes > MAX_HEAD and not self._refused:
            self._refuse(431, f"the request head is larger than {MAX_HEAD} bytes")

    # -- parser callbacks (never raise: a refusal sets a flag the parser cannot see) -------

    def on_message_begin(self) -> None:
        self._in_message = self._in_head = True
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0
        self._arm(HEAD_TIMEOUT, self._on_slow_head)

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self._headers) >= MAX_HEADERS:
            self._refuse(431, f"more than {MAX_HEADERS} header fields")
            return
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        held = self._headers.get(key)
        self._headers[key] = text if held is None else f"{held}, {text}"

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        if self._refused:
            return
        if self._parser.should_upgrade():
            self._refuse(400, "protocol upgrades are not supported")
            return
        length = self._headers.get("content-length", "0").strip()
        if not length.isdigit() or len(length) > 18 or int(length) > self._server.max_body:
            self._refuse(413, f"request body is larger than {self._server.max_body} bytes")
            return
        self._arm(BODY_TIMEOUT, self._on_slow_body)
        if (
            self._headers.get("expect", "").lower() == "100-continue"
            and self._transport is not None
            and not self._queue
            and self._worker is None
        ):
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._size += len(body)
        if self._size > self._server.max_body:
            self._refuse(413, f"request body is larger than {self._server.max_body} bytes")
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        self._cancel_timer()
        if self._refused:
            return
        path = self._url.split(b"?", 1)[0].decode("latin-1")
        method = self._parser.get_method().decode("latin-1")
        body = b"".join(self._body)
        keep_alive = self._parser.should_keep_alive()
        self._body = []
        self._enqueue(_Request(method, path, self._headers, body, keep_alive))

    # -- answering -------------------------------------------------------------------------

    def _refuse(self, status: int, message: str) -> None:
        """Answer (in order, after any pipelined request before it) and close."""
        self._refused = True
        self._in_message = self._in_head = False
        self._cancel_timer()
        self._enqueue(_Refusal(status, _error_body(INVALID_REQUEST, message)))

    def _enqueue(self, item: _Request | _Refusal) -> None:
        self._queue.append(item)
        self._queued_bytes += len(item.body)
        if self._transport is not None and (
            len(self._queue) >= MAX_PIPELINE or self._queued_bytes > self._server.max_body
        ):
            self._transport.pause_reading()
            self._reading_paused = True
        if self._worker is None:
            self._worker = self._loop.create_task(self._work())

    async def _work(self) -> None:
        handler = self._server.handler
        transport = self._transport
        assert transport is not None
        while self._queue and not self._lost:
            item = self._queue[0]
            if isinstance(item, _Request):
                try:
                    status, body = await handler(item.method, item.path, item.headers, item.body)
                except Exception as exc:  # a handler bug must still answer, never leak details
                    log.error("handler failed", error_type=type(exc).__name__)
                    status, body = 500, _error_body(INTERNAL_ERROR, "internal server error")
                keep_alive = item.keep_alive
                if item.method == "HEAD":
                    body = b""
            else:
                status, body, keep_alive = item.status, item.body, False
            self._queue.popleft()
            self._queued_bytes -= len(item.body)
            if self._lost or transport.is_closing():
                break
            transport.write(_head(status, len(body), keep_alive) + body)
            if not keep_alive:
                self._queue.clear()
                transport.close()
                break
            if (
                self._reading_paused
                and len(self._queue) < MAX_PIPELINE // 2
                and self._queued_bytes <= self._server.max_body
            ):
                self._reading_paused = False
                transport.resume_reading()
            if self._writable is not None:
                await self._writable  # the client does not read: neither do we, meanwhile
        self._worker = None
        if not self._lost and not self._in_message and not self._refused:
            self._arm(IDLE_TIMEOUT, self._on_idle)

    # -- timers ----------------------------------------------------------------------------

    def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
        if self._feeding:
            self._deferred = (seconds, callback)
            return
        self._cancel_timer()
        self._timer = self._loop.call_later(seconds, callback)

    def _cancel_timer(self) -> None:
        if self._feeding:
            self._deferred = None
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_idle(self) -> None:
        self._timer = None
        if self.idle:
            self.close()

    def _on_slow_head(self) -> None:
        self._timer = None
        if self._in_head and not self._refused:
            self._refuse(408, f"the request head did not arrive within {HEAD_TIMEOUT:g} s")

    def _on_slow_body(self) -> None:
        """A body announced and not sent: a JSON-RPC answer (HTTP 200, as JSON-RPC errors
        are), then the connection closes."""
        self._timer = None
        if self._in_message and not self._refused:
            self._refused = True
            self._in_message = False
            message = f"the request body did not arrive within {BODY_TIMEOUT:g} s"
            self._enqueue(_Refusal(200, _error_body(INVALID_REQUEST, message)))


def _bind(host: str, port: int) -> socket.socket:
    """Listening socket, bound now: a port in use raises ``OSError`` before any work."""
    sock = socket.create_server((host, port), backlog=1024)
    sock.setblocking(False)
    return sock


async def _serve_socket(
    sock: socket.socket, handler: Handler, max_body: int, ready: Callable[[int], None] | None
) -> None:
    loop = asyncio.get_running_loop()
    state = _Server(handler, max_body)
    server = await loop.create_server(lambda: _Connection(state), sock=sock)
    if ready is not None:
        ready(int(sock.getsockname()[1]))
    try:
        await asyncio.get_running_loop().create_future()  # until cancelled
    finally:
        server.close()
        state.close_all()


async def serve(
    handler: Handler,
    host: str,
    port: int,
    *,
    ready: Callable[[int], None] | None = None,
    max_body: int = DEFAULT_MAX_BODY,
) -> None:
    """Serve until cancelled; ``ready(port)`` once listening (``port=0``: an ephemeral one)."""
    await _serve_socket(_bind(host, port), handler, max_body, ready)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on the platforms we serve
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(
    handler: Handler,
    host: str,
    port: int,
    *,
    on_start: Callable[[], Awaitable[None]] | None = None,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    max_body: int = DEFAULT_MAX_BODY,
) -> None:
    """Bind (``OSError`` at once), then ``on_start``, serve until SIGTERM/SIGINT, ``on_stop``."""
    sock = _bind(host, port)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task: Any = asyncio.current_task()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, task.cancel)
        try:
            if on_start is not None:
                await on_start()
            await _serve_socket(sock, handler, max_body, None)
        except asyncio.CancelledError:
            pass
        finally:
            if on_stop is not None:
                await on_stop()

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(main())
    finally:
        sock.close()
