"""The Signer's one-signature rule against the real reference network and anvil (issue 7,
finding 4): an attestation from real operators signs one transaction, which lands; every
further use of it signs nothing."""

from __future__ import annotations

import dataclasses

import pytest

from agentguard import (
    AttestationReplayed,
    FeeCap,
    FeeCapExceeded,
    Guard,
    IntentMismatch,
    Signer,
    TransactionIntent,
)
from agentguard.ledger import Ledger, Limits, WindowCap
from agentguard.testing import SigningSpy
from agentguard.wallet import GuardedWallet

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
    assert "released" in audit.kinds and "signed" not in audit.kinds
