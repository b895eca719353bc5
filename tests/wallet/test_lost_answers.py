"""Finding 3 (lost answers) and the budget side of finding 4 (fees), against real anvil and
the real reference network, with a loopback RPC proxy that loses or falsifies answers."""

from __future__ import annotations

import pytest
from web3 import Web3

from agentguard import Guard, NodeUnavailable, OutcomeUnknown, Signer
from agentguard._exceptions import BudgetExceeded, FeeCapExceeded
from agentguard._intent import NATIVE_ASSET
from agentguard.ledger import Ledger, Limits, WindowCap
from agentguard.testing import SigningSpy
from agentguard.wallet import FeeCap, GuardedWallet

from .conftest import AGENT, PAYEE, AuditList, new_policy_client
from .rpc_proxy import RpcProxy

AMOUNT = 1_234_567


@pytest.fixture
def proxy(snapshot):
    with RpcProxy(snapshot.anvil.url) as p:
        yield p


def wallet_via(w3: Web3, network, client: str, **options) -> GuardedWallet:
    guard = Guard.connect(
        network.url, policy_client=client, operators=network.operator_addresses,
        api_key=network.api_key,
        policy_id=network.policy_clients[client],
    )  # fmt: skip
    options.setdefault("ledger", Ledger())
    options.setdefault("limits", Limits())
    fees = options.pop("fees", None)
    return guard.wallet(signer=Signer.from_key(AGENT.private_key, fees=fees), web3=w3, **options)


def usdc(chain, account: str) -> int:
    return int(chain.token.functions.balanceOf(account).call())


def test_lost_send_answer_is_not_taken_for_a_refusal(snapshot, network, proxy):
    """Before: the node got the transaction, its answer was lost (504), web3's retry was answered
    "nonce too low"/"already known"; the wallet released the budget and raised
    TransactionReverted, so an agent trying again paid twice. Now the wallet asks the node for
    the transaction, finds it, and settles it from its receipt: counted once, paid once."""
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    ledger, audit = Ledger(), AuditList()
    proxy.after["eth_sendRawTransaction"] = 1  # forwarded, then the answer is lost
    wallet = wallet_via(
        Web3(Web3.HTTPProvider(proxy.url)), network, client, ledger=ledger, audit=audit
    )
    before = usdc(chain, PAYEE)
    receipt = wallet.transfer(PAYEE, AMOUNT, asset=chain.token.address)
    assert proxy.seen.count("eth_sendRawTransaction") >= 2  # the retry really happened
    assert usdc(chain, PAYEE) - before == AMOUNT
    assert ledger.get(receipt.reservation_id).state == "committed"
    assert ledger.usage(wallet.account, 3600).spent[chain.token.address.lower()] == AMOUNT
    assert audit.kinds == ["authorized", "signed", "sent", "committed"]


def test_unknown_send_stays_counted_and_recover_never_releases_on_a_failed_lookup(
    snapshot, network, proxy
):
    """Before: any error from the send released the budget; and ``recover()`` took a receipt
    lookup that timed out for "no receipt", saw the nonce used and released a transfer that had
    landed. Now both stay counted until the chain positively answers."""
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    ledger, audit = Ledger(), AuditList()
    proxy.after["eth_sendRawTransaction"] = -1
    proxy.before["eth_getTransactionByHash"] = -1
    wallet = wallet_via(
        Web3(Web3.HTTPProvider(proxy.url)), network, client, ledger=ledger, audit=audit
    )
    before = usdc(chain, PAYEE)
    with SigningSpy() as spy, pytest.raises(OutcomeUnknown) as info:
        wallet.transfer(PAYEE, AMOUNT, asset=chain.token.address)
    assert spy.calls == ["sign_transaction"]
    assert usdc(chain, PAYEE) - before == AMOUNT  # it landed; the wallet could not know
    token = chain.token.address.lower()
    assert ledger.usage(wallet.account, 3600).spent[token] == AMOUNT
    assert audit.kinds[-1] == "outcome_unknown" and info.value.reference

    proxy.before["eth_getTransactionReceipt"] = -1  # the lookups time out now
    report = wallet.recover()
    assert report.released == () and report.committed == ()
    assert {r.state for r in report.unknown} == {"signed"}
    assert ledger.usage(wallet.account, 3600).spent[token] == AMOUNT

    proxy.heal()
    report = wallet.recover()
    assert [r.amount for r in report.committed if r.action] == [AMOUNT]
    assert ledger.usage(wallet.account, 3600).spent[token] == AMOUNT
    wallet.transfer(PAYEE, 1, asset=chain.token.address)  # the nonce view recovered too


def test_a_node_error_while_estimating_gas_is_not_called_a_revert(snapshot, network, proxy):
    """Before: any node error during gas estimation ("nonce too low", a rate limit) surfaced as
    TransactionReverted with a "fix the call" hint. Now it is NodeUnavailable; nothing signed."""
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    ledger = Ledger()
    proxy.script["eth_estimateGas"] = ["lie_nonce_too_low"]
    wallet = wallet_via(Web3(Web3.HTTPProvider(proxy.url)), network, client, ledger=ledger)
    with SigningSpy() as spy, pytest.raises(NodeUnavailable, match="estimate gas"):
        wallet.transfer(PAYEE, AMOUNT, asset=chain.token.address)
    assert spy.calls == []
    assert ledger.usage(wallet.account, 3600).count == 0  # everything given back


def test_fees_from_a_lying_node_are_refused_before_signing(snapshot, network, proxy):
    """Before: the wallet took base fee and tip from the node verbatim (a node answering a
    10^15 wei tip made the agent sign a transaction burning its ETH). Now a FeeCap bounds them."""
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    ledger, audit = Ledger(), AuditList()
    proxy.rewrite["eth_maxPriorityFeePerGas"] = hex(10**15)
    wallet = wallet_via(
        Web3(Web3.HTTPProvider(proxy.url)), network, client, ledger=ledger, audit=audit
    )
    with SigningSpy() as spy, pytest.raises(FeeCapExceeded, match="FeeCap"):
        wallet.transfer(PAYEE, AMOUNT, asset=chain.token.address)
    assert spy.calls == []
    assert ledger.usage(wallet.account, 3600).count == 0  # everything given back
    assert audit.kinds == ["authorized", "refused"]


def test_gas_above_the_cap_is_refused(snapshot, network):
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    wallet = wallet_via(chain.w3, network, client, fees=FeeCap(max_gas=21_000))
    with SigningSpy() as spy, pytest.raises(FeeCapExceeded, match="gas"):
        wallet.transfer(PAYEE, AMOUNT, asset=chain.token.address)
    assert spy.calls == []


def test_the_fee_counts_in_the_budget(snapshot, network):
    """EOA mode: the worst-case fee (gas * maxFeePerGas) is held as ETH before signing, and the
    receipt's gasUsed * effectiveGasPrice is what stays counted."""
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    ledger = Ledger()
    wallet = wallet_via(chain.w3, network, client, ledger=ledger)
    receipt = wallet.transfer(PAYEE, AMOUNT, asset=chain.token.address)
    onchain = chain.w3.eth.get_transaction_receipt(receipt.tx_hash)
    paid = int(onchain["gasUsed"]) * int(onchain["effectiveGasPrice"])
    usage = ledger.usage(wallet.account, 3600)
    assert usage.spent[NATIVE_ASSET] == paid > 0
    assert usage.count == 1  # the fee is not a second action for the rate caps
    # a budget with no room for ETH fees refuses before anything is signed
    tight = wallet_via(
        chain.w3, network, client, ledger=Ledger(),
        limits=Limits(windows=[WindowCap(NATIVE_ASSET, 3600, paid // 10)]),
    )  # fmt: skip
    with SigningSpy() as spy, pytest.raises(BudgetExceeded):
        tight.transfer(PAYEE, AMOUNT, asset=chain.token.address)
    assert spy.calls == []
