"""Red team of ``auth.client()``'s relaying transport: it pays only what httpx's own auth
machinery would, once, to the URL that asked, and leaves a request httpx has handed the flow
an answer for, an auth wrapping ``X402Auth`` and a client it is not bound to alone."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

import httpx
import pytest

from agentguard import Verifier
from agentguard._guard import AsyncGuard, Guard
from agentguard.x402 import X402Auth
from agentguard.x402._transport import RELAY_EXTENSION, AsyncTransport, Transport
from tests.unit.conftest import POLICY_CLIENT

from .fakes import FakeServer
from .test_transport_relay import (
    OPERATORS,
    URL,
    _AsyncAuthorizer,
    _Audit,
    _auth,
    _Authorizer,
)


def _sync_auth() -> X402Auth:
    guard = Guard(_Authorizer(), Verifier(OPERATORS.addresses, policy_client=POLICY_CLIENT))
    return _auth(guard, _Audit())


def _async_auth() -> X402Auth:
    guard = AsyncGuard(
        _AsyncAuthorizer(), Verifier(OPERATORS.addresses, policy_client=POLICY_CLIENT)
    )
    return _auth(guard, _Audit())


def _used(auth: X402Auth) -> str:
    return repr(auth._ledger.usage(auth._agent, 3600))


def _counted(client: httpx.Client, sent: list[str]) -> None:
    original = client._send_single_request

    def counted(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        return original(request)

    client._send_single_request = counted  # type: ignore[method-assign]


def test_once_httpx_handed_the_flow_an_answer_the_transport_sends_nothing() -> None:
    """A 302 to another origin that answers 402: httpx hands that 402 to the flow; the paid
    retry then goes through httpx (once), never from the transport."""
    server = FakeServer()

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "shop.test" and not request.headers.get("payment-signature"):
            return httpx.Response(302, headers={"location": "http://evil.test/paid"})
        return server.handle(request)

    auth = _sync_auth()
    sent: list[str] = []
    with auth.client(transport=httpx.MockTransport(handle), follow_redirects=True) as client:
        _counted(client, sent)
        response = client.get(URL)
    wire = [str(r.url) for r in server.requests]
    assert response.status_code == 200
    assert len(server.payments) == 1
    # every request on the wire went through httpx: the transport sent none of its own
    assert sent == ["http://shop.test/paid", "http://evil.test/paid", "http://shop.test/paid"]
    assert wire == ["http://evil.test/paid", "http://shop.test/paid"]


def test_a_redirect_built_request_keeps_no_power_to_pay() -> None:
    """``response.next_request`` (built from the paid-for request's extensions) sent by the
    caller: its own flow runs; the stale relay it carried drives nothing."""
    server = FakeServer()

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/paid":
            return httpx.Response(302, headers={"location": "http://evil.test/other"})
        return server.handle(request)

    auth = _sync_auth()
    sent: list[str] = []
    with auth.client(transport=httpx.MockTransport(handle)) as client:
        first = client.get(URL)
        nxt = first.next_request
        assert nxt is not None and RELAY_EXTENSION in nxt.extensions  # the stale copy
        _counted(client, sent)
        response = client.send(nxt, auth=None)  # no flow: the stale relay must stay inert
        assert response.status_code == 402 and server.payments == []
        assert sent == ["http://evil.test/other"]


def test_event_hooks_added_after_the_client_was_made_see_every_answer() -> None:
    server = FakeServer()
    auth = _sync_auth()
    seen: list[int] = []
    with auth.client(transport=server.transport()) as client:
        client.event_hooks["response"].append(lambda r: seen.append(r.status_code))
        assert client.get(URL).status_code == 200
    assert seen == [402, 200]


def test_a_hook_refusing_the_402_on_another_client_sharing_the_transport_stops_payment() -> None:
    """A transport bound to one client reused by another: that client's hooks still rule."""
    server = FakeServer()
    auth = _sync_auth()

    def refuse(response: httpx.Response) -> None:
        if response.status_code == 402:
            raise RuntimeError("host refuses to pay")

    with auth.client(transport=server.transport()) as first:
        other = httpx.Client(
            auth=auth, transport=first._transport, event_hooks={"response": [refuse]}
        )
        with pytest.raises(RuntimeError, match="refuses"):
            other.get(URL)
    assert server.payments == []
    assert _used(auth) == _used(_sync_auth())


class _Veto(httpx.Auth):
    """A host's auth wrapping ``X402Auth``: hands a 402 on to it only for allowed paths."""

    def __init__(self, inner: X402Auth) -> None:
        self.inner = inner

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        flow = self.inner.sync_auth_flow(request)
        sent = next(flow)
        while True:
            response = yield sent
            if response.status_code == 402 and request.url.path != "/allowed":
                flow.close()
                return
            try:
                sent = flow.send(response)
            except StopIteration:
                return


def test_an_auth_wrapping_x402auth_still_sees_the_402_before_it_is_paid() -> None:
    server = FakeServer()
    auth = _sync_auth()
    with auth.client(transport=server.transport()) as client:
        response = client.get(URL, auth=_Veto(auth))
    assert response.status_code == 402
    assert server.payments == []


def test_concurrent_requests_on_one_async_client_pay_once_each() -> None:
    server = FakeServer()
    auth = _async_auth()

    async def run() -> list[int]:
        async with auth.async_client(transport=server.async_transport()) as client:
            answers = await asyncio.gather(*(client.get(f"{URL}?n={n}") for n in range(8)))
        return [a.status_code for a in answers]

    assert asyncio.run(run()) == [200] * 8
    assert len(server.payments) == 8
    assert len({p["payload"]["authorization"]["nonce"] for p in server.payments}) == 8


def _cancelled(relayed: bool) -> tuple[int, str, tuple[str, ...]]:
    """Cancel a request while the pipeline authorizes its 402 (inside the transport when
    relayed); what the server saw, the ledger and the unanswered payments."""
    server = FakeServer()
    started: list[asyncio.Event] = []

    class Slow(_AsyncAuthorizer):
        async def authorize(self, intent: Any, *, wasm_args: Any = None) -> Any:
            started[0].set()
            await asyncio.sleep(3600)

    guard = AsyncGuard(Slow(), Verifier(OPERATORS.addresses, policy_client=POLICY_CLIENT))
    auth = _auth(guard, _Audit())

    async def run() -> None:
        started.append(asyncio.Event())
        inner = server.async_transport()
        client = (
            auth.async_client(transport=inner)
            if relayed
            else httpx.AsyncClient(auth=auth, transport=AsyncTransport(inner))
        )
        async with client:
            task = asyncio.ensure_future(client.get(URL))
            await started[0].wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(run())
    return len(server.payments), _used(auth), auth.unanswered


def test_cancelled_between_the_402_and_the_paid_retry_as_under_httpx_auth() -> None:
    """Nothing signed is sent; the hold taken before authorizing stays until it expires,
    exactly as when httpx drives the flow (fail-safe: counted, never released early)."""
    relayed = _cancelled(True)
    assert relayed == _cancelled(False)
    assert relayed[0] == 0 and relayed[2] == ()


def test_the_sync_paid_retry_lost_is_outcome_unknown_and_stays_held() -> None:
    from agentguard._exceptions import PaymentOutcomeUnknown

    server = FakeServer(after_payment="drop")
    auth = _sync_auth()
    with auth.client(transport=server.transport()) as client, pytest.raises(PaymentOutcomeUnknown):
        client.get(URL)
    assert len(server.payments) == 1 and len(auth.unanswered) == 1
    assert _used(auth) != _used(_sync_auth())


def test_a_plain_httpx_client_over_the_transport_class_is_not_relayed() -> None:
    server = FakeServer()
    auth = _sync_auth()
    sent: list[str] = []
    with httpx.Client(auth=auth, transport=Transport(server.transport())) as client:
        _counted(client, sent)
        assert client.get(URL).status_code == 200
    assert len(sent) == 2


def _interrupted(relayed: bool, at: str) -> tuple[int, str, tuple[str, ...]]:
    """A ``KeyboardInterrupt`` in the sync client between the 402 and the paid retry: while
    authorizing, or as the paid retry leaves (the inner transport raising it)."""
    server = FakeServer()

    class Interrupted(_Authorizer):
        def authorize(self, intent: Any, *, wasm_args: Any = None) -> Any:
            if at == "authorize":
                raise KeyboardInterrupt
            return super().authorize(intent, wasm_args=wasm_args)

    def handle(request: httpx.Request) -> httpx.Response:
        if at == "send" and request.headers.get("payment-signature"):
            raise KeyboardInterrupt
        return server.handle(request)

    guard = Guard(Interrupted(), Verifier(OPERATORS.addresses, policy_client=POLICY_CLIENT))
    auth = _auth(guard, _Audit())
    inner = httpx.MockTransport(handle)
    client = (
        auth.client(transport=inner)
        if relayed
        else httpx.Client(auth=auth, transport=Transport(inner))
    )
    with client, pytest.raises(KeyboardInterrupt):
        client.get(URL)
    return len(server.payments), _used(auth), auth.unanswered


@pytest.mark.parametrize("at", ["authorize", "send"])
def test_interrupted_between_the_402_and_the_paid_retry_as_under_httpx_auth(at: str) -> None:
    relayed = _interrupted(True, at)
    assert relayed[:2] == _interrupted(False, at)[:2]
    assert len(relayed[2]) == (1 if at == "send" else 0)  # a paid retry that left: unknown
