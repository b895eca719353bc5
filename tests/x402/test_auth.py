"""X402Auth against a real reference network, a real ledger and a scripted x402 server."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from agentguard import PolicyDenied, Signer
from agentguard._exceptions import (
    BudgetExceeded,
    ConfigurationError,
    PaymentOutcomeUnknown,
    PaymentRejected,
    PaymentRequiredError,
)
from agentguard.ledger import Ledger, Limits
from agentguard.network.launcher import ReferenceNetwork
from agentguard.x402 import Allowances, X402Auth, receipt
from agentguard.x402._wire import MAX_HEADER_BYTES, encode_header

from .conftest import ALLOWANCES, SigningSpy, connect_async
from .fakes import (
    OTHER_TOKEN,
    PAYEE,
    STRANGER,
    TOKEN,
    TX,
    FakeServer,
    requirement,
    upto_requirement,
)

pytestmark = pytest.mark.integration

URL = "http://shop.test/paid"


def client(auth: X402Auth, server: FakeServer) -> httpx.Client:
    return auth.client(transport=server.transport())


def test_v2_exact_pays_once_and_commits(
    auth: X402Auth, ledger: Ledger, signer: Signer, signing_spy: SigningSpy
) -> None:
    server = FakeServer()
    with client(auth, server) as http:
        response = http.get(URL)
    assert response.status_code == 200 and response.json() == {"data": "paid content"}
    assert signing_spy.calls == ["sign_typed_data"]
    assert len(server.requests) == 2 and server.payers == [signer.address]
    (document,) = server.payments
    assert document["x402Version"] == 2
    assert document["accepted"] == requirement()  # echoed exactly as offered
    assert document["resource"]["url"] == URL
    assert "extensions" not in document  # the server did not advertise payment-identifier
    auth_fields = document["payload"]["authorization"]
    assert (auth_fields["to"], auth_fields["value"], auth_fields["validAfter"]) == (
        PAYEE,
        "10000",
        "0",
    )
    r = receipt(response)
    assert r is not None and (r.transaction, r.amount, r.authorized, r.pending, r.payer) == (
        TX,
        10_000,
        10_000,
        False,
        signer.address,
    )
    reservation = ledger.get(r.reservation_id)
    assert (reservation.state, reservation.amount) == ("committed", 10_000)
    assert reservation.reference == r.reference
    assert (
        r.reference
        == f"eip3009:8453:{TOKEN}:{r.payer}:{auth_fields['nonce']}:{auth_fields['validBefore']}"
    )


def test_v1_body_is_paid_with_x_payment(auth: X402Auth, signing_spy: SigningSpy) -> None:
    server = FakeServer(version=1)
    with client(auth, server) as http:
        response = http.get(URL)
    assert response.status_code == 200
    paid = server.requests[-1]
    assert "X-PAYMENT" in paid.headers and "PAYMENT-SIGNATURE" not in paid.headers
    (document,) = server.payments
    assert (document["x402Version"], document["scheme"], document["network"]) == (
        1,
        "exact",
        "base",
    )
    assert int(document["payload"]["authorization"]["validAfter"]) > 0  # v1: now - 600
    r = receipt(response)
    assert r is not None and r.x402_version == 1 and r.transaction == TX
    assert signing_spy.calls == ["sign_typed_data"]


async def test_async_client_with_async_guard(
    network: ReferenceNetwork, signer: Signer, ledger: Ledger, signing_spy: SigningSpy
) -> None:
    server = FakeServer()
    async with connect_async(network) as guard:
        auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES)
        async with auth.async_client(transport=server.async_transport()) as http:
            response = await http.get(URL)
    assert response.status_code == 200
    r = receipt(response)
    assert r is not None and ledger.get(r.reservation_id).state == "committed"
    assert signing_spy.calls == ["sign_typed_data"] and server.payers == [signer.address]


async def test_async_client_with_a_blocking_guard(auth: X402Auth, ledger: Ledger) -> None:
    server = FakeServer()
    async with auth.async_client(transport=server.async_transport()) as http:
        response = await http.get(URL)
    r = receipt(response)
    assert r is not None and ledger.get(r.reservation_id).state == "committed"


def test_blocking_client_refuses_an_async_guard(
    network: ReferenceNetwork, signer: Signer, ledger: Ledger
) -> None:
    auth = X402Auth(
        signer=signer, guard=connect_async(network), ledger=ledger, allowances=ALLOWANCES
    )
    with (
        pytest.raises(ConfigurationError, match="AsyncGuard"),
        auth.client(transport=FakeServer().transport()) as http,
    ):
        http.get(URL)


def test_cheapest_payable_option_is_chosen(auth: X402Auth) -> None:
    server = FakeServer(
        accepts=[
            requirement(amount="2000000"),  # above the local cap
            requirement(
                asset="0x1111111111111111111111111111111111111111", amount="1"
            ),  # not allowed
            requirement(
                scheme="exact", network="solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp", amount="1"
            ),
            requirement(amount="700"),
            requirement(asset=OTHER_TOKEN, amount="500"),
            requirement(amount="500"),
        ]
    )
    with client(auth, server) as http:
        http.get(URL)
    assert server.payments[0]["accepted"] == requirement(asset=OTHER_TOKEN, amount="500")


def test_payment_identifier_is_sent_when_advertised(auth: X402Auth) -> None:
    declared = {"info": {"required": False}, "schema": {"type": "object"}}
    server = FakeServer(extensions={"payment-identifier": declared})
    with client(auth, server) as http:
        response = http.get(URL)
    ext = server.payments[0]["extensions"]["payment-identifier"]
    assert ext["schema"] == {"type": "object"} and ext["info"]["required"] is False
    assert ext["info"]["id"].startswith("pay_") and 16 <= len(ext["info"]["id"]) <= 128
    r = receipt(response)
    assert r is not None and r.payment_id == ext["info"]["id"]


# -- bad server input: a typed error and no signature ----------------------------------------


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def header_402(value: str) -> httpx.Response:
    return httpx.Response(402, headers={"PAYMENT-REQUIRED": value}, json={})


def doc(*accepts: dict[str, Any]) -> str:
    return encode_header({"x402Version": 2, "resource": {"url": URL}, "accepts": list(accepts)})


BAD_402 = {
    "malformed base64": lambda: header_402("%%%not-base64%%%"),
    "base64 of garbage": lambda: header_402(b64(b"\x00\x01garbage")),
    "JSON that is not an object": lambda: header_402(b64(b'"hello"')),
    "unknown scheme": lambda: header_402(doc(requirement(scheme="stream"))),
    "unknown network": lambda: header_402(doc(requirement(network="eip155:1"))),
    "unknown v1-style network": lambda: header_402(doc(requirement(network="fantom"))),
    "amount above the cap": lambda: header_402(doc(requirement(amount="1000001"))),
    "asset not on the allowlist": lambda: header_402(
        doc(requirement(asset="0x1111111111111111111111111111111111111111"))
    ),
    "maxTimeoutSeconds above a day": lambda: header_402(doc(requirement(maxTimeoutSeconds=86_401))),
    "maxTimeoutSeconds zero": lambda: header_402(doc(requirement(maxTimeoutSeconds=0))),
    "oversized header": lambda: header_402("A" * (MAX_HEADER_BYTES + 4)),
    "amount with leading zero": lambda: header_402(doc(requirement(amount="010000"))),
    "amount in scientific notation": lambda: header_402(doc(requirement(amount="1e4"))),
    "amount as a JSON number": lambda: header_402(doc(requirement(amount=10000))),
    "exact without the token domain": lambda: header_402(doc(requirement(extra={}))),
    "exact over permit2": lambda: header_402(
        doc(
            requirement(
                extra={"name": "USD Coin", "version": "2", "assetTransferMethod": "permit2"}
            )
        )
    ),
    "upto with an untrusted spender": lambda: header_402(
        doc({**upto_requirement(), "extra": {"facilitatorAddress": STRANGER, "spender": STRANGER}})
    ),
    "402 with no requirements at all": lambda: httpx.Response(402),
    "v1 body that is not JSON": lambda: httpx.Response(402, content=b"{nope"),
}


@pytest.mark.parametrize("case", sorted(BAD_402))
def test_bad_402_is_a_typed_error_and_nothing_is_signed(
    case: str, auth: X402Auth, ledger: Ledger, signing_spy: SigningSpy
) -> None:
    server = FakeServer(raw_402=BAD_402[case])
    with client(auth, server) as http, pytest.raises(PaymentRequiredError) as info:
        http.get(URL)
    assert signing_spy.calls == []
    assert len(server.requests) == 1 and server.payments == []
    assert "Nothing was signed" in str(info.value)
    assert ledger.usage(auth._agent, 86_400).count == 0


def test_policy_refusing_pay_to_is_policy_denied(
    auth: X402Auth, ledger: Ledger, signing_spy: SigningSpy
) -> None:
    server = FakeServer(accepts=[requirement(payTo=STRANGER)])
    with client(auth, server) as http, pytest.raises(PolicyDenied) as info:
        http.get(URL)
    assert "recipient" in str(info.value).lower()
    assert signing_spy.calls == [] and server.payments == []
    assert ledger.usage(auth._agent, 86_400).count == 0


def test_budget_refusal_releases_the_attestation_and_signs_nothing(
    signer: Signer, guard: Any, ledger: Ledger, signing_spy: SigningSpy
) -> None:
    auth = X402Auth(
        signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES,
        limits=Limits(per_tx={TOKEN: 9_999}),
    )  # fmt: skip
    server = FakeServer()
    with client(auth, server) as http, pytest.raises(BudgetExceeded):
        http.get(URL)
    assert signing_spy.calls == [] and server.payments == []


# -- never pay twice --------------------------------------------------------------------------


def test_402_after_paying_is_rejected_never_resigned(
    auth: X402Auth, ledger: Ledger, signing_spy: SigningSpy
) -> None:
    server = FakeServer(after_payment="reject")
    with client(auth, server) as http, pytest.raises(PaymentRejected) as info:
        http.get(URL)
    assert info.value.reason == "invalid_exact_evm_nonce_already_used"
    assert signing_spy.calls == ["sign_typed_data"]
    assert len(server.requests) == 2 and len(server.payments) == 1
    reservation = ledger.get(info.value.reservation_id or "")
    assert reservation.state == "signed" and reservation.amount == 10_000  # still counted


def test_settlement_pending_returns_a_pending_receipt(
    auth: X402Auth, ledger: Ledger, signing_spy: SigningSpy
) -> None:
    server = FakeServer(after_payment="pending")
    with client(auth, server) as http:
        response = http.get(URL)
    r = receipt(response)
    assert r is not None and r.pending and r.transaction == TX
    assert ledger.get(r.reservation_id).state == "signed"
    assert signing_spy.calls == ["sign_typed_data"] and len(server.requests) == 2


def test_transport_error_after_paying_then_retry_resends_the_same_payment(
    auth: X402Auth, ledger: Ledger, signing_spy: SigningSpy
) -> None:
    declared = {"info": {"required": False}}
    server = FakeServer(after_payment="drop", extensions={"payment-identifier": declared})
    with client(auth, server) as http:
        with pytest.raises(PaymentOutcomeUnknown) as info:
            http.post(URL, json={"q": 1})
        assert "may have been taken" in str(info.value)
        assert ledger.get(info.value.reservation_id or "").state == "signed"
        assert auth.unanswered == (info.value.reservation_id,)
        server.after_payment = "ok"
        response = http.post(URL, json={"q": 1})  # the caller retries the same request
    assert response.status_code == 200
    assert signing_spy.calls == ["sign_typed_data"]  # one signature in all
    first, second = server.payments
    assert first == second  # identical payment, same nonce, same payment id
    assert second["extensions"]["payment-identifier"]["info"]["id"] == info.value.payment_id
    r = receipt(response)
    assert r is not None and r.reservation_id == info.value.reservation_id
    assert ledger.get(r.reservation_id).state == "committed" and auth.unanswered == ()


def test_plain_httpx_client_is_as_safe(auth: X402Auth, signing_spy: SigningSpy) -> None:
    server = FakeServer(after_payment="drop")
    with httpx.Client(auth=auth, transport=server.transport()) as http:
        with pytest.raises(httpx.ConnectError):
            http.get(URL)
        with pytest.raises(httpx.ConnectError):
            http.get(URL)
    assert signing_spy.calls == ["sign_typed_data"] and server.payments[0] == server.payments[1]


def test_a_different_request_pays_anew(auth: X402Auth, signing_spy: SigningSpy) -> None:
    server = FakeServer()
    with client(auth, server) as http:
        http.get(URL)
        http.get(URL + "?page=2")
    assert signing_spy.calls == ["sign_typed_data"] * 2
    nonces = {p["payload"]["authorization"]["nonce"] for p in server.payments}
    assert len(nonces) == 2


def test_paid_request_failing_without_receipt_stays_counted(auth: X402Auth, ledger: Ledger) -> None:
    server = FakeServer(after_payment="fail500")
    with client(auth, server) as http:
        response = http.get(URL)
    assert response.status_code == 500 and receipt(response) is None
    (reservation,) = [ledger.get(rid) for rid in _reservations(ledger, auth)]
    assert reservation.state == "signed"


def _reservations(ledger: Ledger, auth: X402Auth) -> list[str]:
    backend = ledger._backend
    return [r.id for r in backend.signed()]


# -- upto sessions ----------------------------------------------------------------------------


def test_upto_session_signs_once_and_keeps_the_maximum_counted(
    auth: X402Auth, ledger: Ledger, signing_spy: SigningSpy
) -> None:
    server = FakeServer(accepts=[upto_requirement("100000")], session="sess-1", charge=1_500)
    with client(auth, server) as http:
        responses = [http.post(URL, json={"n": i}) for i in range(4)]
    assert [r.status_code for r in responses] == [200] * 4
    assert signing_spy.calls == ["sign_typed_data"]  # one Permit2 signature for four requests
    assert len(server.payments) == 1 and server.seen_sessions == ["sess-1"] * 3
    permit = server.payments[0]["payload"]["permit2Authorization"]
    assert permit["permitted"]["amount"] == "100000" and permit["witness"]["to"] == PAYEE
    receipts = [receipt(r) for r in responses]
    assert all(r is not None and r.session == "sess-1" and r.amount == 1_500 for r in receipts)
    assert all(r is not None and r.authorized == 100_000 for r in receipts)  # the session's
    assert auth.sessions == {"POST http://shop.test/paid": ("sess-1", 6_000)}
    reservation_id = receipts[0].reservation_id  # type: ignore[union-attr]
    assert ledger.get(reservation_id).state == "signed"  # the maximum counts while open
    auth.close()
    # the payee's reported charges are not proof: the signed maximum stays counted until the
    # chain shows what was settled (ledger.recover(agentguard.x402.resolver(w3)))
    reservation = ledger.get(reservation_id)
    assert (reservation.state, reservation.amount, reservation.reserved) == (
        "signed",
        100_000,
        100_000,
    )
    assert auth.sessions == {}


def test_upto_session_with_unreported_charges_counts_the_maximum(
    auth: X402Auth, ledger: Ledger
) -> None:
    server = FakeServer(accepts=[upto_requirement("100000")], session="sess-2")
    with auth, client(auth, server) as http:
        first = http.get(URL)
        http.get(URL)
    r = receipt(first)
    assert r is not None and ledger.get(r.reservation_id).amount == 100_000


def test_upto_session_ended_by_the_server_pays_once_more(
    auth: X402Auth, ledger: Ledger, signing_spy: SigningSpy
) -> None:
    server = FakeServer(accepts=[upto_requirement("100000")], session="s-a", charge=10)
    with client(auth, server) as http:
        first = http.get(URL)
        server.session = "s-b"  # the server forgets s-a: the next request gets a 402
        second = http.get(URL)
    assert signing_spy.calls == ["sign_typed_data"] * 2
    r1, r2 = receipt(first), receipt(second)
    assert r1 is not None and r2 is not None and r2.session == "s-b"
    assert ledger.get(r1.reservation_id).state == "signed"  # the maximum, until the chain says
    assert ledger.get(r1.reservation_id).amount == 100_000
    auth.close()
    assert ledger.get(r2.reservation_id).amount == 100_000


def test_upto_reported_charge_is_not_committed(auth: X402Auth, ledger: Ledger) -> None:
    server = FakeServer(accepts=[upto_requirement("100000")], charge=2_345)
    with client(auth, server) as http:
        response = http.get(URL)
    r = receipt(response)
    assert r is not None and r.reported_charge == r.amount == 2_345  # the payee's report
    assert r.authorized == 100_000  # what was signed and stays counted
    assert (ledger.get(r.reservation_id).state, ledger.get(r.reservation_id).amount) == (
        "signed",
        100_000,
    )


def test_a_tiny_reported_upto_charge_is_only_the_servers_report(
    auth: X402Auth, ledger: Ledger
) -> None:
    """Attack: an ``upto`` payee (or a relay) reports a charge of 1 atomic unit, on the first
    request and on a later one of the session, or none at all. Before the fix the receipt's only
    number was that claim (``amount``), so a caller showing it made the call look cheap; now
    ``authorized`` is the signed maximum the ledger counts, and the claim is ``reported_charge``."""
    server = FakeServer(accepts=[upto_requirement("100000")], session="s-1", charge=1)
    with client(auth, server) as http:
        responses = [http.get(URL), http.get(URL)]
        server.charge = None
        responses.append(http.get(URL))
    receipts = [receipt(r) for r in responses]
    assert [(r.authorized, r.reported_charge) for r in receipts if r] == [
        (100_000, 1),
        (100_000, 1),
        (100_000, None),
    ]
    reservation = ledger.get(receipts[0].reservation_id)  # type: ignore[union-attr]
    assert (reservation.state, reservation.amount) == ("signed", 100_000)
    auth.close()


def test_allowances_are_validated() -> None:
    with pytest.raises(ConfigurationError):
        Allowances({})
    with pytest.raises(ConfigurationError):
        Allowances({TOKEN: 0})
    with pytest.raises(ConfigurationError):
        Allowances({"USDC": 1})
    with pytest.raises(ConfigurationError):
        Allowances({TOKEN: 1}, schemes=("exact", "stream"))


def test_free_endpoints_pass_through_untouched(auth: X402Auth, signing_spy: SigningSpy) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"free": True})

    with auth.client(transport=httpx.MockTransport(handler)) as http:
        response = http.get(URL)
    assert response.json() == {"free": True} and receipt(response) is None
    assert len(seen) == 1 and signing_spy.calls == []


def test_repr_and_errors_never_show_the_key(auth: X402Auth) -> None:
    server = FakeServer(after_payment="reject")
    with client(auth, server) as http, pytest.raises(PaymentRejected) as info:
        http.get(URL)
    key_hex = "a7" * 32
    assert key_hex not in repr(auth) and key_hex not in str(info.value)
