"""Attacks on the lean HTTP/1.1 server (``agentguard.network._server``) that the gateway and
the operators run on: raw sockets against a real server on 127.0.0.1, with its limits made
small so each attack is cheap. Every test asserts what the attacker gets back (or that the
connection is closed) and that the server still answers an honest client afterwards."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agentguard.network import _server
from agentguard.network._rpc import BODY_TIMEOUT

MAX_BODY = 1024
HONEST = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


@dataclass
class Server:
    port: int
    loop: asyncio.AbstractEventLoop
    calls: list[tuple[str, str, bytes]] = field(default_factory=list)
    finished: list[bytes] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)

    def connect(self) -> socket.socket:
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return conn


async def _handler_for(server: Server) -> _server.Handler:
    async def handle(
        method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, bytes]:
        server.calls.append((method, path, body))
        if path == "/slow":  # blocks until the test opens the gate
            while not server.gate.is_set():
                await asyncio.sleep(0.01)
        if path == "/boom":
            raise RuntimeError("secret detail 0xdeadbeef")
        if path == "/big":
            return 200, b'"' + b"x" * 200_000 + b'"'
        server.finished.append(body)
        return 200, json.dumps({"path": path, "body": body.decode()}).encode()

    return handle


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setattr(_server, "HEAD_TIMEOUT", 0.5)
    monkeypatch.setattr(_server, "BODY_TIMEOUT", 0.5)
    monkeypatch.setattr(_server, "IDLE_TIMEOUT", 0.5)
    monkeypatch.setattr(_server, "MAX_CONNECTIONS", 8)
    monkeypatch.setattr(_server, "MAX_HEAD", 2048)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    srv = Server(0, loop)

    def on_ready(port: int) -> None:
        srv.port = port
        ready.set()

    async def main() -> None:
        handler = await _handler_for(srv)
        await _server.serve(handler, "127.0.0.1", 0, ready=on_ready, max_body=MAX_BODY)

    thread = threading.Thread(target=lambda: _run(loop, main()), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield srv
    srv.gate.set()

    def stop() -> None:
        for task in asyncio.all_tasks(loop):
            task.cancel()

    loop.call_soon_threadsafe(stop)
    thread.join(10)


def _run(loop: asyncio.AbstractEventLoop, coro: object) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(coro)  # type: ignore[arg-type]
    except asyncio.CancelledError:
        pass
    rest = asyncio.all_tasks(loop)  # handlers the test left running
    for task in rest:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
    loop.close()


def read_response(conn: socket.socket) -> tuple[bytes, bytes]:
    """One response ``(head, body)``; ``(b"", b"")`` if the server closed before any byte."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data, b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, "closed mid-body"
        body += chunk
    assert len(body) == length, "more bytes than one response"  # one response at a time here
    return head, body


def read_responses(conn: socket.socket, count: int) -> list[tuple[bytes, bytes]]:
    """``count`` responses that may arrive in one segment."""
    answers: list[tuple[bytes, bytes]] = []
    data = b""
    while len(answers) < count:
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            assert chunk, f"closed after {len(answers)} responses"
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(rest) < length:
            chunk = conn.recv(65536)
            assert chunk
            rest += chunk
        answers.append((head, rest[:length]))
        data = rest[length:]
    return answers


def closed(conn: socket.socket) -> bool:
    """Whether the server closed the connection (EOF or reset), reading what is left."""
    try:
        while conn.recv(65536):
            pass
    except ConnectionResetError:
        return True
    return True


def honest_call_works(server: Server) -> bool:
    with server.connect() as conn:
        conn.sendall(HONEST)
        head, body = read_response(conn)
    return head.startswith(b"HTTP/1.1 200") and json.loads(body)["body"] == "{}"


def test_an_honest_keep_alive_client_gets_answers_on_one_connection(server: Server) -> None:
    with server.connect() as conn:
        for i in range(3):
            body = json.dumps({"i": i}).encode()
            conn.sendall(
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            head, answer = read_response(conn)
            assert head.startswith(b"HTTP/1.1 200 OK") and b"content-type: application/json" in head
            assert json.loads(json.loads(answer)["body"]) == {"i": i}


def test_an_oversized_body_is_refused_before_it_is_read(server: Server) -> None:
    """A Content-Length past the bound: 413 with a JSON-RPC error, closed; the handler never
    runs and the body is never buffered."""
    with server.connect() as conn:
        conn.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        conn.sendall(b"x" * 4096)
        head, body = read_response(conn)
        assert head.startswith(b"HTTP/1.1 413") and b"connection: close" in head
        assert json.loads(body)["error"]["code"] == -32600
        assert closed(conn)
    assert server.calls == []
    assert honest_call_works(server)


def test_an_oversized_chunked_body_is_cut_off(server: Server) -> None:
    """No Content-Length to check up front: the body is counted as its chunks arrive."""
    chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
    with server.connect() as conn:
        conn.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        conn.sendall(chunk * 3)
        head, _ = read_response(conn)
        assert head.startswith(b"HTTP/1.1 413")
        assert closed(conn)
    assert server.calls == []


def test_a_small_chunked_body_is_read_whole(server: Server) -> None:
    with server.connect() as conn:
        conn.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"1\r\n{\r\n1\r\n}\r\n0\r\n\r\n"
        )
        head, body = read_response(conn)
    assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["body"] == "{}"


@pytest.mark.parametrize(
    "garbage",
    [
        b"GARBAGE\r\n\r\n",
        b"\x00\x01\x02\xff" * 64,
        b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"POST /echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
        b"POST /echo HTTP/9.9\r\n\r\n",
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    ],
)
def test_a_malformed_request_gets_400_and_a_close(server: Server, garbage: bytes) -> None:
    """Request smuggling material (two lengths, length and chunked) included: after a head
    the parser could not trust, nothing more on that connection is read."""
    with server.connect() as conn:
        conn.sendall(garbage + HONEST)
        head, body = read_response(conn)
        assert head.startswith(b"HTTP/1.1 400") and b"connection: close" in head, head
        assert json.loads(body)["error"]["code"] == -32600
        assert closed(conn)
    assert server.calls == []
    assert honest_call_works(server)


def test_an_endless_header_is_refused(server: Server) -> None:
    """Before a head bound, a parser buffers a header value until it ends: here it never does."""
    with server.connect() as conn:
        conn.sendall(b"POST /echo HTTP/1.1\r\nX-Long: ")
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(16_000):  # 64 MB, if nobody stopped reading
                conn.sendall(b"a" * 4096)
        # the server answered 431 and closed; the client may see the reset first
    assert server.calls == []
    assert honest_call_works(server)


def test_too_many_header_fields_are_refused(server: Server) -> None:
    head = b"POST /echo HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(100))
    with server.connect() as conn:
        conn.sendall(head + b"Content-Length: 2\r\n\r\n{}")
        answer, _ = read_response(conn)
        assert answer.startswith(b"HTTP/1.1 431")
        assert closed(conn)
    assert server.calls == []


def test_a_half_sent_head_is_answered_and_closed(server: Server) -> None:
    """A client that starts a request and stalls (slowloris) holds a connection only until
    ``HEAD_TIMEOUT``."""
    with server.connect() as conn:
        conn.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n")
        head, _ = read_response(conn)
        assert head.startswith(b"HTTP/1.1 408")
        assert closed(conn)
    assert server.calls == []


def test_a_connection_that_never_sends_is_closed(server: Server) -> None:
    with server.connect() as conn:
        assert conn.recv(10) == b""


def test_an_idle_keep_alive_connection_is_closed(server: Server) -> None:
    with server.connect() as conn:
        conn.sendall(HONEST)
        read_response(conn)
        assert conn.recv(10) == b""  # after IDLE_TIMEOUT, without a byte more


def test_a_dripped_body_gets_a_json_rpc_answer_then_a_close(server: Server) -> None:
    """As ``BODY_TIMEOUT`` promises callers of the gateway and operators."""
    assert BODY_TIMEOUT > 0
    with server.connect() as conn:
        conn.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        head, body = read_response(conn)
        assert head.startswith(b"HTTP/1.1 200")
        error = json.loads(body)["error"]
        assert error["code"] == -32600 and "did not arrive" in error["message"]
        assert closed(conn)
    assert server.calls == []


def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    """Forty requests in one write (more than the queue holds: reading pauses and resumes)."""
    requests = b""
    for i in range(40):
        body = str(i).encode()
        requests += (
            b"POST /n HTTP/1.1\r\nHost: x\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
    with server.connect() as conn:
        conn.sendall(requests)
        answers = read_responses(conn, 40)
    assert [json.loads(body)["body"] for _, body in answers] == [str(i) for i in range(40)]


def test_a_pipelined_request_after_a_slow_one_waits_its_turn(server: Server) -> None:
    with server.connect() as conn:
        conn.sendall(HONEST.replace(b"/echo", b"/slow") + HONEST)
        while len(server.calls) < 1:
            threading.Event().wait(0.01)
        assert len(server.calls) == 1  # the second has not started: answers stay in order
        server.gate.set()
        first, second = read_responses(conn, 2)
    assert json.loads(first[1])["path"] == "/slow" and json.loads(second[1])["path"] == "/echo"


def test_a_client_leaving_mid_request_loses_only_its_answer(server: Server) -> None:
    """The handler runs to completion (the gateway records an allow whoever waits for it);
    the server keeps serving others."""
    conn = server.connect()
    conn.sendall(HONEST.replace(b"/echo", b"/slow"))
    while not server.calls:
        threading.Event().wait(0.01)
    conn.close()
    server.gate.set()
    while not server.finished:
        threading.Event().wait(0.01)
    assert server.finished == [b"{}"]
    assert honest_call_works(server)


def test_a_client_leaving_mid_body_never_reaches_the_handler(server: Server) -> None:
    with server.connect() as conn:
        conn.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
    assert honest_call_works(server)
    assert [c[1] for c in server.calls] == ["/echo"] and server.calls[0][2] == b"{}"


def test_many_idle_connections_cannot_lock_out_an_honest_client(server: Server) -> None:
    """Past ``MAX_CONNECTIONS`` the oldest idle connection makes room."""
    squatters: list[socket.socket] = []
    try:
        for _ in range(_server.MAX_CONNECTIONS + 4):
            squatters.append(server.connect())
            squatters[-1].sendall(HONEST)
            assert read_response(squatters[-1])[0].startswith(b"HTTP/1.1 200")
        assert honest_call_works(server)
        assert sum(1 for conn in squatters if _is_closed_now(conn)) >= 4
    finally:
        for conn in squatters:
            conn.close()


def _is_closed_now(conn: socket.socket) -> bool:
    conn.settimeout(0.5)
    try:
        return conn.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_busy_connections_past_the_limit_refuse_the_newcomer(server: Server) -> None:
    """When every connection is busy none is closed under a request: the new one is refused
    (closed without an answer) until one frees up."""
    busy = [server.connect() for _ in range(_server.MAX_CONNECTIONS)]
    try:
        for conn in busy:
            conn.sendall(HONEST.replace(b"/echo", b"/slow"))
        while len(server.calls) < len(busy):
            threading.Event().wait(0.01)
        with server.connect() as late:
            try:
                late.sendall(HONEST)
                head, _ = read_response(late)
            except (ConnectionResetError, BrokenPipeError):
                head = b""  # refused with a reset
            assert head == b""
        server.gate.set()
        for conn in busy:
            assert read_response(conn)[0].startswith(b"HTTP/1.1 200")
    finally:
        for conn in busy:
            conn.close()
    assert honest_call_works(server)


def test_a_handler_bug_is_a_500_without_its_details(server: Server) -> None:
    with server.connect() as conn:
        conn.sendall(HONEST.replace(b"/echo", b"/boom"))
        head, body = read_response(conn)
    assert head.startswith(b"HTTP/1.1 500") and b"deadbeef" not in body
    assert json.loads(body)["error"]["code"] == -32603


def test_a_client_that_does_not_read_cannot_make_the_server_buffer_without_end(
    server: Server,
) -> None:
    """Pipelined requests for big answers, never read: the server stops reading that client
    (write backpressure, then the pipeline bound) and keeps serving others."""
    conn = server.connect()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.setblocking(False)
    request = HONEST.replace(b"/echo", b"/big")
    sent = 0
    try:
        for _ in range(100_000):
            sent += conn.send(request * 100)
    except BlockingIOError:
        pass
    assert honest_call_works(server)  # the loop is not stuck on that client
    handled = sum(1 for call in server.calls if call[1] == "/big")
    print(f"sent {sent // len(request)} requests, {handled} handled")
    assert sent // len(request) > 10 * handled
    conn.close()


def test_http_1_0_is_answered_and_closed(server: Server) -> None:
    with server.connect() as conn:
        conn.sendall(b"POST /echo HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}")
        head, _ = read_response(conn)
        assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head
        assert closed(conn)


def _busy_port() -> tuple[socket.socket, int]:
    holder = socket.create_server(("127.0.0.1", 0))
    return holder, holder.getsockname()[1]


def test_run_raises_at_once_on_a_port_in_use() -> None:
    holder, port = _busy_port()
    started: list[bool] = []

    async def on_start() -> None:
        started.append(True)

    async def handler(m: str, p: str, h: Mapping[str, str], b: bytes) -> tuple[int, bytes]:
        return 200, b"{}"

    with holder, pytest.raises(OSError):
        _server.run(handler, "127.0.0.1", port, on_start=on_start)
    assert started == []


def test_an_operator_on_a_port_in_use_exits_2_without_claiming_to_listen(tmp_path: Path) -> None:
    key = tmp_path / "operator.key"
    key.write_text("11" * 32)
    token = tmp_path / "token"
    token.write_text("optok_test_1234567890abcdef")
    holder, port = _busy_port()
    with holder:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "agentguard.network.operator",
                "--port",
                str(port),
                "--key-file",
                str(key),
                "--token-file",
                str(token),
                "--registry",
                str(tmp_path / "registry.sqlite3"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2, done.stderr
    assert "listening" not in done.stdout
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


def test_a_gateway_on_a_port_in_use_exits_2_without_claiming_to_listen(tmp_path: Path) -> None:
    """Before: the gateway printed "listening" and then uvicorn failed to bind, so whoever
    waited for the line saw a server that was not there."""
    from agentguard.network.config import GatewaySettings, NetworkConfig, OperatorEntry

    holder, port = _busy_port()
    token = tmp_path / "operator.token"
    token.write_text("optok_test_1234567890abcdef")
    config = tmp_path / "network.json"
    NetworkConfig(
        gateway=GatewaySettings(port=port, state_db=str(tmp_path / "state.sqlite3")),
        operators=(
            OperatorEntry(
                address="0x" + "11" * 20, url="http://127.0.0.1:9/rpc", token_file=str(token)
            ),
        ),
        api_keys=(),
    ).save(config)
    with holder:
        done = subprocess.run(
            [sys.executable, "-m", "agentguard.network.gateway", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "listening" not in done.stdout
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


class _Transport:
    """Records what a connection does to its transport."""

    def __init__(self) -> None:
        self.paused = False
        self.written = b""
        self.closing = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


def test_queued_bodies_are_bounded_by_bytes_not_only_by_count() -> None:
    """Sixteen pipelined bodies of almost ``max_body`` each would hold 16 times max_body per
    connection; reading pauses as soon as the queued bodies pass ``max_body``."""

    async def scenario() -> None:
        gate = asyncio.Event()

        async def handler(m: str, p: str, h: Mapping[str, str], b: bytes) -> tuple[int, bytes]:
            await gate.wait()
            return 200, b"{}"

        connection = _server._Connection(_server._Server(handler, max_body=1000))
        transport = _Transport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        body = b"x" * 900
        one = b"POST /rpc HTTP/1.1\r\nContent-Length: 900\r\n\r\n" + body
        connection.data_received(one * 4)
        await asyncio.sleep(0)
        assert transport.paused  # three queued bodies (one running): 2,700 bytes > 1,000
        gate.set()
        for _ in range(20):
            await asyncio.sleep(0)
        assert not transport.paused and transport.written.count(b"HTTP/1.1 200") == 4
        connection.connection_lost(None)

    asyncio.run(scenario())


def test_timers_follow_the_message_not_each_parser_event() -> None:
    """A whole request in one chunk arms no head or body timer (only the idle one goes); one
    that arrives in pieces is timed from where it stands after each chunk: the head timer
    from its first byte (not re-armed by more head), the body timer from the head's end."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        armed: list[str] = []
        real = loop.call_later

        def call_later(delay: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
            armed.append(getattr(callback, "__name__", "?"))
            return real(delay, callback, *args)

        loop.call_later = call_later  # type: ignore[method-assign]

        async def handler(m: str, p: str, h: Mapping[str, str], b: bytes) -> tuple[int, bytes]:
            return 200, b"{}"

        connection = _server._Connection(_server._Server(handler, max_body=1000))
        transport = _Transport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        assert armed == ["_on_idle"]
        connection.data_received(HONEST)
        assert armed == ["_on_idle"] and connection._timer is None
        for _ in range(5):
            await asyncio.sleep(0)
        assert transport.written.count(b"HTTP/1.1 200") == 1
        assert armed == ["_on_idle", "_on_idle"]  # idle again, until the next request
        armed.clear()
        head, body = HONEST.split(b"\r\n\r\n")
        connection.data_received(head[:10])
        connection.data_received(head[10:20])
        assert armed == ["_on_slow_head"]
        connection.data_received(head[20:] + b"\r\n\r\n")
        assert armed == ["_on_slow_head", "_on_slow_body"]
        connection.data_received(body[:1])
        assert armed == ["_on_slow_head", "_on_slow_body"]
        connection.data_received(body[1:])
        assert connection._timer is None
        for _ in range(5):
            await asyncio.sleep(0)
        assert transport.written.count(b"HTTP/1.1 200") == 2
        connection.connection_lost(None)

    asyncio.run(scenario())
