"""Red team: x402 recovery against a chain whose time is behind the agent's clock (a stale or
lagging node, or clock skew) — real anvil 8453 with Base's USDC stand-in."""

from __future__ import annotations

import secrets
import time

from coincurve import PrivateKey

from agentguard._attestation import sign_attestation
from agentguard._intent import PaymentIntent
from agentguard.chain import DEV_ACCOUNTS, transact
from agentguard.chain.eip3009 import transfer_authorization_digest
from agentguard.ledger import Ledger, Limits
from agentguard.x402 import resolver
from tests.wallet.conftest import AGENT, PAYEE

OWNER = DEV_ACCOUNTS[0]
AMOUNT = 5_000


def test_an_unexpired_authorization_is_not_released_on_the_agents_clock(snapshot) -> None:
    """Before: the resolver released an EIP-3009 payment whose nonce was unused once the
    agent's own clock passed ``validBefore`` — while the chain's time had not: the payee could
    still settle it, and did; 5,000 units moved with nothing counted. Now "can never land" is
    read at a block whose own timestamp is past ``validBefore``."""
    chain = snapshot
    w3, token = chain.w3, chain.token
    chain_now = int(w3.eth.get_block("latest")["timestamp"])
    valid_before, nonce = chain_now + 300, secrets.token_bytes(32)
    digest = transfer_authorization_digest(
        token=token.address, chain_id=8453, from_=AGENT.address, to=PAYEE, value=AMOUNT,
        valid_after=0, valid_before=valid_before, nonce=nonce,
    )  # fmt: skip
    signature = sign_attestation(PrivateKey(bytes.fromhex(AGENT.private_key[2:])), digest)
    payment = PaymentIntent(
        payer=AGENT.address, scheme="exact", network="eip155:8453", asset=token.address,
        amount=AMOUNT, pay_to=PAYEE, resource="http://shop.test/", x402_version=2,
    )  # fmt: skip
    ledger = Ledger()
    held = ledger.reserve(
        AGENT.address, payment.spend, key="pay-1", expires_at=time.time() + 600, limits=Limits()
    )
    reference = f"eip3009:8453:{token.address}:{AGENT.address}:0x{nonce.hex()}:{valid_before}"
    ledger.mark_signed(held.id, reference)

    ahead = resolver(w3, clock=lambda: valid_before + 60)  # our clock: past validBefore
    report = ledger.recover(ahead)
    assert report.released == ()
    before = int(token.functions.balanceOf(PAYEE).call())
    args = (AGENT.address, PAYEE, AMOUNT, 0, valid_before, nonce, signature)
    transact(w3, token.functions.transferWithAuthorization(*args), sender=OWNER.address)
    assert int(token.functions.balanceOf(PAYEE).call()) - before == AMOUNT  # it landed
    assert ledger.recover(ahead).committed[0].id == held.id
    assert ledger.usage(AGENT.address, 3600).spent[token.address.lower()] == AMOUNT
