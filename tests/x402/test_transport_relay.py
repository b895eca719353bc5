"""``auth.client()``'s transport sends the flow's paid retry itself; ``httpx.Client(auth=...)``
over the same transport (unbound: no relay driving) runs the flow through httpx's auth
machinery as before. Differential: the same seeded random and hostile scripted servers
(402 variants, hostile 402s, lost and refused answers, redirects before the 402 and after the
payment, streaming bodies, cookies, ``upto`` sessions, event hooks, a repeated request) give
the same wire requests, answers (status, body, history, cookies, ``elapsed``), errors, audit
records, ledger usage, unanswered payments and httpx log lines through both forms."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from coincurve import PrivateKey

from agentguard import Signer, Verifier
from agentguard._guard import AsyncGuard, Guard
from agentguard.ledger import Ledger
from agentguard.x402 import X402Auth
from agentguard.x402._transport import RELAY_EXTENSION, AsyncTransport, Transport
from agentguard.x402._wire import encode_header
from tests.unit.conftest import POLICY_CLIENT, Operators

from .conftest import AGENT_KEY, ALLOWANCES
from .fakes import FakeServer, requirement, upto_requirement

OPERATORS = Operators([PrivateKey() for _ in range(3)])
URL = "http://shop.test/paid"
PAYMENT_HEADERS = {"payment-signature", "x-payment"}
GATES = ["v2", "v2", "v2", "v1", "upto", "garbage", "refused", "none", "500"]
AFTER = ["ok", "ok", "reject", "pending", "drop", "fail500", "no_receipt", "moved", "loop"]


class _Authorizer:
    def authorize(self, intent: Any, *, wasm_args: Any = None) -> Any:
        return OPERATORS.attest(intent, signers=[0, 1])

    def commit(self, task_id: str, outcome: str) -> None:
        return None

    def release(self, task_id: str) -> None:
        return None


class _AsyncAuthorizer:
    async def authorize(self, intent: Any, *, wasm_args: Any = None) -> Any:
        return OPERATORS.attest(intent, signers=[0, 1])

    async def commit(self, task_id: str, outcome: str) -> None:
        return None

    async def release(self, task_id: str) -> None:
        return None


class _Audit:
    def __init__(self) -> None:
        self.kinds: list[str] = []

    def append(self, kind: str, record: Any) -> None:
        self.kinds.append(kind)


class _Logs(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _scenario(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    return {
        "gate": rng.choice(GATES),
        "after": rng.choice(AFTER),
        "before": rng.choice([None, None, "same", "other"]),  # a redirect before the 402
        "cookie_402": rng.random() < 0.4,
        "cookie_end": rng.random() < 0.3,
        "follow": rng.random() < 0.6,
        "hooks": rng.random() < 0.15,
        "method": rng.choice(["GET", "POST"]),
        "body": rng.choice([None, "bytes", "stream"]),
        "repeat": rng.random() < 0.35,
        "streamed": rng.random() < 0.5,  # answers streamed (read and closed) or preset
    }


class _Server:
    """A scripted server for one scenario; ``wire`` records every request it received."""

    def __init__(self, s: dict[str, Any]) -> None:
        self.s = s
        self.wire: list[tuple[str, str, list[tuple[str, str]], bytes]] = []
        self.loops = 0
        accepts = [upto_requirement()] if s["gate"] == "upto" else [requirement()]
        if s["gate"] == "refused":
            accepts = [requirement(asset="0x" + "77" * 20)]
        self.fake = FakeServer(
            accepts=accepts,
            version=1 if s["gate"] == "v1" else 2,
            after_payment="ok" if s["after"] in {"moved", "loop"} else s["after"],
            session="sess-1" if s["gate"] == "upto" else None,
            charge=7 if s["gate"] == "upto" else None,
        )

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        headers = [
            (k.decode().lower(), "<paid>" if k.decode().lower() in PAYMENT_HEADERS else v.decode())
            for k, v in request.headers.raw
        ]
        self.wire.append((request.method, str(request.url), headers, body))
        s = self.s
        paid = any(name in PAYMENT_HEADERS for name, _ in headers)
        if request.url.host != "shop.test":
            return self._gate(request)  # another origin answers 402 too: it must not be paid
        if not paid and s["before"] and request.url.path == "/paid":
            where = "/moved" if s["before"] == "same" else "http://evil.test/paid"
            return httpx.Response(302, headers={"location": where})
        if paid and s["after"] == "moved":
            return httpx.Response(302, headers={"location": "http://evil.test/took"})
        if paid and s["after"] == "loop" and self.loops == 0:
            self.loops += 1
            return httpx.Response(307, headers={"location": str(request.url)})
        if paid or request.headers.get("x-upto-session"):
            response = self.fake.handle(request)
        else:
            response = self._gate(request)
        if s["cookie_end"] and response.status_code != 402:
            response.headers["set-cookie"] = "end=2; Path=/"
        return response

    def _gate(self, request: httpx.Request) -> httpx.Response:
        gate = self.s["gate"]
        if gate == "none":
            return httpx.Response(200, json={"free": True})
        if gate == "500":
            return httpx.Response(500, text="down")
        if gate == "garbage":
            response = httpx.Response(
                402, headers={"PAYMENT-REQUIRED": encode_header({"x402Version": 2})}, text="{"
            )
        else:
            response = self.fake.payment_required()
        if self.s["cookie_402"]:
            response.headers["set-cookie"] = "gate=1; Path=/"
        return response


def _body(s: dict[str, Any]) -> Any:
    if s["body"] == "bytes":
        return b'{"q": 1}'
    if s["body"] == "stream":
        return iter([b'{"q": ', b"2}"])
    return None


async def _abody(s: dict[str, Any]) -> AsyncIterator[bytes]:
    for chunk in (b'{"q": ', b"3}"):
        yield chunk


def _normal(text: str) -> str:
    return re.sub(r"0x[0-9a-fA-F]{16,}|[0-9a-f]{32,}|id=[^ ,)]+", "<x>", text)


def _answer(client: httpx.Client | httpx.AsyncClient, response: httpx.Response) -> Any:
    return (
        response.status_code,
        response.content,
        [(r.status_code, str(r.request.url), r.is_closed, r.content) for r in response.history],
        [_elapsed(r) for r in (*response.history, response)],
        sorted(client.cookies.items()),
        sorted(k for k in response.extensions if k.startswith("agentguard")),
    )


def _elapsed(response: httpx.Response) -> bool:
    """Whether ``elapsed`` is set (a mock answer built with its content never closes its
    stream on reading: it has none; a streamed one has it once read)."""
    try:
        return response.elapsed is not None
    except RuntimeError:
        return False


def _error(exc: BaseException) -> Any:
    return (type(exc).__name__, _normal(str(exc)))


def _auth(guard: Guard | AsyncGuard, audit: _Audit) -> X402Auth:
    signer = Signer.from_key(AGENT_KEY)
    return X402Auth(signer=signer, guard=guard, ledger=Ledger(), allowances=ALLOWANCES, audit=audit)


def _state(auth: X402Auth, audit: _Audit, server: _Server, logs: _Logs) -> Any:
    usage = auth._ledger.usage(auth._agent, 3600)
    return (
        server.wire,
        audit.kinds,
        repr(usage),
        len(auth.unanswered),
        {k: v[1] for k, v in auth.sessions.items()},
        [_normal(line) for line in logs.lines],
    )


def _hooks(seen: list[str]) -> dict[str, list[Any]]:
    return {
        "request": [lambda r: seen.append(f"> {r.method} {r.url}")],
        "response": [lambda r: seen.append(f"< {r.status_code} {r.request.url}")],
    }


def _sync_run(seed: int, fast: bool) -> Any:
    s = _scenario(seed)
    server, audit, logs = _Server(s), _Audit(), _Logs()
    seen: list[str] = []
    auth = _auth(
        Guard(_Authorizer(), Verifier(OPERATORS.addresses, policy_client=POLICY_CLIENT)), audit
    )
    options: dict[str, Any] = {"follow_redirects": s["follow"]}
    if s["hooks"]:
        options["event_hooks"] = _hooks(seen)

    def handle(request: httpx.Request) -> httpx.Response:
        response = server.handle(request)
        if not s["streamed"]:
            return response
        return httpx.Response(
            response.status_code, headers=response.headers, content=iter([response.content])
        )

    inner = httpx.MockTransport(handle)
    if fast:
        client = auth.client(transport=inner, **options)
    else:
        client = httpx.Client(auth=auth, transport=Transport(inner), **options)
    log = logging.getLogger("httpx")
    log.addHandler(logs)
    log.setLevel(logging.INFO)
    results: list[Any] = []
    try:
        with client:
            for _ in range(2 if s["repeat"] else 1):
                try:
                    response = client.request(s["method"], URL, content=_body(s))
                    results.append(_answer(client, response))
                except Exception as exc:
                    results.append(_error(exc))
    finally:
        log.removeHandler(logs)
    return results, seen, _state(auth, audit, server, logs)


async def _async_run(seed: int, fast: bool) -> Any:
    s = _scenario(seed)
    server, audit, logs = _Server(s), _Audit(), _Logs()
    seen: list[str] = []
    guard = AsyncGuard(
        _AsyncAuthorizer(), Verifier(OPERATORS.addresses, policy_client=POLICY_CLIENT)
    )
    auth = _auth(guard, audit)
    options: dict[str, Any] = {"follow_redirects": s["follow"]}
    if s["hooks"]:
        options["event_hooks"] = {
            name: [_async(hook) for hook in hooks] for name, hooks in _hooks(seen).items()
        }

    async def handle(request: httpx.Request) -> httpx.Response:
        await request.aread()
        response = server.handle(request)
        if not s["streamed"]:
            return response

        async def chunks() -> AsyncIterator[bytes]:
            yield response.content

        return httpx.Response(response.status_code, headers=response.headers, content=chunks())

    inner = httpx.MockTransport(handle)
    if fast:
        client = auth.async_client(transport=inner, **options)
    else:
        client = httpx.AsyncClient(auth=auth, transport=AsyncTransport(inner), **options)
    log = logging.getLogger("httpx")
    log.addHandler(logs)
    log.setLevel(logging.INFO)
    results: list[Any] = []
    try:
        async with client:
            for _ in range(2 if s["repeat"] else 1):
                content = _abody(s) if s["body"] == "stream" else _body(s)
                try:
                    response = await client.request(s["method"], URL, content=content)
                    results.append(_answer(client, response))
                except Exception as exc:
                    results.append(_error(exc))
    finally:
        log.removeHandler(logs)
    return results, seen, _state(auth, audit, server, logs)


def _async(hook: Any) -> Any:
    async def run(value: Any) -> None:
        hook(value)

    return run


@pytest.mark.parametrize("seed", range(160))
def test_the_client_transport_pays_as_the_auth_flow_does(seed: int) -> None:
    assert _sync_run(seed, fast=True) == _sync_run(seed, fast=False)


@pytest.mark.parametrize("seed", range(160))
def test_the_async_client_transport_pays_as_the_auth_flow_does(seed: int) -> None:
    assert asyncio.run(_async_run(seed, fast=True)) == asyncio.run(_async_run(seed, fast=False))


def test_the_scenarios_reach_every_path() -> None:
    """Paid and unpaid answers, errors, redirects in history, cookies from the 402, repeats."""
    runs = [_sync_run(seed, fast=True) for seed in range(160)]
    results = [r for run in runs for r in run[0]]
    statuses = {r[0] for r in results if isinstance(r[0], int)}
    errors = {r[0] for r in results if isinstance(r[0], str)}
    assert {200, 402, 500, 302} <= statuses
    assert {"PaymentOutcomeUnknown", "PaymentRejected"} <= errors
    assert any(402 in [h[0] for h in r[2]] for r in results if isinstance(r[0], int))
    assert any(("gate", "1") in r[4] for r in results if isinstance(r[0], int))
    assert any(run[2][3] for run in runs)  # a lost payment remembered
    assert any(run[2][4] for run in runs)  # an upto session open
    assert any(run[1] for run in runs)  # event hooks saw requests
    assert any(all(r[3]) for r in results if isinstance(r[0], int) and r[2])  # streamed, timed


def test_the_fast_path_sends_the_paid_retry_from_the_transport() -> None:
    """The lever itself: httpx's client machinery runs once for a paid request."""
    server = FakeServer()
    audit = _Audit()
    auth = _auth(
        Guard(_Authorizer(), Verifier(OPERATORS.addresses, policy_client=POLICY_CLIENT)), audit
    )
    sent: list[str] = []
    with auth.client(transport=server.transport()) as client:
        original = client._send_single_request

        def counted(request: httpx.Request) -> httpx.Response:
            sent.append(request.method)
            return original(request)

        client._send_single_request = counted  # type: ignore[method-assign]
        response = client.get(URL)
    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [402]
    assert len(server.requests) == 2 and sent == ["GET"]
    assert RELAY_EXTENSION not in response.request.extensions  # dropped when the flow ends
