"""The chain facts a history record rests on, read from a real token on anvil (chain id
8453): an EIP-3009 authorization used under a task id, re-read as the record states it, and
refused once any part of it is bent (another amount, payee, authorizer or log)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from coincurve import PrivateKey
from web3 import Web3

from agentguard._intent import TransactionIntent
from agentguard.chain import DEV_ACCOUNTS, Anvil, deploy, transact
from agentguard.chain.eip3009 import transfer_authorization_digest
from agentguard.challenge._chain import ChainFact, authorization_used, recheck_fact

pytestmark = pytest.mark.integration

PAYER, PAYEE, MINTER = DEV_ACCOUNTS[3], DEV_ACCOUNTS[4], DEV_ACCOUNTS[0]
TASK = "0x" + "5a" * 32


@pytest.fixture(scope="module")
def paid() -> Iterator[tuple[Web3, str, ChainFact]]:
    with Anvil() as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        token = deploy(w3, "UsdCoin", sender=MINTER.address)
        transact(w3, token.functions.mint(PAYER.address, 10_000_000), sender=MINTER.address)
        nonce = bytes.fromhex(TASK[2:])
        digest = transfer_authorization_digest(
            token=token.address,
            chain_id=8453,
            from_=PAYER.address,
            to=PAYEE.address,
            value=3_000_000,
            valid_after=0,
            valid_before=2**40,
            nonce=nonce,
        )
        raw = PrivateKey(bytes.fromhex(PAYER.private_key[2:])).sign_recoverable(digest, hasher=None)
        transact(
            w3,
            token.functions.transferWithAuthorization(
                PAYER.address,
                PAYEE.address,
                3_000_000,
                0,
                2**40,
                nonce,
                raw[64] + 27,
                raw[:32],
                raw[32:64],
            ),
            sender=MINTER.address,
        )
        fact = authorization_used(w3, token.address, PAYER.address, TASK)
        assert fact is not None
        yield w3, token.address, fact


def payment(
    token: str, *, amount: int = 3_000_000, payee: str = PAYEE.address
) -> TransactionIntent:
    return TransactionIntent.erc20_transfer(
        sender=PAYER.address, token=token, recipient=payee, amount=amount, chain_id=8453
    )


def test_a_used_authorization_proves_exactly_its_payment(
    paid: tuple[Web3, str, ChainFact],
) -> None:
    w3, token, fact = paid
    assert fact.kind == "authorization_used" and fact.task_id == TASK
    assert fact.data["transfer"]["value"] == "3000000"
    assert fact.proves_use_of(payment(token), TASK) is None
    assert fact.proves_use_of(payment(token, amount=4_000_000), TASK) is not None
    assert fact.proves_use_of(payment(token, payee=MINTER.address), TASK) is not None
    assert fact.proves_use_of(payment(token), "0x" + "5b" * 32) is not None
    assert authorization_used(w3, token, PAYER.address, "0x" + "5b" * 32) is None


def test_a_fact_is_read_again_as_stated_or_refused(paid: tuple[Web3, str, ChainFact]) -> None:
    w3, _, fact = paid
    assert recheck_fact(w3, fact) is None
    assert ChainFact.from_json(fact.to_json()) == fact
    bent = [
        dataclasses.replace(fact, log_index=(fact.log_index or 0) + 5),
        dataclasses.replace(fact, block_hash="0x" + "00" * 32),
        dataclasses.replace(fact, data={**fact.data, "authorizer": MINTER.address}),
        dataclasses.replace(fact, tx_hash="0x" + "11" * 32),
        dataclasses.replace(fact, chain_id=1),
    ]
    for wrong in bent:
        assert recheck_fact(w3, wrong) is not None, wrong
