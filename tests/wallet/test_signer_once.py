"""The Signer's one-signature rule against the real reference network and anvil (issue 7,
finding 4): an attestation from real operators signs one transaction, which lands; every
further use of it signs nothing."""

from __future__ import annotations

import dataclasses
import json
import time

import httpx
import pytest

from agentguard import (
    AttestationReplayed,
    FeeCap,
    FeeCapExceeded,
    Guard,
    IntentMismatch,
    NewtonBindingVerifier,
    NewtonGateway,
    OnchainCheckRequired,
    PaymentIntent,
    Signer,
    TransactionIntent,
)
from agentguard.ledger import Ledger, Limits, WindowCap
from agentguard.testing import SigningSpy
from agentguard.wallet import GuardedWallet
from agentguard.x402._wire import Requirement
from agentguard.x402.exact import client as exact_client

from .conftest import AGENT, PAYEE, AuditList, new_policy_client


def usdc(chain, account: str) -> int:
    return int(chain.token.functions.balanceOf(account).call())


def test_a_real_attestation_signs_one_transaction_that_lands(snapshot, network):
    """Before: the same verified attestation signed nonces 0, 1 and 2."""
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    signer = Signer.from_key(AGENT.private_key)
    intent = TransactionIntent.erc20_transfer(
        sender=signer.address,
        token=chain.token.address,
        recipient=PAYEE,
        amount=1_000,
        chain_id=8453,
    )
    with Guard.connect(
        network.url,
        policy_client=client,
        operators=network.operator_addresses,
        api_key=network.api_key,
        policy_id=network.policy_clients[client],
    ) as guard:
        verified = guard.authorize(intent)
    nonce = chain.w3.eth.get_transaction_count(signer.address)
    fees = {"gas": 100_000, "max_fee_per_gas": 10 * 10**9, "max_priority_fee_per_gas": 10**9}
    before = usdc(chain, PAYEE)
    with SigningSpy() as spy:
        signed = signer.sign_transaction(verified, nonce=nonce, **fees)
        for attempt in range(1, 3):
            with pytest.raises(AttestationReplayed):
                signer.sign_transaction(verified, nonce=nonce + attempt, **fees)
        with pytest.raises(AttestationReplayed):  # nor through an equal copy of it
            copy = dataclasses.replace(verified, intent=intent.model_copy())
            signer.sign_transaction(copy, nonce=nonce + 3, **fees)
    assert spy.calls == ["sign_transaction"]
    receipt = chain.w3.eth.wait_for_transaction_receipt(
        chain.w3.eth.send_raw_transaction(signed.raw)
    )
    assert receipt["status"] == 1
    assert usdc(chain, PAYEE) - before == 1_000


def test_a_replaced_intent_under_a_real_attestation_signs_nothing(snapshot, network):
    """Before: ``dataclasses.replace(verified, intent=...)`` signed the replacement."""
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    signer = Signer.from_key(AGENT.private_key)

    def transfer(amount: int) -> TransactionIntent:
        return TransactionIntent.erc20_transfer(
            sender=signer.address,
            token=chain.token.address,
            recipient=PAYEE,
            amount=amount,
            chain_id=8453,
        )

    with Guard.connect(
        network.url,
        policy_client=client,
        operators=network.operator_addresses,
        api_key=network.api_key,
        policy_id=network.policy_clients[client],
    ) as guard:
        verified = guard.authorize(transfer(1_000))
    with SigningSpy() as spy, pytest.raises(IntentMismatch):
        signer.sign_transaction(
            dataclasses.replace(verified, intent=transfer(4_000_000)),
            nonce=0, gas=100_000, max_fee_per_gas=10**10, max_priority_fee_per_gas=10**9,
        )  # fmt: skip
    assert spy.calls == []


def test_the_wallet_refuses_fees_above_the_cap_and_releases(snapshot, network):
    """Before: the wallet signed whatever fee the RPC node suggested. With a FeeCap below the
    node's fees, nothing is signed, nothing lands, and the reservation is released."""
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    ledger = Ledger()
    audit = AuditList()
    wallet = GuardedWallet(
        signer=Signer.from_key(AGENT.private_key, fees=FeeCap(max_fee_per_gas=1)),
        guard=Guard.connect(
            network.url,
            policy_client=client,
            operators=network.operator_addresses,
            api_key=network.api_key,
            policy_id=network.policy_clients[client],
        ),
        web3=chain.w3,
        ledger=ledger,
        limits=Limits(windows=[WindowCap(chain.token.address, 86400, 10**15)]),
        audit=audit,
    )
    before = usdc(chain, PAYEE)
    with SigningSpy() as spy, pytest.raises(FeeCapExceeded):
        wallet.transfer(PAYEE, 1_000, asset=chain.token.address)
    assert spy.calls == []
    assert usdc(chain, PAYEE) == before
    assert "refused" in audit.kinds and "signed" not in audit.kinds


class NewtonShaped(httpx.BaseTransport):
    """Forwards to the real gateway and rewrites each answer as Newton's real gateway would send
    it: no ECDSA ``attestation``, a BLS ``aggregation_response`` (made up here)."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        answer = json.loads(response.read())
        result = answer.get("result")
        if isinstance(result, dict) and "attestation" in result:
            del result["attestation"]
            result["aggregation_response"] = {"signature": [7] * 64, "non_signer_pubkeys": []}
        return httpx.Response(response.status_code, json=answer)


def test_a_newton_shaped_answer_never_reaches_an_eoa_signature(snapshot, network):
    """Finding 9. Before: NewtonBindingVerifier checked no operator signature, and the EOA
    signer still signed a transaction and a payment under what it returned."""
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    signer = Signer.from_key(AGENT.private_key)
    gateway = NewtonGateway(
        network.url, policy_client=client, api_key=network.api_key, transport=NewtonShaped()
    )
    verifier = NewtonBindingVerifier(policy_client=client, block_number=lambda: 0)
    transfer = TransactionIntent.erc20_transfer(
        sender=signer.address,
        token=chain.token.address,
        recipient=PAYEE,
        amount=1_000,
        chain_id=8453,
    )
    payment = PaymentIntent(
        payer=signer.address, scheme="exact", network="eip155:8453",
        asset=chain.token.address, amount=1_000, pay_to=PAYEE,
    )  # fmt: skip
    with gateway:
        verified_tx = verifier.verify(gateway.authorize(transfer), transfer)
        verified_pay = verifier.verify(gateway.authorize(payment), payment)
    assert verified_tx.assurance == verified_pay.assurance == "newton-bls-binding"
    typed = exact_client.typed_data(
        Requirement(
            x402_version=2, scheme="exact", network="eip155:8453", amount=1_000,
            asset=chain.token.address, pay_to=PAYEE, max_timeout_seconds=60,
            extra={"name": "USD Coin", "version": "2"}, resource="", raw={},
        ),
        signer.address,
        now=int(time.time()),
        valid_before=int(time.time()) + 60,
    )  # fmt: skip
    with SigningSpy() as spy:
        with pytest.raises(OnchainCheckRequired):
            signer.sign_transaction(
                verified_tx,
                nonce=0,
                gas=100_000,
                max_fee_per_gas=10**10,
                max_priority_fee_per_gas=10**9,
            )
        with pytest.raises(OnchainCheckRequired):
            signer.sign_payment(verified_pay, typed)
    assert spy.calls == []
