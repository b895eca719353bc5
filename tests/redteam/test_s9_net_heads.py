"""Red team of the gateway→operator HTTP client's fast read of our operators' own response
head (``_http._parse_head``): a hostile operator's odd heads over a real socket are read as
the general parser reads them (accepted the same, refused with the same typed ``HTTPError``),
and bytes pipelined after a body never pass as an answer to a request it did not see
unrefused by the vote check (a stale vote is bound to another task)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from agentguard.network._http import HTTPError, KeepAliveClient, _parse_any_head, _parse_head

BODY = b'{"jsonrpc":"2.0","id":1,"result":{}}'
N = str(len(BODY)).encode()
OURS = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "

HEADS = {
    "ours": OURS + N + b"\r\n\r\n",
    "capitalised": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + N
    + b"\r\n\r\n",
    "UPPER": b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH: " + N + b"\r\n\r\n",
    "spaces": OURS + b"  " + N + b"  \r\n\r\n",
    "tab": OURS + b"\t" + N + b"\r\n\r\n",
    "leading zeros": OURS + b"000" + N + b"\r\n\r\n",
    "plus": OURS + b"+" + N + b"\r\n\r\n",
    "minus": OURS + b"-" + N + b"\r\n\r\n",
    "underscore": OURS + N[:1] + b"_" + N[1:] + b"\r\n\r\n",
    "arabic digits": OURS + "\u0663\u0666".encode() + b"\r\n\r\n",
    "two equal lengths": OURS + N + b"\r\ncontent-length: " + N + b"\r\n\r\n",
    "two lengths": OURS + N + b"\r\ncontent-length: 3\r\n\r\n",
    "chunked": OURS + N + b"\r\ntransfer-encoding: chunked\r\n\r\n",
    "close": OURS + N + b"\r\nconnection: close\r\n\r\n",
    "http/1.0": b"HTTP/1.0 200 OK\r\ncontent-length: " + N + b"\r\n\r\n",
    "500": b"HTTP/1.1 500 Oops\r\ncontent-length: " + N + b"\r\n\r\n",
    "no length": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n",
    "huge length": OURS + b"9" * 7 + b"\r\n\r\n",
    "length 0": OURS + b"0\r\n\r\n",
}


def _general(head: bytes) -> tuple[int, int, bool] | str:
    try:
        return _parse_any_head(head)
    except HTTPError:
        return "refused"


@pytest.mark.parametrize("name", sorted(HEADS))
def test_each_head_reads_as_the_general_parser_reads_it(name: str) -> None:
    head = HEADS[name]
    try:
        fast: tuple[int, int, bool] | str = _parse_head(head)
    except HTTPError:
        fast = "refused"
    assert fast == _general(head)


async def _exchange(answer: bytes, posts: int) -> list[tuple[int, bytes] | str]:
    """``posts`` requests over one client to a server that answers each with ``answer``."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(Exception):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                writer.write(answer)
                await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = KeepAliveClient(f"http://127.0.0.1:{port}/rpc", token="t" * 32)
    out: list[tuple[int, bytes] | str] = []
    try:
        for _ in range(posts):
            try:
                out.append(await client.post(b"{}", 5.0))
            except HTTPError:
                out.append("refused")
    finally:
        client.close()
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.01)
    return out


@pytest.mark.parametrize("name", sorted(HEADS))
def test_a_real_socket_agrees_with_the_parsers(name: str) -> None:
    head = HEADS[name]
    expected = _general(head)
    (got,) = asyncio.run(_exchange(head + BODY, 1))
    if expected == "refused":
        assert got == "refused"
    else:
        assert isinstance(expected, tuple)
        assert got == (expected[0], BODY[: expected[1]])


def test_junk_pipelined_after_a_body_is_refused_typed() -> None:
    """Garbage after the body: the next request on that connection reads it as its head and
    fails with the client's own typed error, never a dependency's exception."""
    got = asyncio.run(_exchange(HEADS["ours"] + BODY + b"GARBAGE\r\n\r\n", 2))
    assert got[0] == (200, BODY)
    assert got[1] == "refused"
