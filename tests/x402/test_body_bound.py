"""A 402 body is decoded within ``MAX_BODY_BYTES`` (+1): a small compressed body inflating to
megabytes (a compression bomb) is refused without ever holding the inflated body; below the
limit the bounded read answers exactly as httpx's own ``read`` (seeded random bodies, split
into random chunks, every encoding httpx decodes here)."""

from __future__ import annotations

import gzip
import random
import tracemalloc
import zlib
from typing import Any

import httpx
import pytest
import zstandard

from agentguard import Signer
from agentguard._exceptions import PaymentRequiredError
from agentguard.ledger import Ledger
from agentguard.x402 import X402Auth
from agentguard.x402._body import aread_bounded as _aread
from agentguard.x402._body import read_bounded as _read
from agentguard.x402._wire import MAX_BODY_BYTES

from .conftest import ALLOWANCES

BOMB = gzip.compress(b" " * (8 * 1024 * 1024), 9)  # 8 KiB on the wire, 8 MiB inflated
ZBOMB = zstandard.ZstdCompressor().compress(b" " * (8 * 1024 * 1024))  # 275 bytes


def test_a_zstd_bomb_is_read_out_to_the_limit_only() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(PaymentRequiredError, match="larger than"):
            _read(_response(ZBOMB, "zstd", random.Random(0)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024


def _deflate(data: bytes, wbits: int) -> bytes:
    z = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return z.compress(data) + z.flush()


ENCODE = {
    "": lambda b: b,
    "identity": lambda b: b,
    "gzip": gzip.compress,
    "deflate": lambda b: _deflate(b, zlib.MAX_WBITS),
    "deflate ": lambda b: _deflate(b, -zlib.MAX_WBITS),  # raw deflate, as httpx accepts
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
    "x-unknown": lambda b: b,  # passed as is, by httpx too
}


def _response(raw: bytes, encoding: str, rng: random.Random) -> httpx.Response:
    cuts = sorted(rng.randrange(len(raw) + 1) for _ in range(rng.randrange(4)))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    headers = {"content-encoding": encoding} if encoding else {}
    return httpx.Response(402, headers=headers, stream=_Chunks(chunks))


class _Chunks(httpx.SyncByteStream, httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Any:
        return iter(self._chunks)

    async def __aiter__(self) -> Any:
        for chunk in self._chunks:
            yield chunk


UNDECODABLE = "does not decode"  # httpx's DecodingError, refused as ours by the bounded read


def _old(response: httpx.Response) -> bytes | str | type[BaseException]:
    try:
        body = response.read()
    except httpx.DecodingError:
        return UNDECODABLE
    return PaymentRequiredError if len(body) > MAX_BODY_BYTES else body


def _kind(exc: PaymentRequiredError) -> str | type[BaseException]:
    return UNDECODABLE if UNDECODABLE in str(exc) else PaymentRequiredError


def _new(response: httpx.Response) -> bytes | str | type[BaseException]:
    try:
        return _read(response)
    except PaymentRequiredError as exc:  # never httpx's own DecodingError
        return _kind(exc)


async def _anew(response: httpx.Response) -> bytes | str | type[BaseException]:
    try:
        return await _aread(response)
    except PaymentRequiredError as exc:
        return _kind(exc)


def _bodies(rng: random.Random) -> list[bytes]:
    sizes = [0, 1, MAX_BODY_BYTES - 1, MAX_BODY_BYTES, MAX_BODY_BYTES + 1, 3 * MAX_BODY_BYTES]
    sizes += [rng.randrange(2 * MAX_BODY_BYTES) for _ in range(6)]
    return [bytes(rng.choice(b"ab {}") for _ in range(n)) for n in sizes]


async def test_bounded_reads_answer_as_httpx_does() -> None:
    rng = random.Random(1202)
    seen: set[object] = set()
    for body in _bodies(rng):
        for encoding, encode in ENCODE.items():
            raw = encode(body)
            for mangle in (lambda r: r, lambda r: r[: len(r) // 2] + b"\xff" * 9):
                wire = mangle(raw)
                seed = rng.randrange(2**32)
                want = _old(_response(wire, encoding.strip(), random.Random(seed)))
                got = _new(_response(wire, encoding.strip(), random.Random(seed)))
                agot = await _anew(_response(wire, encoding.strip(), random.Random(seed)))
                assert got == agot
                seen.add(got if isinstance(got, str | type) else bytes)
                if want == UNDECODABLE and got is PaymentRequiredError:
                    continue  # refused at the limit before the broken tail was reached
                assert got == want, (len(body), encoding)
    assert seen == {bytes, PaymentRequiredError, UNDECODABLE}  # every kind of answer reached


@pytest.mark.parametrize("encoding", ["br", "gzip, gzip", "deflate,gzip"])
async def test_unbounded_decoders_are_refused(encoding: str) -> None:
    with pytest.raises(PaymentRequiredError, match="Content-Encoding"):
        _read(_response(b"{}", encoding, random.Random(0)))
    with pytest.raises(PaymentRequiredError, match="Content-Encoding"):
        await _aread(_response(b"{}", encoding, random.Random(0)))


@pytest.mark.parametrize("form", ["auth=", "auth.client()"])
def test_a_compression_bomb_402_is_refused_without_inflating_it(
    form: str, signer: Signer, guard: Any, ledger: Ledger
) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(402, headers={"content-encoding": "gzip"}, stream=_Chunks([BOMB]))

    auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES)
    transport = httpx.MockTransport(handle)
    http = (
        httpx.Client(auth=auth, transport=transport)
        if form == "auth="
        else auth.client(transport=transport)
    )
    tracemalloc.start()
    try:
        with http, pytest.raises(PaymentRequiredError, match="larger than"):
            http.get("http://shop.test/paid")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024  # the old read held the 8 MiB inflated body (and more)
