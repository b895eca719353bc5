"""Findings 5 and 6 against the real reference network and ledger, with a scripted server."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from agentguard import Signer
from agentguard._exceptions import BudgetExceeded, PaymentOutcomeUnknown, PaymentRejected
from agentguard.ledger import Ledger, Limits, WindowCap
from agentguard.x402 import X402Auth, receipt

from .conftest import ALLOWANCES, SigningSpy
from .fakes import TOKEN, FakeServer, decode, upto_requirement

URL = "http://shop.test/paid"
USDC = 1_000_000


def test_upto_counts_the_signed_maximum_not_what_the_payee_reports(
    signer: Signer, guard, ledger: Ledger, signing_spy: SigningSpy
) -> None:
    """Before: each paid answer committed the payee's reported charge (1 unit), so 10 Permit2
    maxima of 1 USDC each — 10 USDC the payee could settle — fitted a 2 USDC window cap and the
    ledger counted 10 units. Now each signed maximum counts until the chain says otherwise."""
    auth = X402Auth(
        signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES,
        limits=Limits(windows=[WindowCap(TOKEN, 3600, 2 * USDC)]),
    )  # fmt: skip
    server = FakeServer(accepts=[upto_requirement(str(USDC))], charge=1)
    paid, refused = 0, 0
    with auth.client(transport=server.transport()) as http:
        for _ in range(10):
            try:
                response = http.get(URL)
            except BudgetExceeded:
                refused += 1
                continue
            assert response.status_code == 200 and receipt(response).amount == 1  # type: ignore[union-attr]
            paid += 1
    assert (paid, refused) == (2, 8)
    assert signing_spy.calls == ["sign_typed_data"] * 2 and len(server.payments) == 2
    assert ledger.usage(auth._agent, 3600).spent[TOKEN.lower()] == 2 * USDC


class SlowServer(FakeServer):
    """Holds each paid request a moment (so many are in flight at once) and, like a real
    facilitator, refuses an authorization nonce it has already seen."""

    def __init__(self) -> None:
        super().__init__()
        self.nonces: list[str] = []
        self.guard = threading.Lock()

    def handle(self, request: httpx.Request) -> httpx.Response:
        header = request.headers.get("PAYMENT-SIGNATURE")
        if header is not None:
            nonce = decode(header)["payload"]["authorization"]["nonce"]
            with self.guard:
                seen = nonce in self.nonces
                self.nonces.append(nonce)
            time.sleep(0.3)
            if seen:
                return httpx.Response(402, json={"error": "nonce already used"})
        return super().handle(request)


def test_concurrent_identical_requests_each_pay_their_own(
    signer: Signer, guard, ledger: Ledger, signing_spy: SigningSpy
) -> None:
    """Before: a request identical (method, URL, body) to one whose payment was still in flight
    was taken for a lost answer and re-sent that payment; under 30 concurrent identical GETs
    only 21-27 got their resource (the rest were refused as a reused nonce). Now only a payment
    whose answer was really lost is re-sent; concurrent requests get their own payment."""
    auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES)
    server = SlowServer()
    with auth.client(transport=server.transport()) as http, ThreadPoolExecutor(30) as pool:
        responses = list(pool.map(lambda _: http.get(URL), range(30)))
    assert [r.status_code for r in responses] == [200] * 30
    assert len(server.nonces) == len(set(server.nonces)) == 30
    assert signing_spy.calls == ["sign_typed_data"] * 30
    assert ledger.usage(auth._agent, 3600).count == 30 and auth.unanswered == ()


@pytest.mark.parametrize("identical", [True, False])
def test_only_a_really_lost_answer_is_resent(
    identical: bool, auth: X402Auth, signing_spy: SigningSpy
) -> None:
    server = FakeServer(after_payment="drop")
    with auth.client(transport=server.transport()) as http:
        with pytest.raises(PaymentOutcomeUnknown):
            http.post(URL, json={"q": 1})
        server.after_payment = "ok"
        http.post(URL, json={"q": 1 if identical else 2})
    first, second = server.payments
    assert (first == second) is identical
    assert len(signing_spy.calls) == (1 if identical else 2)


def test_every_payment_outcome_lands_in_the_audit_log(
    tmp_path, signer: Signer, guard, ledger: Ledger
) -> None:
    """Before: x402 payments never reached the audit log. Now each decision and outcome does,
    on the same hash chain as transactions."""
    from agentguard.audit import AuditLog

    audit = AuditLog(tmp_path / "audit.jsonl")
    auth = guard.x402(signer=signer, ledger=ledger, allowances=ALLOWANCES, audit=audit)
    for server in (
        FakeServer(),
        FakeServer(accepts=[upto_requirement()], session="s", charge=3),
        FakeServer(after_payment="reject"),
        FakeServer(after_payment="drop"),
    ):
        with auth.client(transport=server.transport()) as http:
            for _ in range(2 if server.session else 1):
                try:
                    http.get(URL)
                except (PaymentRejected, PaymentOutcomeUnknown):
                    pass
    auth.close()
    kinds = [e.kind for e in audit.entries()]
    assert kinds == [
        "authorized", "signed", "committed",
        "authorized", "signed", "payment_charged", "payment_charged", "payment_session_closed",
        "authorized", "signed", "payment_rejected",
        "authorized", "signed", "outcome_unknown",
    ]  # fmt: skip
    assert audit.verify().ok
    assert all(e.record.get("rail") == "payment" for e in audit.entries())


@pytest.mark.parametrize("scheme", ["exact", "upto"])
def test_a_payment_is_never_valid_longer_than_its_attestation(
    scheme: str, auth: X402Auth, ledger: Ledger
) -> None:
    """A server asking for a day-long authorization gets one that ends when the attestation
    does (the Signer refuses anything longer; the attestation is what allowed it)."""
    from .fakes import requirement

    offer = upto_requirement() if scheme == "upto" else requirement()
    server = FakeServer(accepts=[{**offer, "maxTimeoutSeconds": 86_400}])
    with auth.client(transport=server.transport()) as http:
        response = http.get(URL)
    r = receipt(response)
    assert r is not None
    payload = server.payments[0]["payload"]
    until = int(
        payload["authorization"]["validBefore"]
        if scheme == "exact"
        else payload["permit2Authorization"]["deadline"]
    )
    bound = ledger.get(r.reservation_id)
    assert bound.task_id is not None and until == bound.expires_at < time.time() + 3600
