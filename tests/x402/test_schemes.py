"""Our typed data and payloads are byte-identical to what x402's official client signs."""

from __future__ import annotations

import time
from typing import Any

import pytest
from eth_account import Account
from x402.mechanisms.evm import EthAccountSigner
from x402.mechanisms.evm.exact import ExactEvmClientScheme
from x402.mechanisms.evm.exact.v1.client import ExactEvmSchemeV1
from x402.mechanisms.evm.upto import UptoEvmClientScheme
from x402.schemas import PaymentRequirements
from x402.schemas.v1 import PaymentRequirementsV1

from agentguard.chain.eip3009 import transfer_authorization_digest
from agentguard.x402._wire import parse_payment_required, parse_v2_header
from agentguard.x402.exact import client as exact
from agentguard.x402.upto import client as upto

from .test_wire import PAYEE, TOKEN, v1_body, v2_header, v2_requirement

KEY = "0x" + "a1" * 32
ACCOUNT = Account.from_key(KEY)
NOW = 1_764_000_000
NONCE32 = bytes(range(32))
FACILITATOR = "0x4444444444444444444444444444444444444444"


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: float(NOW))


def sign(typed: dict[str, Any]) -> bytes:
    return bytes(ACCOUNT.sign_typed_data(full_message=typed).signature)


def test_exact_v2_matches_official_client(
    frozen_clock: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "x402.mechanisms.evm.exact.client.create_nonce", lambda: "0x" + NONCE32.hex()
    )
    (req,) = parse_v2_header(v2_header()).accepts
    official = ExactEvmClientScheme(EthAccountSigner(ACCOUNT)).create_payment_payload(
        PaymentRequirements.model_validate(v2_requirement())
    )
    typed = exact.typed_data(
        req,
        ACCOUNT.address,
        now=NOW,
        valid_before=exact.valid_until(req, now=NOW, expires_at=NOW + 3600),
        nonce=NONCE32,
    )
    assert exact.payload(typed, sign(typed)) == official
    assert typed["message"]["validAfter"] == 0 and typed["message"]["validBefore"] == NOW + 300


def test_exact_v1_matches_official_client(
    frozen_clock: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "x402.mechanisms.evm.exact.v1.client.create_nonce", lambda: "0x" + NONCE32.hex()
    )
    (req,) = parse_payment_required(None, v1_body()).accepts
    import json

    raw = json.loads(v1_body())["accepts"][0]
    official = ExactEvmSchemeV1(EthAccountSigner(ACCOUNT)).create_payment_payload(
        PaymentRequirementsV1.model_validate(raw)
    )
    typed = exact.typed_data(
        req,
        ACCOUNT.address,
        now=NOW,
        valid_before=exact.valid_until(req, now=NOW, expires_at=NOW + 3600),
        nonce=NONCE32,
    )
    assert exact.payload(typed, sign(typed)) == official
    assert typed["message"]["validAfter"] == NOW - 600


def test_exact_digest_is_the_tokens_eip3009_digest() -> None:
    (req,) = parse_v2_header(v2_header()).accepts
    typed = exact.typed_data(
        req,
        ACCOUNT.address,
        now=NOW,
        valid_before=exact.valid_until(req, now=NOW, expires_at=NOW + 3600),
        nonce=NONCE32,
    )
    signed = ACCOUNT.sign_typed_data(full_message=typed)
    expected = transfer_authorization_digest(
        token=TOKEN, chain_id=8453, from_=ACCOUNT.address, to=PAYEE, value=10_000,
        valid_after=0, valid_before=exact.valid_until(req, now=NOW, expires_at=NOW + 3600), nonce=NONCE32, name="USD Coin", version="2",
    )  # fmt: skip
    assert bytes(signed.message_hash) == expected


def test_exact_takes_the_domain_from_extra() -> None:
    (req,) = parse_v2_header(
        v2_header(v2_requirement(network="eip155:84532", extra={"name": "USDC", "version": "2"}))
    ).accepts
    domain = exact.typed_data(
        req,
        ACCOUNT.address,
        now=NOW,
        valid_before=exact.valid_until(req, now=NOW, expires_at=NOW + 3600),
    )["domain"]
    assert domain == {"name": "USDC", "version": "2", "chainId": 84532, "verifyingContract": TOKEN}


def test_fresh_random_nonce_each_time() -> None:
    (req,) = parse_v2_header(v2_header()).accepts
    nonces = {
        exact.typed_data(
            req,
            ACCOUNT.address,
            now=NOW,
            valid_before=exact.valid_until(req, now=NOW, expires_at=NOW + 3600),
        )["message"]["nonce"]
        for _ in range(20)
    }
    assert len(nonces) == 20 and all(len(n) == 66 for n in nonces)


def test_upto_matches_official_client(frozen_clock: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("x402.mechanisms.evm.upto.client.create_permit2_nonce", lambda: "123456789")
    raw = v2_requirement(scheme="upto", amount="100000", extra={"facilitatorAddress": FACILITATOR})
    (req,) = parse_v2_header(v2_header(raw)).accepts
    official = UptoEvmClientScheme(EthAccountSigner(ACCOUNT)).create_payment_payload(
        PaymentRequirements.model_validate(raw)
    )
    typed = upto.typed_data(
        req,
        ACCOUNT.address,
        deadline=exact.valid_until(req, now=NOW, expires_at=NOW + 3600),
        nonce=123456789,
    )
    assert upto.payload(typed, sign(typed), ACCOUNT.address) == official
    assert typed["message"]["spender"] == upto.UPTO_PERMIT2_PROXY


def test_validity_window_never_outlives_the_attestation() -> None:
    """The Signer refuses a window past the attestation's expiry; the client never builds one."""
    (req,) = parse_v2_header(v2_header()).accepts  # maxTimeoutSeconds 300
    assert exact.valid_until(req, now=NOW, expires_at=NOW + 3600) == NOW + 300
    assert exact.valid_until(req, now=NOW, expires_at=NOW + 40) == NOW + 40
    until = exact.valid_until(req, now=NOW, expires_at=NOW + 40)
    typed = exact.typed_data(req, ACCOUNT.address, now=NOW, valid_before=until)
    assert typed["message"]["validBefore"] == NOW + 40
    raw = v2_requirement(scheme="upto", amount="100000", extra={"facilitatorAddress": FACILITATOR})
    (upto_req,) = parse_v2_header(v2_header(raw)).accepts
    assert (
        upto.typed_data(upto_req, ACCOUNT.address, deadline=until)["message"]["deadline"] == until
    )
