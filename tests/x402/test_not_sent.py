"""A paid retry refused before any byte of it was written releases its hold; one that may have
been written stays counted. Real loopback sockets: the 402 comes from a real server, which then
closes its port (or reads the paid request and hangs up) before the client reconnects."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agentguard import Signer
from agentguard._exceptions import PaymentOutcomeUnknown, RequestNotSent
from agentguard.ledger import Ledger
from agentguard.network.launcher import ReferenceNetwork
from agentguard.x402 import X402Auth
from agentguard.x402._answer import Paid
from agentguard.x402._payment import Payment
from agentguard.x402._transport import NOT_SENT_EXTENSION, PAYMENT_EXTENSION, Transport
from agentguard.x402._wire import parse_payment_required

from .conftest import ALLOWANCES, SigningSpy, connect_async
from .fakes import FakeServer, requirement, upto_requirement

pytestmark = pytest.mark.integration


class Audit:
    def __init__(self) -> None:
        self.kinds: list[str] = []
        self.records: list[dict[str, Any]] = []

    def append(self, kind: str, record: Any) -> None:
        self.kinds.append(kind)
        self.records.append(dict(record))


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += conn.recv(65536)
    return data


def _raw_402(accepts: list[dict[str, Any]]) -> bytes:
    response = FakeServer(accepts=accepts).payment_required()
    body = response.content
    head = [b"HTTP/1.1 402 Payment Required", b"Connection: close"]
    head += [f"{k}: {v}".encode() for k, v in response.headers.items() if k != "content-length"]
    head += [b"Content-Length: %d" % len(body)]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class Shop:
    """Answers the first request with a 402 and closes the connection. Then, if ``swallow``,
    reads the paid request and hangs up without answering. Then closes its port."""

    def __init__(self, *, swallow: bool, accepts: list[dict[str, Any]] | None = None) -> None:
        self._accepts = accepts or [requirement()]
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/paid"
        self.seen: list[bytes] = []
        self._swallow = swallow
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with self._listener:
            conn, _ = self._listener.accept()
            with conn:
                self.seen.append(_read_request(conn))
                conn.sendall(_raw_402(self._accepts))
            if self._swallow:
                conn, _ = self._listener.accept()
                with conn:
                    self.seen.append(_read_request(conn))

    def join(self) -> None:
        self._thread.join(10)


@pytest.fixture(params=["exact", "upto"])
def shop(request: pytest.FixtureRequest) -> Iterator[Shop]:
    s = Shop(
        swallow=False, accepts=[upto_requirement() if request.param == "upto" else requirement()]
    )
    yield s
    s.join()


def counted(ledger: Ledger, signer: Signer) -> tuple[int, int]:
    usage = ledger.usage(signer.address, 86400)
    return usage.count, sum(usage.spent.values())


def test_a_paid_retry_to_a_closed_port_releases_its_hold_and_drops_the_payment(
    signer: Signer, guard: Any, ledger: Ledger, shop: Shop, signing_spy: SigningSpy
) -> None:
    """The port closes between the 402 and the paid retry: the connection never opened, so
    the signed payment never left the process. Before the fix it stayed counted as unknown."""
    audit = Audit()
    auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES, audit=audit)
    with auth.client() as http, pytest.raises(httpx.ConnectError) as info:
        http.get(shop.url)
    shop.join()
    assert signing_spy.calls == ["sign_typed_data"] and len(shop.seen) == 1
    assert auth.unanswered == () and counted(ledger, signer) == (0, 0)
    assert auth.sessions == {}  # an upto session is never kept for an unsent maximum
    assert "released" in audit.kinds and "outcome_unknown" not in audit.kinds
    assert "refused before sending (ConnectError)" in audit.records[-1]["reason"]
    # Nobody can take the unused signature off the request httpx's error still holds.
    request = info.value.request
    assert "PAYMENT-SIGNATURE" not in request.headers and "X-PAYMENT" not in request.headers
    assert PAYMENT_EXTENSION not in request.extensions
    assert NOT_SENT_EXTENSION not in request.extensions


async def test_the_async_client_awaits_the_release(
    network: ReferenceNetwork, signer: Signer, ledger: Ledger, shop: Shop
) -> None:
    async with connect_async(network) as guard:
        auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES)
        async with auth.async_client() as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(shop.url)
    assert auth.unanswered == () and counted(ledger, signer) == (0, 0)


class _RetryOnce(httpx.BaseTransport):
    """A user's retrying transport: a dropped connection is tried once more."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return self._inner.handle_request(request)
        except httpx.RemoteProtocolError:
            return self._inner.handle_request(request)


def test_a_connect_error_after_the_payment_was_written_stays_counted(
    signer: Signer, guard: Any, ledger: Ledger
) -> None:
    """Attack on the fix: the payee reads the paid request, hangs up and closes its port; the
    retry then fails to connect. The last error is a ConnectError before sending, but the
    payment was written on the first try: it stays counted (a fix trusting the error type
    alone would give the budget back for a signature the payee holds)."""
    shop = Shop(swallow=True)
    auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES)
    with auth.client(transport=_RetryOnce()) as http, pytest.raises(PaymentOutcomeUnknown):
        http.get(shop.url)
    shop.join()
    assert b"PAYMENT-SIGNATURE" in shop.seen[1].upper()
    assert len(auth.unanswered) == 1 and counted(ledger, signer) == (1, 10_000)


def test_a_lost_payment_resent_to_a_closed_port_stays_counted(
    signer: Signer, guard: Any, ledger: Ledger, signing_spy: SigningSpy
) -> None:
    """The first paid request was read and not answered; the caller re-sends it (the same
    signed bytes) and the port is closed by then. The re-send never left, but the first send
    did: the payment stays unanswered and counted, its header kept for the next re-send."""
    shop = Shop(swallow=True)
    auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES)
    with auth.client() as http:
        with pytest.raises(PaymentOutcomeUnknown) as lost:
            http.get(shop.url)
        shop.join()
        with pytest.raises(PaymentOutcomeUnknown):
            http.get(shop.url)
    assert auth.unanswered == (lost.value.reservation_id,)
    assert counted(ledger, signer) == (1, 10_000) and signing_spy.calls == ["sign_typed_data"]


def test_only_a_connect_failure_the_trace_shows_marks_a_request_unsent() -> None:
    """A transport raising httpx's ConnectError after reading the request (as a proxy or a
    mock may) proves nothing: without httpcore's trace of a failed connect, no mark. The
    marker error is believed (agentguard's own transports raise it before writing)."""
    url = "http://127.0.0.1:9/paid"
    answer = FakeServer().payment_required()
    req = parse_payment_required(answer.headers["PAYMENT-REQUIRED"], answer.content).accepts[0]
    payment = Payment(req, "PAYMENT-SIGNATURE", "signed", "reference", 0, None)
    paid = Paid(payment, "reservation", "0xpayer", url)

    def raising(exc: Exception, raised: type[Exception]) -> httpx.Request:
        request = httpx.Request("GET", url)
        request.extensions[PAYMENT_EXTENSION] = paid

        def handle(request: httpx.Request) -> httpx.Response:
            raise exc

        with pytest.raises(raised), Transport(httpx.MockTransport(handle)) as transport:
            transport.handle_request(request)
        return request

    assert (
        NOT_SENT_EXTENSION
        not in raising(httpx.ConnectError("reset"), PaymentOutcomeUnknown).extensions
    )
    marked = raising(RequestNotSent("refused before connecting"), RequestNotSent).extensions
    assert marked[NOT_SENT_EXTENSION].paid is paid
