"""A lean HTTP/1.1 keep-alive client for the agent → gateway hop over plain ``http://``.

httpx/httpcore cost about ten times the CPU of the exchange itself on this hop (locks,
async-library detection, per-request objects), and their 20-connection keep-alive pool made
32 concurrent callers open a new TCP connection for most requests. This client does one thing:
POST a prepared JSON body to one origin and hand back the status, the headers and the raw body
chunks (the caller's bounded reader judges them). One sans-IO response parser serves the sync
and the asyncio pool, so both read answers identically. ``https://`` stays with httpx: TLS
correctness matters more there than microseconds.

Retry safety is the point of ``TransportError.sent``. A request provably never reached the
server only if no byte of it was handed to the kernel: the connection could not be opened, or a
pooled connection was found closed (or holding unsolicited bytes) before writing, in which case
a fresh connection is used and nothing was lost. Once a byte is written, nothing the client
sees afterwards proves the server did not act on it: a server that closed an idle connection
just as the request arrived and one that read the request, acted on it and then closed (or
reset) look the same from here. So every failure after the first written byte is ``sent=True``;
and idle connections are reused only for ``IDLE_LIMIT`` seconds, shorter than common server
keep-alive timeouts (uvicorn: 5 s), so an honest server does not close one under a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from types import TracebackType
from typing import cast
from urllib.parse import urlsplit

__all__ = ["AsyncPool", "Origin", "SyncPool", "TransportError"]

MAX_HEAD = 64 * 1024  # status line + headers, like h11's limit
MAX_IDLE = 128  # idle connections kept per origin: 32+ concurrent callers all reuse theirs
IDLE_LIMIT = 4.0  # seconds an idle connection is trusted (below uvicorn's 5 s keep-alive)
_READ = 65536
_MAX_INTERIM = 8  # 1xx answers skipped before the real one
_MAX_CHUNK_LINE = 1024
_HIGH_WATER = 4 << 20  # async: stop reading a peer that sends faster than the caller reads


def _quiet(fd: int) -> bool:
    """Nothing has arrived on an idle connection: no EOF, no reset, no unsolicited bytes.
    ``poll`` where there is one (``select`` cannot watch descriptors past 1023)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
    readable, _, broken = select.select([fd], [], [fd], 0)  # pragma: no cover - Windows
    return not readable and not broken


class TransportError(Exception):
    """The exchange failed. ``kind`` names what happened (``ConnectError``, ``ReadTimeout``,
    ``RemoteProtocolError``, ...); ``sent`` is False only when the request provably never
    reached the server, the one case in which sending it again cannot act twice."""

    def __init__(self, kind: str, *, sent: bool, detail: str = "") -> None:
        super().__init__(kind)
        self.kind = kind
        self.sent = sent
        self.detail = detail  # a fixed phrase of this module's, never bytes from the peer


class Origin:
    """Where requests go and the request head prepared once (method, target, headers)."""

    @staticmethod
    def handles(url: str) -> bool:
        """A plain ``http://host[:port]/path`` in printable ASCII, without credentials: the
        URLs this client sends to as they are (httpx takes the rest, and quotes them)."""
        try:
            parts = urlsplit(url)
            _ = parts.port  # a port out of range raises
        except ValueError:
            return False
        printable = url.isascii() and url.isprintable() and " " not in url
        return (
            printable
            and parts.scheme == "http"
            and bool(parts.hostname)
            and parts.username is None
            and parts.password is None
            and not parts.fragment
        )

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        """``ValueError`` for a header value that would break the request head."""
        if not self.handles(url):
            raise ValueError("not a URL this client sends to as it is")
        parts = urlsplit(url)
        assert parts.hostname is not None
        self.host = parts.hostname
        self.port = parts.port or 80
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        host = parts.netloc
        lines = [f"POST {target} HTTP/1.1", f"Host: {host}"]
        for name, value in headers.items():
            if any(c in name + value for c in "\r\n\0") or not name.isascii() or ":" in name:
                raise ValueError(f"header {name!r} holds a line break, NUL or colon")
            lines.append(f"{name}: {value}")
        self.head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")

    def request(self, body: bytes) -> bytes:
        return self.head + str(len(body)).encode() + b"\r\n\r\n" + body


def _protocol(detail: str) -> TransportError:
    return TransportError("RemoteProtocolError", sent=True, detail=detail)


class _Parser:
    """Sans-IO reader of one HTTP/1.x response: ``feed`` bytes, then ``head()`` once and
    ``chunk()`` until ``done``. Framing is strict (one Content-Length, or chunked, or until
    close); anything else is a ``RemoteProtocolError``. Bytes past the end of the response
    mark the connection unusable (a second, unsolicited answer must never be read as the
    answer to the next request)."""

    __slots__ = (
        "_buf",
        "_chunk_left",
        "_chunked",
        "_eof",
        "_interim",
        "_left",
        "_trailers",
        "done",
        "headers",
        "keep_alive",
        "status",
    )

    def __init__(self) -> None:
        self._buf = bytearray()
        self._eof = False
        self._interim = 0
        self._left: int | None = None  # Content-Length bytes still to come; None: until close
        self._chunked = False
        self._chunk_left = 0  # chunked: bytes left in the current chunk; -1 between chunks
        self._trailers = 0  # bytes of trailer lines read
        self.done = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self.keep_alive = False

    def feed(self, data: bytes) -> None:
        if data:
            self._buf += data
        else:
            self._eof = True

    @property
    def leftover(self) -> bool:
        return bool(self._buf)

    def head(self) -> bool:
        """True once the final (non-1xx) head is parsed; False: more bytes needed."""
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD:
                    raise _protocol("head too large")
                if self._eof:
                    raise TransportError(
                        "RemoteProtocolError" if self._buf else "ServerDisconnected", sent=True
                    )
                return False
            if end > MAX_HEAD:
                raise _protocol("head too large")
            raw = bytes(self._buf[:end])
            del self._buf[: end + 4]
            if self._parse_head(raw):
                return True

    def _parse_head(self, raw: bytes) -> bool:
        lines = raw.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if version not in ("HTTP/1.1", "HTTP/1.0") or not (code.isascii() and code.isdigit()):
            raise _protocol("status line")
        if rest[3:4] not in ("", " "):
            raise _protocol("status line")
        status = int(code)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip() or " " in name or "\t" in name:
                raise _protocol("header line")  # also refuses obsolete line folding
            name, value = name.lower(), value.strip(" \t")
            if name in headers:
                if name == "content-length" and headers[name] != value:
                    raise _protocol("two Content-Lengths")
                if name != "content-length":
                    headers[name] = headers[name] + ", " + value
                continue
            headers[name] = value
        if 100 <= status < 200:
            self._interim += 1
            if status == 101 or self._interim > _MAX_INTERIM:
                raise _protocol("interim responses")
            return False
        self.status, self.headers = status, headers
        connection = {t.strip() for t in headers.get("connection", "").lower().split(",")}
        self.keep_alive = (
            "close" not in connection
            if version == "HTTP/1.1"
            else "keep-alive" in connection and "content-length" in headers
        )
        encoding = headers.get("transfer-encoding")
        length = headers.get("content-length")
        if status in (204, 304):
            self._left = 0
        elif encoding is not None:
            if encoding.lower() != "chunked" or length is not None:
                raise _protocol("transfer-encoding")
            self._chunked, self._chunk_left = True, -1
        elif length is not None:
            if not (length.isascii() and length.isdigit()) or len(length) > 18:
                raise _protocol("content-length")
            self._left = int(length)
        else:
            self.keep_alive = False  # the body runs until the server closes
        if self._left == 0:
            self.done = True
        return True

    def chunk(self) -> bytes | None:
        """The next piece of body, ``b""`` if more bytes are needed, ``None`` once done."""
        if self.done:
            return None
        if self._chunked:
            return self._chunked_piece()
        if not self._buf:
            if self._eof:
                if self._left is not None:
                    raise _protocol("body shorter than its Content-Length")
                self.done = True
                return None
            return b""
        if self._left is None:
            data = bytes(self._buf)
            self._buf.clear()
            return data
        data = bytes(self._buf[: self._left])
        del self._buf[: len(data)]
        self._left -= len(data)
        if self._left == 0:
            self.done = True
        return data

    def _chunked_piece(self) -> bytes | None:
        while True:
            if self._chunk_left > 0:
                if not self._buf:
                    if self._eof:
                        raise _protocol("chunked body cut short")
                    return b""
                data = bytes(self._buf[: self._chunk_left])
                del self._buf[: len(data)]
                self._chunk_left -= len(data)
                if self._chunk_left == 0:
                    self._chunk_left = -2  # the CRLF after the data
                return data
            end = self._buf.find(b"\r\n")
            if end < 0:
                if len(self._buf) > _MAX_CHUNK_LINE:
                    raise _protocol("chunk line too long")
                if self._eof:
                    raise _protocol("chunked body cut short")
                return b""
            line = bytes(self._buf[:end])
            del self._buf[: end + 2]
            if self._chunk_left == -2:  # the CRLF ending a chunk's data
                if line:
                    raise _protocol("chunk data longer than its size")
                self._chunk_left = -1
                continue
            if self._chunk_left == -3:  # trailers, until an empty line
                if not line:
                    self.done = True
                    return None
                self._trailers += len(line) + 2
                if self._trailers > MAX_HEAD:
                    raise _protocol("trailers too long")
                continue
            size = line.split(b";", 1)[0].strip()
            if not size or len(size) > 16 or size.strip(b"0123456789abcdefABCDEF"):
                raise _protocol("chunk size")
            self._chunk_left = int(size, 16)
            if self._chunk_left == 0:
                self._chunk_left = -3


# -- sync ------------------------------------------------------------------------------------


class _SyncConn:
    __slots__ = ("idle_since", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.idle_since = 0.0

    def usable(self, now: float) -> bool:
        """Checked before writing: a connection idle too long, or one the server closed or
        wrote to (``POLLIN`` on an idle connection is EOF, a reset or unsolicited bytes), is
        dropped with nothing sent on it."""
        return now - self.idle_since < IDLE_LIMIT and _quiet(self.sock.fileno())

    def close(self) -> None:
        self.sock.close()


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


class SyncResponse:
    """An answer being read; use as a context manager, which returns a cleanly finished
    connection to the pool and closes any other."""

    def __init__(self, pool: SyncPool, conn: _SyncConn, parser: _Parser, deadline: float) -> None:
        self._pool, self._conn, self._parser, self._deadline = pool, conn, parser, deadline
        self.status = parser.status
        self.headers = parser.headers

    def iter_raw(self) -> Iterator[bytes]:
        parser = self._parser
        while True:
            piece = parser.chunk()
            if piece is None:
                return
            if piece:
                yield piece
            else:
                parser.feed(self._pool._recv(self._conn, self._deadline))

    def __enter__(self) -> SyncResponse:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        parser = self._parser
        if kind is None and parser.done and parser.keep_alive and not parser.leftover:
            self._pool._release(self._conn)
        else:
            self._conn.close()


class SyncPool:
    """Keep-alive connections to one origin, shared by threads (each request holds one)."""

    def __init__(self, origin: Origin, *, connect_timeout: float) -> None:
        self._origin = origin
        self._connect_timeout = connect_timeout
        self._idle: deque[_SyncConn] = deque()
        self._closed = False

    def post(self, body: bytes, deadline: float) -> SyncResponse:
        """Send ``body`` and read the answer's head by ``deadline`` (``time.monotonic``)."""
        conn = self._acquire(deadline)
        try:
            self._send(conn, self._origin.request(body), deadline)
            parser = _Parser()
            while not parser.head():
                parser.feed(self._recv(conn, deadline))
        except BaseException:
            conn.close()
            raise
        return SyncResponse(self, conn, parser, deadline)

    def _acquire(self, deadline: float) -> _SyncConn:
        if self._closed:
            raise TransportError("ClientClosed", sent=False)
        now = time.monotonic()
        while True:
            try:
                conn = self._idle.pop()  # the most recent: the least likely to be stale
            except IndexError:
                break
            if conn.usable(now):
                return conn
            conn.close()
        try:
            timeout = min(self._connect_timeout, _remaining(deadline))
            sock = socket.create_connection((self._origin.host, self._origin.port), timeout)
        except TimeoutError:
            raise TransportError("ConnectTimeout", sent=False) from None
        except (OSError, UnicodeError):  # refused, unreachable, DNS (gaierror), bad host name
            raise TransportError("ConnectError", sent=False) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _SyncConn(sock)

    @staticmethod
    def _send(conn: _SyncConn, data: bytes, deadline: float) -> None:
        sent = 0
        view = memoryview(data)
        try:
            while sent < len(data):
                conn.sock.settimeout(_remaining(deadline))
                sent += conn.sock.send(view[sent:])
        except TimeoutError:
            raise TransportError("WriteTimeout", sent=sent > 0) from None
        except OSError:
            # a reset already waiting on the socket: the server had gone before any byte of
            # this request was accepted; after one byte, it may have read it
            raise TransportError("WriteError", sent=sent > 0) from None

    @staticmethod
    def _recv(conn: _SyncConn, deadline: float) -> bytes:
        try:
            conn.sock.settimeout(_remaining(deadline))
            return conn.sock.recv(_READ)
        except TimeoutError:
            raise TransportError("ReadTimeout", sent=True) from None
        except OSError:
            raise TransportError("ReadError", sent=True) from None

    def _release(self, conn: _SyncConn) -> None:
        if self._closed or len(self._idle) >= MAX_IDLE:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(IndexError):  # another thread may take the last one
            while True:
                self._idle.pop().close()


# -- asyncio ---------------------------------------------------------------------------------


class _AsyncConn(asyncio.Protocol):
    """One connection as an asyncio protocol: bytes land in a buffer the request reads."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.eof = False
        self.active = False  # a request owns the connection; bytes at other times are hostile
        self.idle_since = 0.0
        self.fd = -1
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's or uvloop's (which does not subclass asyncio.Transport): same methods
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.fd = sock.fileno()

    def data_received(self, data: bytes) -> None:
        if not self.active:  # unsolicited: a second answer, or junk on an idle connection
            self.eof = True
            self.close()
            return
        self.buf += data
        if len(self.buf) > _HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
            self._paused = True
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def usable(self, now: float) -> bool:
        """As ``_SyncConn.usable``; also polls the socket, since the loop may not have run
        the callbacks for a close that already arrived."""
        if self.eof or self.transport is None or self.transport.is_closing():
            return False
        if now - self.idle_since >= IDLE_LIMIT:
            return False
        return self.fd < 0 or _quiet(self.fd)

    async def read(self, deadline: float) -> bytes:
        """What has arrived (waiting for it until ``deadline``), ``b""`` at end of stream."""
        if not self.buf and not self.eof:
            waiter = self._waiter = self.loop.create_future()
            timer = self.loop.call_later(deadline - time.monotonic(), _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        data = bytes(self.buf)
        self.buf.clear()
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class AsyncResponse:
    """``SyncResponse`` for asyncio."""

    def __init__(self, pool: AsyncPool, conn: _AsyncConn, parser: _Parser, deadline: float) -> None:
        self._pool, self._conn, self._parser, self._deadline = pool, conn, parser, deadline
        self.status = parser.status
        self.headers = parser.headers

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        parser = self._parser
        while True:
            piece = parser.chunk()
            if piece is None:
                return
            if piece:
                yield piece
            else:
                parser.feed(await _read(self._conn, self._deadline))

    async def __aenter__(self) -> AsyncResponse:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        parser = self._parser
        clean = parser.done and parser.keep_alive and not parser.leftover and not self._conn.buf
        if kind is None and clean:
            self._pool._release(self._conn)
        else:
            self._conn.close()


async def _read(conn: _AsyncConn, deadline: float) -> bytes:
    try:
        return await conn.read(deadline)
    except TimeoutError:
        raise TransportError("ReadTimeout", sent=True) from None


class AsyncPool:
    """``SyncPool`` for asyncio. Connections belong to the event loop that opened them; a
    pool used from another loop drops them."""

    def __init__(self, origin: Origin, *, connect_timeout: float) -> None:
        self._origin = origin
        self._connect_timeout = connect_timeout
        self._idle: list[_AsyncConn] = []
        self._closed = False

    async def post(self, body: bytes, deadline: float) -> AsyncResponse:
        conn = await self._acquire(deadline)
        try:
            conn.active = True
            assert conn.transport is not None
            conn.transport.write(self._origin.request(body))
            parser = _Parser()
            while not parser.head():
                parser.feed(await _read(conn, deadline))
        except BaseException:
            conn.close()
            raise
        return AsyncResponse(self, conn, parser, deadline)

    async def _acquire(self, deadline: float) -> _AsyncConn:
        if self._closed:
            raise TransportError("ClientClosed", sent=False)
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        while True:
            try:  # not ``while self._idle``: another thread may take the last one in between
                conn = self._idle.pop()
            except IndexError:
                break
            if conn.loop is loop and conn.usable(now):
                return conn
            _drop(conn)
        try:
            timeout = min(self._connect_timeout, _remaining(deadline))
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: _AsyncConn(loop), self._origin.host, self._origin.port
                )
        except TimeoutError:
            raise TransportError("ConnectTimeout", sent=False) from None
        except (OSError, UnicodeError):
            raise TransportError("ConnectError", sent=False) from None
        return conn

    def _release(self, conn: _AsyncConn) -> None:
        conn.active = False
        if self._closed or len(self._idle) >= MAX_IDLE or conn.eof:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(IndexError):  # another thread may take the last one
            while True:
                _drop(self._idle.pop())


def _drop(conn: _AsyncConn) -> None:
    """Close a connection, also one whose event loop is gone."""
    try:
        conn.close()
    except RuntimeError:  # its loop is closed: end the connection; the descriptor goes with
        sock = conn.transport.get_extra_info("socket") if conn.transport else None  # the GC
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
