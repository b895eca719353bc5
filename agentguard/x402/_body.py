"""The body of a 402 read within a bound: never more than ``MAX_BODY_BYTES`` taken from the
stream, decoded as httpx would (``Content-Encoding``) but never inflated past that bound either,
so an endless or a compression-bomb body costs us a bounded read and a ``PaymentRequiredError``.
"""

from __future__ import annotations

import io
import zlib

import httpx

try:  # httpx decodes zstd only where zstandard is installed; so does the bounded reader
    import zstandard
except ImportError:  # pragma: no cover - installed with the ``zstd`` extra
    zstandard = None  # type: ignore[assignment]

from agentguard._exceptions import PaymentRequiredError
from agentguard.x402._wire import MAX_BODY_BYTES

__all__ = ["aread_bounded", "read_bounded"]


def read_bounded(response: httpx.Response) -> bytes:
    """A body the flow reads (a 402's): at most ``MAX_BODY_BYTES`` are taken from the stream,
    decoded within that bound (a compression bomb never inflates past it); one byte past them
    closes it and refuses the answer (an endless body never hangs us)."""
    if response.is_stream_consumed:  # read already (built from bytes, or by an event hook)
        body = response.content
    else:
        bounded = _Bounded(response)
        try:
            for raw in response.iter_raw():
                if not bounded.take(raw):
                    response.close()
                    raise _too_large(response)
            response._content = body = bounded.body()  # what ``read`` keeps
        except httpx.DecodingError as exc:
            response.close()
            raise _undecodable(response, exc) from None
    if len(body) > MAX_BODY_BYTES:
        raise _too_large(response)
    return body


async def aread_bounded(response: httpx.Response) -> bytes:
    if response.is_stream_consumed:
        body = response.content
    else:
        bounded = _Bounded(response)
        try:
            async for raw in response.aiter_raw():
                if not bounded.take(raw):
                    await response.aclose()
                    raise _too_large(response)
            response._content = body = bounded.body()
        except httpx.DecodingError as exc:
            await response.aclose()
            raise _undecodable(response, exc) from None
    if len(body) > MAX_BODY_BYTES:
        raise _too_large(response)
    return body


_COMPRESSED = frozenset({"gzip", "deflate", "br", "zstd"})  # what httpx may decode


class _Bounded:
    """A body decoded as httpx would (``Content-Encoding``), but never past ``MAX_BODY_BYTES``
    + 1 bytes of output: gzip and deflate through ``zlib`` with an output limit, zstd (at most
    ``MAX_BODY_BYTES`` of it) read out to the limit; br and stacked encodings (no bounded
    decoder here) are refused. Unknown encodings pass as is."""

    def __init__(self, response: httpx.Response) -> None:
        names = response.headers.get_list("content-encoding", split_commas=True)
        used = [name for name in (n.strip().lower() for n in names) if name in _COMPRESSED]
        if len(used) > 1 or used == ["br"]:  # (the caller closes it)
            raise PaymentRequiredError(
                f"the HTTP {response.status_code} body's Content-Encoding "
                f"{', '.join(used)} is not read (only gzip or deflate, within a bound)"
            )
        if used == ["zstd"] and zstandard is None:  # httpx passes it as is: so do we
            used = []
        self._zstd = used == ["zstd"]
        self._zlib = None if not used or self._zstd else zlib.decompressobj(_WBITS[used[0]])
        self._retry = used == ["deflate"]  # zlib-wrapped, else raw deflate (as httpx)
        self._parts: list[bytes] = []
        self._size = 0

    def take(self, raw: bytes) -> bool:
        """Add ``raw`` (as received); ``False`` once the decoded body is past the limit."""
        while raw:
            room = MAX_BODY_BYTES + 1 - self._size
            part, raw = (raw, b"") if self._zlib is None else self._inflate(raw, room)
            self._parts.append(part)
            self._size += len(part)
            if self._size > MAX_BODY_BYTES:
                return False
        return True

    def _inflate(self, raw: bytes, room: int) -> tuple[bytes, bytes]:
        assert self._zlib is not None
        try:
            try:
                part = self._zlib.decompress(raw, room)
            except zlib.error:
                if not self._retry:
                    raise
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                part = self._zlib.decompress(raw, room)
        except zlib.error as exc:
            raise httpx.DecodingError(str(exc)) from exc
        self._retry = False
        return part, self._zlib.unconsumed_tail

    def body(self) -> bytes:
        """The whole body (its length still to be checked: a last flush may pass the limit)."""
        if self._zstd:
            return _unzstd(b"".join(self._parts))
        if self._zlib is not None:
            self._parts.append(self._zlib.flush(MAX_BODY_BYTES + 1))
        return b"".join(self._parts)


_WBITS = {"gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


def _unzstd(raw: bytes) -> bytes:
    """``raw`` zstd frames decoded to at most ``MAX_BODY_BYTES`` + 1 bytes (httpx advertises
    zstd when ``zstandard`` is installed, so a server may well answer with it)."""
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw), read_across_frames=True)
    parts: list[bytes] = []
    size = 0
    try:
        while size <= MAX_BODY_BYTES and (part := reader.read(MAX_BODY_BYTES + 1 - size)):
            parts.append(part)
            size += len(part)
        if size <= MAX_BODY_BYTES:  # within the limit: decoded as httpx does (its errors)
            parts, data = [], raw
            while True:
                inflate = zstandard.ZstdDecompressor().decompressobj()
                parts.append(inflate.decompress(data))
                if not (inflate.eof and (data := inflate.unused_data)):
                    break
            if not inflate.eof:
                raise httpx.DecodingError("Zstandard data is incomplete")
    except zstandard.ZstdError as exc:
        raise httpx.DecodingError(str(exc)) from exc
    return b"".join(parts)


def _undecodable(response: httpx.Response, exc: httpx.DecodingError) -> PaymentRequiredError:
    """A body that is not what its ``Content-Encoding`` says: the server's fault, refused as
    ours (after paying it stays counted, as for a body too large)."""
    return PaymentRequiredError(
        f"the HTTP {response.status_code} body does not decode as its Content-Encoding "
        f"says: {str(exc)[:200]}"
    )


def _too_large(response: httpx.Response) -> PaymentRequiredError:
    return PaymentRequiredError(
        f"the HTTP {response.status_code} body is larger than {MAX_BODY_BYTES} bytes"
    )
