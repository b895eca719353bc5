"""Red-team: the shared ledger goes down while a paid request is in flight.

The payment is made and the server answers 200 with a settlement receipt, but the ledger's
``commit`` meets a Redis that is down: ``LedgerUnavailable`` leaves ``X402Auth`` and the answer
the agent paid for is thrown away. The reservation stays ``signed`` (counted: the budget
holds), but an agent (or its framework's retry) asks again once Redis is back, and pays a second
time for the same answer.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from agentguard import Signer
from agentguard.ledger import Ledger, open_ledger
from agentguard.x402 import X402Auth
from tests.ledger.servers import Server, ServerUnavailable, start_redis
from tests.x402.conftest import ALLOWANCES
from tests.x402.fakes import TOKEN, FakeServer

URL = "http://shop.test/paid"


@pytest.fixture
def redis_server() -> Iterator[Server]:
    try:
        server = start_redis()
    except ServerUnavailable as exc:
        pytest.skip(f"no redis-server: {exc}")
    try:
        yield server
    finally:
        server.close()


class OutageServer(FakeServer):
    """Takes the payment and, while handling it, the ledger's Redis goes down."""

    redis: Server | None = None

    def handle(self, request: httpx.Request) -> httpx.Response:
        if "PAYMENT-SIGNATURE" in request.headers and self.redis is not None:
            self.redis.stop()
        return super().handle(request)


@pytest.mark.xfail(
    strict=True,
    reason="finding: a ledger outage at commit throws away a paid, settled answer "
    "(LedgerUnavailable); the retry pays a second time for the same answer",
)
def test_a_paid_answer_survives_a_ledger_outage_at_commit(
    signer: Signer, guard: object, redis_server: Server
) -> None:
    """Before a fix: the first GET raises LedgerUnavailable although the server answered 200,
    and its message says "Nothing was signed" (the class's hint) about a payment that was
    signed, sent and settled, with no reservation id or reference to reconcile it by."""
    ledger: Ledger = open_ledger(redis_server.url + "?namespace=outage")
    auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES)
    server = OutageServer()
    server.redis = redis_server
    try:
        with auth.client(transport=server.transport()) as http:
            try:
                first = http.get(URL)
            finally:
                server.redis = None
                redis_server.start()
            assert first.status_code == 200
        assert len(server.payments) == 1
        held = [r for r in ledger._backend.signed()]
        assert ledger.usage(auth._agent, 3600).spent[TOKEN.lower()] == 10_000 or held
    finally:
        auth.close()
        ledger.close()
