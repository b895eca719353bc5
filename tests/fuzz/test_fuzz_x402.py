"""Fuzz: what an x402 server sends (402 header and body, settlement receipts, upto charges).

A paid server is untrusted: its ``PAYMENT-REQUIRED`` decides what the agent is asked to sign.
The parsers must return a ``PaymentRequired`` (whose every requirement is fully valid) or
raise ``PaymentRequiredError``; a settlement header is a ``Settlement`` or ``None``. What the
parsers and ``select`` let through must then build a payment intent and typed data the Signer
can hash without any error but a typed one (nothing may fail half-way through signing).
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st

from agentguard import PaymentIntent, PaymentRequiredError
from agentguard._signer import _shape_mismatches, eip3009_digest, payment_mismatches
from agentguard.x402._answer import reported_charge
from agentguard.x402._select import Allowances, select
from agentguard.x402._wire import (
    PaymentRequired,
    Settlement,
    encode_header,
    parse_payment_required,
    parse_settlement,
    parse_v1_body,
    parse_v2_header,
)
from agentguard.x402.exact import client as exact_client
from agentguard.x402.upto import client as upto_client

from .hostile import budget, json_text, mutated, outcome, wire_values

TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAYEE = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
PAYER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
FACILITATOR = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"

EXACT_V2 = {
    "scheme": "exact",
    "network": "eip155:8453",
    "asset": TOKEN,
    "amount": "10000",
    "payTo": PAYEE,
    "maxTimeoutSeconds": 300,
    "extra": {"name": "USD Coin", "version": "2"},
}
UPTO_V2 = {
    **EXACT_V2,
    "scheme": "upto",
    "extra": {"facilitatorAddress": FACILITATOR, "spender": upto_client.UPTO_PERMIT2_PROXY},
}
V2_DOC = {
    "x402Version": 2,
    "error": "Payment required",
    "resource": {"url": "http://127.0.0.1/paid", "description": "d", "mimeType": ""},
    "accepts": [EXACT_V2, UPTO_V2],
    "extensions": {"payment-identifier": {"info": {"required": False}}},
}
V1_DOC = {
    "x402Version": 1,
    "error": "X-PAYMENT header is required",
    "accepts": [
        {
            "scheme": "exact",
            "network": "base",
            "maxAmountRequired": "10000",
            "resource": "http://127.0.0.1/paid",
            "description": "",
            "mimeType": "",
            "outputSchema": None,
            "payTo": PAYEE,
            "maxTimeoutSeconds": 60,
            "asset": TOKEN,
            "extra": {"name": "USD Coin", "version": "2"},
        }
    ],
}
SETTLEMENT = {
    "success": True,
    "transaction": "0x" + "ab" * 32,
    "network": "eip155:8453",
    "payer": PAYER,
    "amount": "10000",
}
ALLOWANCES = Allowances(assets={TOKEN: 10**30}, chain_ids=(8453, 1, 84532, 11155111))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _parsed_is_valid(required: PaymentRequired) -> None:
    for req in required.accepts:
        assert req.amount > 0 and req.asset.startswith("0x") and req.pay_to.startswith("0x")
        assert 0 < req.max_timeout_seconds <= 86_400


def _pay_what_was_parsed(required: PaymentRequired) -> None:
    """select → PaymentIntent → typed data → the Signer's own checks and digest."""
    chosen = outcome(select, required, ALLOWANCES)
    if isinstance(chosen, PaymentRequiredError):
        return
    intent = outcome(
        PaymentIntent,
        payer=PAYER,
        scheme=chosen.scheme,
        network=chosen.network,
        asset=chosen.asset,
        amount=chosen.amount,
        pay_to=chosen.pay_to,
        resource=chosen.resource,
        x402_version=chosen.x402_version,
    )
    if not isinstance(intent, PaymentIntent):
        return
    outcome(lambda: (intent.intent_hash, intent.wasm_args(), intent.newton_intent().wire()))
    until = exact_client.valid_until(chosen, now=1_700_000_000, expires_at=1_700_000_300)
    if chosen.scheme == "exact":
        typed = exact_client.typed_data(chosen, PAYER, now=1_700_000_000, valid_before=until)
        assert outcome(eip3009_digest, typed) is not None
    else:
        typed = upto_client.typed_data(chosen, PAYER, deadline=until)
    assert payment_mismatches(intent, typed) == []
    assert outcome(_shape_mismatches, typed, eip3009_digest(typed)) == []


@budget(300)
@given(st.one_of(mutated(V2_DOC), wire_values))
def test_payment_required_header_documents(doc: Any) -> None:
    parsed = outcome(parse_v2_header, encode_header(doc) if _encodable(doc) else "e30=")
    if isinstance(parsed, PaymentRequired):
        _parsed_is_valid(parsed)
        _pay_what_was_parsed(parsed)


@budget(200)
@given(json_text(V2_DOC))
def test_payment_required_header_text(raw: bytes) -> None:
    parsed = outcome(parse_v2_header, _b64(raw))
    if isinstance(parsed, PaymentRequired):
        _pay_what_was_parsed(parsed)


@budget(150)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=300).map(_b64)))
def test_payment_required_header_raw(header: str) -> None:
    outcome(parse_v2_header, header)
    outcome(parse_payment_required, header, b"")


@budget(250)
@given(
    st.one_of(mutated(V1_DOC).map(lambda d: _dumps(d)), json_text(V1_DOC), st.binary(max_size=300))
)
def test_v1_bodies(body: bytes) -> None:
    parsed = outcome(parse_v1_body, body)
    if isinstance(parsed, PaymentRequired):
        _parsed_is_valid(parsed)
        _pay_what_was_parsed(parsed)
    outcome(parse_payment_required, None, body)


@budget(200)
@given(
    st.one_of(
        mutated(SETTLEMENT).map(lambda d: _b64(_dumps(d))),
        json_text(SETTLEMENT).map(_b64),
        st.text(max_size=120),
    ),
    st.one_of(st.none(), st.text(max_size=90), st.integers(-5, 10**80).map(str)),
)
def test_settlement_and_charge_headers(header: str, charge: str | None) -> None:
    """A receipt is read or ignored, never an error (the payment already went out)."""
    settlement = outcome(parse_settlement, header, allowed=())
    assert settlement is None or isinstance(settlement, Settlement)
    headers = {"PAYMENT-RESPONSE": header}
    if charge is not None:
        headers["X-Upto-Charge"] = charge
    response = httpx.Response(200, headers=_ascii_headers(headers))
    reported = outcome(reported_charge, response, settlement, allowed=())
    assert reported is None or (isinstance(reported, int) and 0 <= reported < 2**256)


def _dumps(doc: Any) -> bytes:
    import json

    return json.dumps(doc).encode()


def _encodable(doc: Any) -> bool:
    try:
        encode_header(doc)
    except (TypeError, ValueError):
        return False
    return True


def _ascii_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v.encode("ascii", "replace").decode() for k, v in headers.items()}
