"""The lean keep-alive transport against a gateway that misbehaves at the socket level.

A raw TCP server on 127.0.0.1 plays the gateway; each case is run with the sync and the async
client, which share one response parser. The rule under attack: a ``newt_createTask`` is sent
again (without ``dedupe``) only if it provably never reached the gateway. A connection the
server closed before the request was written is detected before writing and replaced; once a
byte is written, a close, a reset or silence means "a task may exist", never a second send.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agentguard import (
    AsyncNewtonGateway,
    Attestation,
    ConfigurationError,
    GatewayProtocolError,
    GatewayUnavailable,
    NewtonGateway,
)
from agentguard._http_client import Origin, TransportError, _Parser

from .conftest import POLICY_CLIENT, bound
from .test_gateway_client import API_KEY
from .test_gateway_hostile import reference_result


class Conn:
    """One accepted connection, as the server's handler sees it."""

    def __init__(self, sock: socket.socket, server: RawServer) -> None:
        self.sock, self.server, self._buf = sock, server, b""

    def read_request(self) -> dict[str, Any] | None:
        """The next request's JSON body, or ``None`` when the client closed."""
        while b"\r\n\r\n" not in self._buf:
            data = self.sock.recv(65536)
            if not data:
                return None
            self._buf += data
        head, _, rest = self._buf.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(rest) < length:
            rest += self.sock.recv(65536)
        self._buf = rest[length:]
        body: dict[str, Any] = json.loads(rest[:length])
        self.server.seen.append((id(self), body))
        return body

    def answer(self, result: Any, request: dict[str, Any], *, close: bool = False) -> None:
        self.sock.sendall(http_answer(bound(result, request), request["id"], close=close))

    def reset(self) -> None:
        """Close with a TCP reset (SO_LINGER 0), as a crashing or hostile peer does."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def http_answer(result: Any, rpc_id: Any, *, close: bool = False) -> bytes:
    body = json.dumps({"jsonrpc": "2.0", "id": rpc_id, "result": result}).encode()
    extra = b"connection: close\r\n" if close else b""
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


class RawServer:
    def __init__(self, handle: Callable[[Conn], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.handle = handle
        self.seen: list[tuple[int, dict[str, Any]]] = []
        self.connections = 0
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            self.handle(Conn(sock, self))
        except OSError:
            pass

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[Conn], None]], RawServer]]:
    servers: list[RawServer] = []

    def start(handle: Callable[[Conn], None]) -> RawServer:
        servers.append(RawServer(handle))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


class Client:
    """The sync or the async client, one instance kept across calls (so connections are
    reused), driven through the same two methods."""

    def __init__(self, mode: str, url: str, **options: Any) -> None:
        kw = {"policy_client": POLICY_CLIENT, "api_key": API_KEY, "attempts": 3, **options}
        self.mode = mode
        if mode == "sync":
            self.sync = NewtonGateway(url, **kw)
        else:
            self.runner = asyncio.Runner()
            self.aio = AsyncNewtonGateway(url, **kw)

    def authorize(self, intent: Any) -> Attestation:
        if self.mode == "sync":
            return self.sync.authorize(intent)
        return self.runner.run(self.aio.authorize(intent))

    def close(self) -> None:
        if self.mode == "sync":
            self.sync.close()
        else:
            self.runner.run(self.aio.aclose())
            self.runner.close()


MODES = pytest.mark.parametrize("mode", ["sync", "async"])


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(mode: str, url: str, **options: Any) -> Client:
        made.append(Client(mode, url, **options))
        return made[-1]

    yield make
    for client in made:
        client.close()


@MODES
def test_connections_are_reused(raw_server, clients, operators, intent, mode):
    """The baseline the attacks below lean on: one connection serves many requests."""
    result = reference_result(operators, intent)

    def serve(conn: Conn) -> None:
        while (request := conn.read_request()) is not None:
            conn.answer(result, request)

    server = raw_server(serve)
    client = clients(mode, server.url)
    for _ in range(5):
        assert client.authorize(intent).allowed
    assert server.connections == 1 and len(server.seen) == 5


@MODES
def test_a_keep_alive_connection_the_server_closed_is_replaced_before_writing(
    raw_server, clients, operators, intent, mode
):
    """The server answers (keep-alive) and then closes the idle connection. The next
    ``newt_createTask`` at a gateway that does not deduplicate must go out on a new connection
    and succeed: the close was seen before anything was written, so nothing was lost. Written
    onto the dead connection instead, it would meet a reset and end as "a task may exist"."""
    result = reference_result(operators, intent)
    closed = threading.Event()

    def serve(conn: Conn) -> None:
        request = conn.read_request()
        assert request is not None
        conn.answer(result, request)  # no "connection: close": the client keeps it
        conn.sock.close()
        closed.set()

    server = raw_server(serve)
    client = clients(mode, server.url)
    assert client.authorize(intent).allowed
    assert closed.wait(10)
    assert client.authorize(intent).allowed
    assert server.connections == 2 and len(server.seen) == 2
    assert server.seen[0][1]["id"] != server.seen[1][1]["id"]  # two tasks asked, each once


@MODES
@pytest.mark.parametrize("how", ["close", "reset", "close mid-answer"])
def test_a_connection_lost_after_the_request_was_read_is_not_sent_again(
    raw_server, clients, operators, intent, mode, how
):
    """The gateway reads the request, then closes, resets, or closes halfway through its
    answer. It may have created the task: without dedupe the request is never sent again, and
    the error says a task may exist. (Seen from the client, a reset here is exactly what a
    connection closed just before the request arrived looks like; neither is proof that the
    request went unread, so neither is retried.)"""
    result = reference_result(operators, intent)

    def serve(conn: Conn) -> None:
        request = conn.read_request()
        assert request is not None
        if how == "reset":
            conn.reset()
            return
        if how == "close mid-answer":
            conn.sock.sendall(http_answer(result, request["id"])[:100])
        conn.sock.close()

    server = raw_server(serve)
    client = clients(mode, server.url)
    with pytest.raises(GatewayUnavailable, match="a task may exist"):
        client.authorize(intent)
    assert len(server.seen) == 1


@MODES
def test_at_a_deduplicating_gateway_a_lost_answer_is_retried_with_the_same_id(
    raw_server, clients, operators, intent, mode
):
    result = reference_result(operators, intent)

    def serve(conn: Conn) -> None:
        request = conn.read_request()
        assert request is not None
        if len(conn.server.seen) == 1:
            conn.reset()
            return
        conn.answer(result, request)

    server = raw_server(serve)
    assert clients(mode, server.url, dedupe=True).authorize(intent).allowed
    assert len(server.seen) == 2 and server.seen[0][1]["id"] == server.seen[1][1]["id"]


@MODES
@pytest.mark.parametrize("when", ["same write", "moments later"])
def test_a_second_unsolicited_answer_is_never_read_as_the_next_answer(
    raw_server, clients, operators, intent, mode, when
):
    """A gateway sends two answers to one request: the second (here a deny, and a hostile
    one could be anything) must not be taken as the answer to the next request. The
    connection carrying it is dropped; the next request gets its own answer."""
    allow = reference_result(operators, intent)
    deny = reference_result(operators, intent)
    deny["attestation"] = operators.attest(intent, decision="deny").to_json()
    deny["task_id"] = deny["attestation"]["task_id"]
    deny["task_response"]["evaluation_result"] = [0] * 32
    sent_second = threading.Event()

    def serve(conn: Conn) -> None:
        while (request := conn.read_request()) is not None:
            first = http_answer(allow, request["id"])
            # the attacker cannot know the next id; it sends its best guess: no id check
            # would help if this were read as a later answer with a guessed id
            second = http_answer(deny, request["id"])
            if when == "same write":
                conn.sock.sendall(first + second)
            else:
                conn.sock.sendall(first)
                conn.sock.sendall(second)
            sent_second.set()

    server = raw_server(serve)
    client = clients(mode, server.url)
    assert client.authorize(intent).allowed
    assert sent_second.wait(10)
    assert client.authorize(intent).allowed
    assert server.connections == 2


@MODES
def test_a_stalled_gateway_ends_at_the_deadline_and_is_not_sent_again(
    raw_server, clients, intent, mode
):
    def serve(conn: Conn) -> None:
        conn.read_request()
        conn.server.stop.wait(30)

    server = raw_server(serve)
    with pytest.raises(GatewayUnavailable, match=r"ReadTimeout.*a task may exist"):
        clients(mode, server.url, task_timeout=1).authorize(intent)
    assert len(server.seen) == 1


@MODES
def test_a_refused_connection_is_retried_as_never_sent(clients, intent, mode):
    """Nothing listens: the request never left, so it is tried ``attempts`` times and the
    error does not claim a task may exist."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(GatewayUnavailable, match="never reached the gateway: ConnectError") as info:
        clients(mode, f"http://127.0.0.1:{port}").authorize(intent)
    assert "task may exist" not in str(info.value)


@MODES
def test_a_huge_answer_is_refused_and_its_connection_dropped(
    raw_server, clients, operators, intent, mode
):
    """Content-Length of 2 MiB, actually sent: refused at 1 MiB, the connection not reused."""
    result = reference_result(operators, intent)

    def serve(conn: Conn) -> None:
        while (request := conn.read_request()) is not None:
            if len(conn.server.seen) == 1:
                size = 2 << 20
                conn.sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
                conn.sock.sendall(b" " * size)
            else:
                conn.answer(result, request)

    server = raw_server(serve)
    client = clients(mode, server.url)
    with pytest.raises(GatewayProtocolError, match="announces 2097152 bytes"):
        client.authorize(intent)
    assert client.authorize(intent).allowed
    assert server.connections == 2


def test_an_api_key_with_a_line_break_cannot_inject_headers():
    """``Bearer k\\r\\nX-Admin: 1`` would add a header of the attacker's choosing."""
    with pytest.raises(ConfigurationError, match="line break"):
        NewtonGateway("http://127.0.0.1:1", policy_client=POLICY_CLIENT, api_key="k\r\nx-a: 1")


# -- the sans-IO parser ------------------------------------------------------------------------


def parse(raw: bytes, *, eof: bool = True) -> tuple[int, bytes, bool]:
    parser = _Parser()
    parser.feed(raw)
    if eof:
        parser.feed(b"")
    assert parser.head()
    body = b""
    while (piece := parser.chunk()) is not None:
        assert piece, "needs more bytes than given"
        body += piece
    return parser.status, body, parser.keep_alive and not parser.leftover


@pytest.mark.parametrize(
    ("raw", "status", "body", "reusable"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 200, b"{}", True),
        (b"HTTP/1.1 200\r\ncontent-length: 2\r\n\r\n{}", 200, b"{}", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", 200, b"{}", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", 200, b"{}", False),
        (b"HTTP/1.1 200 OK\r\n\r\n{}", 200, b"{}", False),  # until close
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            200,
            b"",
            True,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;x=y\r\n{\r\n1\r\n}\r\n0\r\n"
            b"trailer: 1\r\n\r\n",
            200,
            b"{}",
            True,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 200 OK", 200, b"{}", False),
    ],
)
def test_parser_reads_honest_framing(raw, status, body, reusable):
    assert parse(raw) == (status, body, reusable)


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}",  # shorter than announced
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 40 + b"\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{}\r\n0\r\n\r\n",  # too long
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n",  # no last chunk
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 20 + b"\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + b"t: 1\r\n" * 20000,
        b"HTTP/1.1 200 OK\r\nX: 1\r\n folded\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
        b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n" * 9 + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"x: " + b"a" * 70000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Le",  # the head cut short
        b"",
    ],
)
def test_parser_refuses_hostile_framing(raw):
    with pytest.raises(TransportError) as info:
        parse(raw)
    assert info.value.sent  # an answer arrived (or began to): the request was read


@MODES
def test_an_idle_connection_is_trusted_only_briefly(
    raw_server, clients, operators, intent, mode, monkeypatch
):
    """Past ``IDLE_LIMIT`` a connection is closed unused, not written to: a server's own
    keep-alive timeout could close it just as the request arrives."""
    monkeypatch.setattr("agentguard._http_client.IDLE_LIMIT", 0.0)
    result = reference_result(operators, intent)

    def serve(conn: Conn) -> None:
        while (request := conn.read_request()) is not None:
            conn.answer(result, request)

    server = raw_server(serve)
    client = clients(mode, server.url)
    for _ in range(3):
        assert client.authorize(intent).allowed
    assert server.connections == 3


def test_an_async_client_outlives_its_event_loop(raw_server, operators, intent):
    """Connections belong to the loop that opened them: a second ``asyncio.run`` with the same
    client opens its own instead of touching the closed loop's."""
    result = reference_result(operators, intent)

    def serve(conn: Conn) -> None:
        while (request := conn.read_request()) is not None:
            conn.answer(result, request)

    server = raw_server(serve)
    client = AsyncNewtonGateway(server.url, policy_client=POLICY_CLIENT, api_key=API_KEY)
    assert asyncio.run(client.authorize(intent)).allowed
    assert asyncio.run(client.authorize(intent)).allowed
    asyncio.run(client.aclose())
    assert server.connections == 2


@pytest.mark.parametrize(
    ("url", "lean"),
    [
        ("http://127.0.0.1:8080/rpc", True),
        ("http://[::1]:8080/rpc?x=1", True),
        ("http://gateway.lan/rpc", True),
        ("https://gateway.newton.xyz/rpc", False),  # TLS stays with httpx
        ("http://user:pw@127.0.0.1:8080/rpc", False),
        ("http://127.0.0.1:8080/r pc", False),
        ("http://127.0.0.1:8080/rpcé", False),
        ("http://127.0.0.1:99999/rpc", False),
    ],
)
def test_which_urls_the_lean_client_takes(url, lean):
    assert Origin.handles(url) is lean


@MODES
def test_a_proxy_named_by_the_environment_is_still_used(
    raw_server, clients, operators, intent, mode, monkeypatch
):
    """httpx honours HTTP_PROXY; a gateway reached through one keeps going through it."""
    result = reference_result(operators, intent)

    def proxy(conn: Conn) -> None:
        while (request := conn.read_request()) is not None:
            conn.answer(result, request)

    server = raw_server(proxy)
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.setenv("NO_PROXY", "")
    assert clients(mode, "http://192.0.2.1:9/").authorize(intent).allowed  # TEST-NET: unroutable
    assert len(server.seen) == 1


def test_the_async_client_runs_on_uvloop(raw_server, operators, intent):
    """uvloop's transports are not ``asyncio.Transport`` subclasses (an isinstance check made
    every uvloop connection fail); the pool and the staleness check work on them too."""
    uvloop = pytest.importorskip("uvloop")
    result = reference_result(operators, intent)
    closed = threading.Event()

    def serve(conn: Conn) -> None:
        for _ in range(2):
            request = conn.read_request()
            if request is None:  # the second connection, closed by aclose
                return
            conn.answer(result, request)
        conn.sock.close()  # then the idle connection dies; the client must notice
        closed.set()

    server = raw_server(serve)

    async def run() -> None:
        async with AsyncNewtonGateway(
            server.url, policy_client=POLICY_CLIENT, api_key=API_KEY
        ) as client:
            for _ in range(2):
                assert (await client.authorize(intent)).allowed
            await asyncio.get_running_loop().run_in_executor(None, closed.wait, 10)
            assert (await client.authorize(intent)).allowed

    uvloop.run(run())
    assert server.connections == 2 and len(server.seen) == 3
