"""The intent form: ``@guard.action(wallet=...)`` on a function that returns the transaction
to send; the wallet authorizes, signs and sends it on anvil and the ``Receipt`` comes back."""

from __future__ import annotations

import threading

import pytest

from agentguard import (
    ConfigurationError,
    IntentError,
    PolicyDenied,
    Receipt,
    Signer,
    TransactionIntent,
)
from agentguard.testing import SigningSpy
from agentguard.wallet import AsyncGuardedWallet
from tests.integration.pipeline_trace import PipelineTrace
from tests.wallet.conftest import PAYEE, STRANGER, Chain, make_wallet, new_policy_client

from .conftest import AGENT


def _transfer(chain: Chain, to: str, amount: int) -> TransactionIntent:
    return TransactionIntent.erc20_transfer(
        sender=AGENT.address, token=chain.token.address, recipient=to, amount=amount,
        chain_id=8453,
    )  # fmt: skip


def test_a_returned_intent_is_sent_through_the_wallet(snapshot: Chain, network) -> None:
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    wallet = make_wallet(chain, network, policy_client=client)
    guard = wallet._guard

    @guard.action(wallet=wallet)
    def pay(to: str, amount: int) -> TransactionIntent:
        """Pay someone."""
        return _transfer(chain, to, amount)

    before = chain.token.functions.balanceOf(PAYEE).call()
    with PipelineTrace() as trace:
        receipt = pay(PAYEE, 1_000_000)
    trace.assert_signed_by_pipeline(1)
    assert isinstance(receipt, Receipt) and pay.__doc__ == "Pay someone."
    assert chain.token.functions.balanceOf(PAYEE).call() == before + 1_000_000
    with SigningSpy() as spy, pytest.raises(PolicyDenied):
        pay(STRANGER, 1)
    assert spy.calls == []


def test_a_non_intent_return_is_refused(snapshot: Chain, network) -> None:
    client, _ = new_policy_client(network, snapshot.token.address)
    wallet = make_wallet(snapshot, network, policy_client=client)

    @wallet._guard.action(wallet=wallet)
    def pay() -> dict[str, str]:
        return {"to": PAYEE}

    with pytest.raises(IntentError, match="must return a TransactionIntent"):
        pay()


async def test_async_intent_form(snapshot: Chain, network) -> None:
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    wallet = AsyncGuardedWallet(make_wallet(chain, network, policy_client=client))
    guard = wallet._runner.guard

    @guard.action(wallet=wallet)
    async def pay(amount: int) -> TransactionIntent:
        return _transfer(chain, PAYEE, amount)

    with PipelineTrace() as trace:
        receipt = await pay(2)
    trace.assert_signed_by_pipeline(1)
    assert isinstance(receipt, Receipt) and receipt.intent.spend.amount == 2
    threads: list[int] = []

    @guard.action(wallet=wallet)
    def pay_blocking(amount: int) -> TransactionIntent:
        threads.append(threading.get_ident())
        return _transfer(chain, PAYEE, amount)

    assert (await pay_blocking(3)).intent.spend.amount == 3
    assert threads != [threading.get_ident()]  # a plain function ran in a worker thread


def test_the_intent_form_takes_the_wallets_budget_only(snapshot: Chain, network) -> None:
    client, _ = new_policy_client(network, snapshot.token.address)
    wallet = make_wallet(snapshot, network, policy_client=client)
    with pytest.raises(ConfigurationError, match="own agent, ledger"):
        wallet._guard.action(wallet=wallet, agent=Signer.from_key(AGENT.private_key).address)
