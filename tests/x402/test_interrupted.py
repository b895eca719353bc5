"""A hostile 402 body is read only up to ``MAX_BODY_BYTES`` (+1 byte), then refused and closed;
a run cancelled or interrupted before its payment was sent gives its hold back, one cancelled
after sending stays counted. Both client forms (``httpx`` with ``auth=``, ``auth.client()``),
sync and async; the endless bodies come from a real loopback server."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from agentguard import Signer
from agentguard._exceptions import PaymentRequiredError
from agentguard.ledger import Ledger
from agentguard.network.launcher import ReferenceNetwork
from agentguard.x402 import X402Auth

from .conftest import ALLOWANCES, connect_async
from .fakes import FakeServer
from .test_not_sent import Audit

pytestmark = pytest.mark.integration

FORMS = ["auth=", "auth.client()"]
CAP = 128 * 1024 * 1024  # what the server would send at most: a broken client reads it all


class Endless:
    """Answers every request with a 402 whose chunked v1 body never ends (until ``CAP``),
    counting the bytes it got out before the client hung up."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/paid"
        self.sent = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with self._listener:
            conn, _ = self._listener.accept()
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
            with conn:
                while b"\r\n\r\n" not in conn.recv(65536):
                    pass
                head = b"HTTP/1.1 402 Payment Required\r\nTransfer-Encoding: chunked\r\n"
                chunk = b'{"x402Version": 1, "accepts": [' + b" " * 65000
                try:
                    conn.sendall(head + b"Content-Type: application/json\r\n\r\n")
                    while self.sent < CAP:
                        conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.sent += len(chunk)
                except OSError:  # the client closed the response
                    pass

    def join(self) -> None:
        self._thread.join(30)
        assert not self._thread.is_alive()


@pytest.fixture
def endless() -> Iterator[Endless]:
    server = Endless()
    yield server
    server.join()


def counted(ledger: Ledger, signer: Signer) -> tuple[int, int]:
    usage = ledger.usage(signer.address, 86400)
    return usage.count, sum(usage.spent.values())


def _client(auth: X402Auth, form: str, **kwargs: Any) -> httpx.Client:
    return httpx.Client(auth=auth, **kwargs) if form == "auth=" else auth.client(**kwargs)


def _async_client(auth: X402Auth, form: str, **kwargs: Any) -> httpx.AsyncClient:
    if form == "auth=":
        return httpx.AsyncClient(auth=auth, **kwargs)
    return auth.async_client(**kwargs)


@pytest.mark.parametrize("form", FORMS)
def test_an_endless_402_body_is_refused_after_the_limit(
    form: str, signer: Signer, guard: Any, ledger: Ledger, endless: Endless
) -> None:
    auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES)
    with _client(auth, form) as http, pytest.raises(PaymentRequiredError, match="larger than"):
        http.get(endless.url)
    endless.join()  # the client closed the connection: the server stopped sending
    assert endless.sent < 16 * 1024 * 1024  # socket buffers, never the whole CAP
    assert counted(ledger, signer) == (0, 0)


@pytest.mark.parametrize("form", FORMS)
async def test_an_endless_402_body_is_refused_after_the_limit_async(
    form: str, network: ReferenceNetwork, signer: Signer, ledger: Ledger, endless: Endless
) -> None:
    async with connect_async(network) as guard:
        auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES)
        async with _async_client(auth, form) as http:
            with pytest.raises(PaymentRequiredError, match="larger than"):
                await http.get(endless.url)
    await asyncio.to_thread(endless.join)
    assert endless.sent < 16 * 1024 * 1024
    assert counted(ledger, signer) == (0, 0)


@pytest.mark.parametrize("form", FORMS)
def test_a_402_body_at_the_limit_is_read(
    form: str, signer: Signer, guard: Any, ledger: Ledger
) -> None:
    """The limit itself still passes (a v1 body of exactly ``MAX_BODY_BYTES``), one more
    byte does not: the same answers as the parser's own check."""
    from agentguard.x402._wire import MAX_BODY_BYTES

    server = FakeServer(version=1)
    body = server.payment_required().content
    for size, refused in ((MAX_BODY_BYTES, False), (MAX_BODY_BYTES + 1, True)):
        padded = body + b" " * (size - len(body))

        def handle(request: httpx.Request, padded: bytes = padded) -> httpx.Response:
            if "X-PAYMENT" in request.headers:
                return server.handle(request)
            return httpx.Response(402, content=iter([padded[:1000], padded[1000:]]))

        auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES)
        with _client(auth, form, transport=httpx.MockTransport(handle)) as http:
            if refused:
                with pytest.raises(PaymentRequiredError, match="larger than"):
                    http.get("http://shop.test/paid")
            else:
                assert http.get("http://shop.test/paid").status_code == 200


class _Endless(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body yielding 64 KiB chunks lazily; counts them. Endless but for a 16 MiB stop, so a
    client reading it all fails the test instead of the machine."""

    def __init__(self) -> None:
        self.made = 0

    def __iter__(self) -> Iterator[bytes]:
        while self.made < 256:
            self.made += 1
            yield b" " * 65536

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self:
            yield chunk


def _paid_402_endless(server: FakeServer, body: _Endless) -> Any:
    """A payee answering the paid retry with a 402 whose body never ends."""

    def answer(request: httpx.Request) -> httpx.Response:
        response = server.handle(request)
        if not server.payments:
            return response
        return httpx.Response(402, headers=server.payment_required().headers, stream=body)

    return answer


@pytest.mark.parametrize("form", FORMS)
def test_an_endless_402_after_paying_is_refused_and_stays_counted(
    form: str, signer: Signer, guard: Any, ledger: Ledger
) -> None:
    """The paid retry's 402 body is read too (for the server's reason): the same cap. The
    payment was sent: it stays counted."""
    server, body = FakeServer(), _Endless()
    auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES)
    http = _client(auth, form, transport=httpx.MockTransport(_paid_402_endless(server, body)))
    with http, pytest.raises(PaymentRequiredError, match="larger than"):
        http.get("http://shop.test/paid")
    assert body.made == 2  # 64 KiB + 1 byte were wanted: two chunks
    assert len(server.payments) == 1 and counted(ledger, signer) == (1, 10_000)


@pytest.mark.parametrize("form", FORMS)
async def test_an_endless_402_after_paying_is_refused_and_stays_counted_async(
    form: str, network: ReferenceNetwork, signer: Signer, ledger: Ledger
) -> None:
    server, body = FakeServer(), _Endless()
    sync_answer = _paid_402_endless(server, body)

    async def answer(request: httpx.Request) -> httpx.Response:
        await request.aread()
        return sync_answer(request)  # type: ignore[no-any-return]

    async with connect_async(network) as guard:
        auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES)
        async with _async_client(auth, form, transport=httpx.MockTransport(answer)) as http:
            with pytest.raises(PaymentRequiredError, match="larger than"):
                await http.get("http://shop.test/paid")
    assert body.made == 2
    assert len(server.payments) == 1 and counted(ledger, signer) == (1, 10_000)


# -- cancelled or interrupted --------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
def test_an_interrupt_while_authorizing_releases_the_hold(
    form: str, signer: Signer, guard: Any, ledger: Ledger
) -> None:
    server = FakeServer()

    def interrupted(*_: Any, **__: Any) -> Any:
        assert counted(ledger, signer) == (1, 10_000)  # the hold is taken
        raise KeyboardInterrupt

    guard.authorize = interrupted
    audit = Audit()
    auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES, audit=audit)
    http = _client(auth, form, transport=server.transport())
    with http, pytest.raises(KeyboardInterrupt):
        http.get("http://shop.test/paid")
    assert counted(ledger, signer) == (0, 0) and server.payments == []
    assert auth.unanswered == () and audit.kinds == ["denied"]
    record = audit.records[0]
    assert record["error"] == "RequestNotSent" and "released" in record
    assert "interrupted (KeyboardInterrupt) before the payment" in record["detail"]


@pytest.mark.parametrize("form", FORMS)
async def test_a_cancel_while_authorizing_releases_the_hold(
    form: str, network: ReferenceNetwork, signer: Signer, ledger: Ledger
) -> None:
    server = FakeServer()
    authorizing = asyncio.Event()

    async def forever(*_: Any, **__: Any) -> Any:
        authorizing.set()
        await asyncio.Event().wait()

    async with connect_async(network) as guard:
        guard.authorize = forever  # type: ignore[method-assign]
        auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES)
        async with _async_client(auth, form, transport=server.async_transport()) as http:
            task = asyncio.create_task(http.get("http://shop.test/paid"))
            await authorizing.wait()
            assert counted(ledger, signer) == (1, 10_000)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert counted(ledger, signer) == (0, 0) and server.payments == []


@pytest.mark.parametrize("form", FORMS)
def test_an_interrupt_after_sending_stays_counted(
    form: str, signer: Signer, guard: Any, ledger: Ledger
) -> None:
    """The paid request reached the payee, then the caller was interrupted: the payee may
    take the payment, so it is never released."""
    server = FakeServer()

    def handle(request: httpx.Request) -> httpx.Response:
        response = server.handle(request)
        if server.payments:
            raise KeyboardInterrupt
        return response

    auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES)
    http = _client(auth, form, transport=httpx.MockTransport(handle))
    with http, pytest.raises(KeyboardInterrupt):
        http.get("http://shop.test/paid")
    assert len(server.payments) == 1 and counted(ledger, signer) == (1, 10_000)


@pytest.mark.parametrize("form", FORMS)
async def test_a_cancel_after_sending_stays_counted(
    form: str, network: ReferenceNetwork, signer: Signer, ledger: Ledger
) -> None:
    server = FakeServer()
    sent = asyncio.Event()

    async def handle(request: httpx.Request) -> httpx.Response:
        await request.aread()
        response = server.handle(request)
        if server.payments:
            sent.set()
            await asyncio.Event().wait()
        return response

    async with connect_async(network) as guard:
        auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES)
        async with _async_client(auth, form, transport=httpx.MockTransport(handle)) as http:
            task = asyncio.create_task(http.get("http://shop.test/paid"))
            await sent.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert len(server.payments) == 1 and counted(ledger, signer) == (1, 10_000)


async def test_a_cancel_while_a_blocking_guard_authorizes_in_a_thread_releases_the_hold(
    signer: Signer, guard: Any, ledger: Ledger
) -> None:
    """A ``Guard`` under the async client authorizes in a worker thread: cancelling the task
    leaves that thread to finish on its own, and its attestation is never used."""
    server = FakeServer()
    authorizing, finish = threading.Event(), threading.Event()

    def blocking(*_: Any, **__: Any) -> Any:
        authorizing.set()
        finish.wait(30)
        raise RuntimeError("never seen")

    guard.authorize = blocking
    auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES)
    try:
        async with auth.async_client(transport=server.async_transport()) as http:
            task = asyncio.create_task(http.get("http://shop.test/paid"))
            await asyncio.to_thread(authorizing.wait, 30)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert counted(ledger, signer) == (0, 0) and server.payments == []
    finally:
        finish.set()
