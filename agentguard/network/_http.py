"""A minimal HTTP/1.1 keep-alive client for the gateway → operator hop.

Every authorization makes one POST per operator, so this hop dominates the gateway's CPU.
General-purpose async clients spend far more per request than the operators spend
evaluating (httpx/httpcore costs about a millisecond of CPU per call, mostly in its
locking and async-library detection). The operators are our own servers (``_server``), so the
subset needed here is small: POST a JSON body, read a ``Content-Length`` response, reuse the
connection. Anything else (chunked bodies, redirects, odd status lines) is reported as an
operator failure, never guessed at.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

__all__ = ["HTTPError", "KeepAliveClient"]

MAX_RESPONSE = 1 << 20
MAX_IDLE = 64


class HTTPError(Exception):
    """Transport failure or a response this client does not accept."""


class KeepAliveClient:
    """POSTs to one URL over a small pool of persistent connections."""

    def __init__(self, url: str, *, token: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"operator URL {url!r} must be http://host:port/path")
        self.host = parts.hostname
        self.port = parts.port or 80
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self._head = (
            f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n{auth}"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, body: bytes, timeout: float) -> tuple[int, bytes]:
        """``(status, body)``; raises ``HTTPError`` or ``TimeoutError``."""
        async with asyncio.timeout(timeout):
            while self._idle:  # a reused connection may have been closed by the server
                reader, writer = self._idle.pop()
                try:
                    return await self._exchange(reader, writer, body)
                except _Stale:
                    writer.close()
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                raise HTTPError(f"cannot connect: {exc.strerror or type(exc).__name__}") from None
            try:
                return await self._exchange(reader, writer, body)
            except _Stale:
                writer.close()
                raise HTTPError("connection closed before a response") from None

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
    ) -> tuple[int, bytes]:
        try:
            writer.write(self._head + str(len(body)).encode() + b"\r\n\r\n" + body)
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if not exc.partial:
                    raise _Stale from None
                raise HTTPError("truncated response head") from None
            except ConnectionError:
                raise _Stale from None
            except asyncio.LimitOverrunError:
                raise HTTPError("response head too large") from None
            status, length, keep = _parse_head(head)
            try:
                data = await reader.readexactly(length)
            except asyncio.IncompleteReadError:
                raise HTTPError("truncated response body") from None
        except _Stale:
            raise
        except OSError as exc:
            writer.close()
            raise HTTPError(f"connection failed: {type(exc).__name__}") from None
        except BaseException:  # HTTPError, timeout, cancellation: the connection is unusable
            writer.close()
            raise
        if keep and len(self._idle) < MAX_IDLE:
            self._idle.append((reader, writer))
        else:
            writer.close()
        return status, data

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


_LENGTH_DIGITS = 18
"""Longest Content-Length read; anything longer is far past ``MAX_RESPONSE`` anyway."""


def _is_number(text: str, max_digits: int) -> bool:
    return 0 < len(text) <= max_digits and text.isascii() and text.isdigit()


class _Stale(Exception):
    """The connection was closed before any byte of a response arrived."""


_OK_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
"""How every answer of our operators' server (``_server._head``) begins."""


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    """Status, body length and keep-alive of a response head; ``HTTPError`` for any head that
    is not a plain HTTP/1.x one. Our operators' very head (``_OK_HEAD``, a length, the blank
    line) is read at once; any other goes through ``_parse_any_head``, which would read that
    one the same (``tests/unit/test_gateway_transport_head.py``)."""
    if head.startswith(_OK_HEAD):
        digits = head[len(_OK_HEAD) : -4]
        if head.endswith(b"\r\n\r\n") and 0 < len(digits) <= 7 and digits.isdigit():
            length = int(digits)
            if length <= MAX_RESPONSE:
                return 200, length, True
    return _parse_any_head(head)


def _parse_any_head(head: bytes) -> tuple[int, int, bool]:
    """Any head: numbers are length-checked before ``int`` (Python refuses to convert more
    than 4,300 digits with a ``ValueError``)."""
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if (
        len(status_line) < 2
        or not status_line[0].startswith("HTTP/1.")
        or not _is_number(status_line[1], 3)
    ):
        raise HTTPError("malformed status line")
    length: int | None = None
    keep = status_line[0] == "HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            if not _is_number(value.strip(), _LENGTH_DIGITS):
                raise HTTPError("malformed Content-Length")
            if length is not None and length != int(value):
                raise HTTPError("two different Content-Length headers")
            length = int(value)
        elif name == "transfer-encoding":
            raise HTTPError("chunked responses are not accepted from operators")
        elif name == "connection":
            keep = value.strip().lower() != "close" and (
                keep or value.strip().lower() == "keep-alive"
            )
    if length is None or length > MAX_RESPONSE:
        raise HTTPError("response without an acceptable Content-Length")
    return int(status_line[1]), length, keep
