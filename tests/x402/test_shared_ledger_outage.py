"""x402 payments on a shared ledger (Redis, PostgreSQL) whose server goes down and comes back:
while it is down, nothing is signed and nothing is paid; once it is back, paying resumes."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from agentguard import Guard, Signer
from agentguard._exceptions import LedgerUnavailable
from agentguard.ledger import open_ledger
from agentguard.x402 import X402Auth, receipt
from tests.ledger.servers import Server, ServerUnavailable, start_postgres, start_redis

from .conftest import ALLOWANCES, SigningSpy
from .fakes import FakeServer

pytestmark = pytest.mark.integration

URL = "http://shop.test/paid"


@pytest.fixture(params=["redis", "postgres"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    try:
        started = {"redis": start_redis, "postgres": start_postgres}[request.param]()
    except ServerUnavailable as exc:
        pytest.skip(f"no {request.param} server on this machine: {exc}")
    yield started
    started.close()


def test_a_payment_while_the_ledger_is_down_signs_nothing_and_resumes_after(
    server: Server, signer: Signer, guard: Guard, signing_spy: SigningSpy
) -> None:
    ledger = open_ledger(server.url, create=True)
    auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES)
    shop = FakeServer()
    with auth.client(transport=shop.transport()) as http:
        assert http.get(URL).status_code == 200
    assert signing_spy.calls == ["sign_typed_data"] and len(shop.payments) == 1

    server.stop()
    down = FakeServer()
    with auth.client(transport=down.transport()) as http, pytest.raises(LedgerUnavailable):
        http.get(URL)
    assert signing_spy.calls == ["sign_typed_data"]  # no second signature
    assert down.payments == []  # and nothing reached the seller

    server.start()
    back = FakeServer()
    with auth.client(transport=back.transport()) as http:
        response: httpx.Response = http.get(URL)
    assert response.status_code == 200 and len(back.payments) == 1
    r = receipt(response)
    assert r is not None and ledger.get(r.reservation_id).state == "committed"
    ledger.close()
