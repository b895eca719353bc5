"""Red team: a lying RPC node against the wallet's port and ``recover()`` (real anvil 8453,
real reference network, a loopback proxy that falsifies answers)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from web3 import Web3

from agentguard import OutcomeUnknown
from agentguard.ledger import Ledger
from agentguard.pipeline import Runner, Step
from agentguard.testing import SigningSpy
from agentguard.wallet import GuardedWallet
from tests.wallet.conftest import PAYEE, make_wallet, new_policy_client
from tests.wallet.rpc_proxy import RpcProxy
from tests.wallet.test_lost_answers import usdc, wallet_via

AMOUNT = 1_111_111


@pytest.fixture
def proxy(snapshot):
    with RpcProxy(snapshot.anvil.url) as p:
        yield p


def test_recover_does_not_release_a_landed_transfer_on_a_nodes_word(snapshot, network, proxy):
    """A node that answers "no such transaction, no receipt" for a transfer that landed, while
    its account nonce is honest. Before: ``recover()`` took "nonce used, no receipt" as proof
    the transfer could never land and released it — the ledger stopped counting 1.11 USDC that
    had moved. Now only the transaction found in the block under that nonce decides: here it
    is ours, so it is committed."""
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    ledger = Ledger()
    proxy.after["eth_sendRawTransaction"] = -1  # the node gets it, the answer is lost
    proxy.before["eth_getTransactionByHash"] = -1
    wallet = wallet_via(Web3(Web3.HTTPProvider(proxy.url)), network, client, ledger=ledger)
    before = usdc(chain, PAYEE)
    with pytest.raises(OutcomeUnknown):
        wallet.transfer(PAYEE, AMOUNT, asset=chain.token.address)
    assert usdc(chain, PAYEE) - before == AMOUNT  # it landed
    proxy.heal()
    proxy.rewrite["eth_getTransactionReceipt"] = None  # the lie: no receipt, no transaction
    proxy.rewrite["eth_getTransactionByHash"] = None
    report = wallet.recover()
    assert report.released == ()
    token = chain.token.address.lower()
    assert ledger.usage(wallet.account, 3600).spent[token] == AMOUNT


def test_recover_releases_when_another_transaction_took_the_nonce(snapshot, network, proxy):
    """The honest release still works: the first send never reached the node, the nonce went
    to the next transfer, and the block under that nonce shows the other hash."""
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    ledger = Ledger()
    proxy.before["eth_sendRawTransaction"] = -1  # never forwarded
    proxy.before["eth_getTransactionByHash"] = -1
    wallet = wallet_via(Web3(Web3.HTTPProvider(proxy.url)), network, client, ledger=ledger)
    with pytest.raises(OutcomeUnknown) as lost:
        wallet.transfer(PAYEE, AMOUNT, asset=chain.token.address)
    proxy.heal()
    wallet.transfer(PAYEE, 7, asset=chain.token.address)  # same nonce, another transaction
    report = wallet.recover()
    (released,) = [r for r in report.released if r.action]
    assert lost.value.reference in (released.reference or "")
    token = chain.token.address.lower()
    assert ledger.usage(wallet.account, 3600).spent[token] == 7


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, delivered right after one pipeline step took effect."""


def _interrupt_after(wallet: GuardedWallet, k: int) -> list[str]:
    """Make the wallet's runner raise KeyboardInterrupt after its ``k``-th step; returns the
    trace of step names."""
    trace: list[str] = []

    class Interrupting(Runner):
        def execute(self, step: Step, port: Any = None) -> Any:
            result = super().execute(step, port)
            trace.append(type(step).__name__)
            if len(trace) == k:
                raise Interrupted
            return result

    old = wallet._runner
    wallet._runner = Interrupting(old.guard, old.ledger, old.audit)
    return trace


@pytest.mark.parametrize("k", range(1, 18))
def test_ctrl_c_after_any_step_never_counts_less_than_moved(snapshot, network, k):
    """KeyboardInterrupt after each step of an EOA transfer (reserve … sign, mark signed, send,
    confirm, commit …): whatever moved onchain is counted, at most one transaction was signed,
    and the wallet's next transfer is not stuck behind a nonce lock. Before: Ctrl-C right after
    ``Prepare`` returned (before the runner noted what it prepared) lost the nonce lease with
    its lock held, and every later send of the wallet hung forever (k=5). Now a lease dropped
    without ``done`` gives the lock back. The other points failed closed."""
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    ledger = Ledger()
    wallet = make_wallet(chain, network, policy_client=client, ledger=ledger)
    trace = _interrupt_after(wallet, k)
    before = usdc(chain, PAYEE)
    with SigningSpy() as spy:
        try:
            wallet.transfer(PAYEE, AMOUNT, asset=chain.token.address)
        except Interrupted:
            pass
    assert len(trace) == k  # the interrupt really happened at step k
    assert spy.calls in ([], ["sign_transaction"])
    token = chain.token.address.lower()
    moved = usdc(chain, PAYEE) - before
    assert ledger.usage(wallet.account, 3600).spent.get(token, 0) >= moved
    wallet._runner = Runner(wallet._runner.guard, ledger, None)
    done: list[Any] = []
    worker = threading.Thread(
        target=lambda: done.append(wallet.transfer(PAYEE, 3, asset=chain.token.address)),
        daemon=True,
    )
    worker.start()
    worker.join(60)
    assert done and done[0].block_number > 0, f"stuck after an interrupt following {trace}"
    wallet.recover()  # a crashed process's recovery settles what the interrupt left
    assert ledger.usage(wallet.account, 3600).spent.get(token, 0) >= usdc(chain, PAYEE) - before
