"""The official x402 facilitator (x402 2.25.0, the independent peer) verifies and settles
payments against UsdCoin on anvil: an EOA payment signed by x402's own client, and a vault
payment whose signature is the vault's ERC-1271 blob."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from x402 import PaymentPayload, PaymentRequirements, x402FacilitatorSync
from x402.mechanisms.evm.exact import ExactEvmClientScheme, register_exact_evm_facilitator
from x402.mechanisms.evm.signers import FacilitatorWeb3Signer

from agentguard._attestation import sign_attestation
from agentguard._intent import PaymentIntent
from agentguard.chain import (
    DEV_ACCOUNTS,
    payment_signature,
    transact,
    transfer_authorization_digest,
)
from tests.chain.helpers import AGENT_KEY, FACILITATOR, OWNER, PAYEE, VAULT_USDC, Env, attest

NETWORK = "eip155:8453"
AMOUNT = 10_000


@pytest.fixture
def facilitator(env: Env) -> x402FacilitatorSync:
    key = next(a.private_key for a in DEV_ACCOUNTS if a.address == FACILITATOR)
    return register_exact_evm_facilitator(
        x402FacilitatorSync(),
        FacilitatorWeb3Signer(private_key=key, rpc_url=env.anvil.url),
        networks=NETWORK,
    )


def _requirements(env: Env) -> PaymentRequirements:
    return PaymentRequirements(
        scheme="exact",
        network=NETWORK,
        asset=env.token.address,
        amount=str(AMOUNT),
        pay_to=PAYEE,
        max_timeout_seconds=300,
        extra={"name": "USD Coin", "version": "2"},
    )


def _payload(requirements: PaymentRequirements, inner: dict[str, Any]) -> PaymentPayload:
    return PaymentPayload(x402_version=2, payload=inner, accepted=requirements)


def _vault_payload(
    env: Env, requirements: PaymentRequirements, *, agent_signs: bool = True
) -> PaymentPayload:
    payment = PaymentIntent(
        payer=env.vault.address,
        scheme="exact",
        network=NETWORK,
        asset=env.token.address,
        amount=AMOUNT,
        pay_to=PAYEE,
    )
    attestation = attest(env.vault.address, payment, expires_at=env.now() + 600)
    valid_before = env.now() + 300
    digest = transfer_authorization_digest(
        token=env.token.address, chain_id=8453, from_=env.vault.address, to=PAYEE, value=AMOUNT,
        valid_after=0, valid_before=valid_before, nonce=attestation.task_id,
    )  # fmt: skip
    blob = payment_signature(
        payment,
        attestation,
        valid_after=0,
        valid_before=valid_before,
        agent_signature=sign_attestation(AGENT_KEY, digest) if agent_signs else b"",
    )
    authorization = {
        "from": env.vault.address,
        "to": PAYEE,
        "value": str(AMOUNT),
        "validAfter": "0",
        "validBefore": str(valid_before),
        "nonce": "0x" + attestation.task_id.hex(),
    }
    return _payload(requirements, {"authorization": authorization, "signature": "0x" + blob.hex()})


def test_eoa_payment_from_the_x402_client_settles(
    env: Env, facilitator: x402FacilitatorSync
) -> None:
    payer = Account.from_key(DEV_ACCOUNTS[6].private_key)
    transact(env.w3, env.token.functions.mint(payer.address, AMOUNT), sender=OWNER)
    requirements = _requirements(env)
    payload = _payload(
        requirements, ExactEvmClientScheme(payer).create_payment_payload(requirements)
    )
    verified = facilitator.verify(payload, requirements)
    assert verified.is_valid, verified
    settled = facilitator.settle(payload, requirements)
    assert settled.success, settled
    assert env.usdc(PAYEE) == AMOUNT and env.usdc(payer.address) == 0


def test_vault_payment_verifies_and_settles_once(
    env: Env, facilitator: x402FacilitatorSync
) -> None:
    requirements = _requirements(env)
    payload = _vault_payload(env, requirements)
    verified = facilitator.verify(payload, requirements)
    assert verified.is_valid, verified
    assert verified.payer == env.vault.address
    settled = facilitator.settle(payload, requirements)
    assert settled.success, settled
    assert env.usdc(PAYEE) == AMOUNT
    assert env.usdc(env.vault.address) == VAULT_USDC - AMOUNT
    again = facilitator.verify(payload, requirements)
    assert not again.is_valid


def test_vault_payment_without_agent_signature_is_refused(
    env: Env, facilitator: x402FacilitatorSync
) -> None:
    requirements = _requirements(env)
    payload = _vault_payload(env, requirements, agent_signs=False)
    assert not facilitator.verify(payload, requirements).is_valid
    assert not facilitator.settle(payload, requirements).success
    assert env.usdc(PAYEE) == 0
