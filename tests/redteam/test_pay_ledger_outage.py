"""Red-team: the shared ledger goes down while a paid request is in flight.

The payment is made and the server answers 200 with a settlement receipt, but the ledger's
``commit`` meets a Redis that is down: ``LedgerUnavailable`` leaves ``X402Auth`` and the answer
the agent paid for is thrown away. The reservation stays ``signed`` (counted: the budget
holds), but an agent (or its framework's retry) asks again once Redis is back, and pays a second
time for the same answer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest

from agentguard import Guard, Signer
from agentguard.ledger import Ledger, open_ledger
from agentguard.x402 import X402Auth
from tests.ledger.servers import Server, ServerUnavailable, start_redis
from tests.x402.conftest import ALLOWANCES
from tests.x402.fakes import FakeServer

URL = "http://shop.test/paid"


class MemoryAudit:
    """An audit sink that keeps its records."""

    def __init__(self) -> None:
        self.records: list[tuple[str, Mapping[str, Any]]] = []

    def append(self, kind: str, record: Mapping[str, Any]) -> None:
        self.records.append((kind, dict(record)))


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


def test_a_paid_answer_survives_a_ledger_outage_at_commit(
    signer: Signer, guard: Guard, redis_server: Server
) -> None:
    """Before the fix: the first GET raised LedgerUnavailable although the server answered 200,
    and its message said "Nothing was signed" (the class's hint) about a payment that was
    signed, sent and settled, with no reservation id or reference to reconcile it by. Now the
    answer is returned, the hold stays signed (counted in full) and the audit log records
    ``outcome_unknown`` with the reference and reservation id for ``recover()``."""
    ledger: Ledger = open_ledger(redis_server.url + "?namespace=outage", create=True)
    audit = MemoryAudit()
    auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES, audit=audit)
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
        held = ledger._backend.signed()
        assert [r.state for r in held] == ["signed"]  # counted until recover() settles it
        unknown = [r for k, r in audit.records if k == "outcome_unknown"]
        assert len(unknown) == 1
        assert unknown[0]["reservation_id"] == held[0].id
        assert unknown[0]["reference"] == held[0].reference
        assert "Nothing was signed" not in unknown[0]["reason"]
    finally:
        auth.close()
        ledger.close()
