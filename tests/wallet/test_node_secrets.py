"""A node (or whatever answers at the RPC URL) quoting the provider key from the URL back in
its error must not put that key into agentguard's exception: applications log exceptions and
LangChain tools hand them to the model. Real anvil and the real reference network, behind a
loopback proxy that answers estimation with the error text the test picks."""

from __future__ import annotations

import pytest
from web3 import Web3

from agentguard import NodeUnavailable, TransactionReverted
from agentguard.testing import SigningSpy

from .conftest import PAYEE, new_policy_client
from .rpc_proxy import RpcProxy
from .test_lost_answers import AMOUNT, wallet_via

PROVIDER_KEY = "alchemyKey_9b7d3f1a6c2e4d8f"


@pytest.mark.parametrize(
    ("said", "refusal"),
    [
        (f"invalid API key for /v2/{PROVIDER_KEY}", NodeUnavailable),
        (f"VM Exception while processing transaction: revert {PROVIDER_KEY}", TransactionReverted),
    ],
)
def test_a_node_echoing_its_url_key_does_not_put_it_in_the_exception(
    snapshot, network, said: str, refusal: type[Exception]
) -> None:
    """Before: ``_why`` quoted the node's message (``NodeUnavailable``) and a revert without
    data kept ``str(exc)`` as its reason (``TransactionReverted``): the key was in both the
    text and ``reason``. Now the wallet registers its node URL's parts as secrets and every
    agentguard error is redacted when made."""
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    with RpcProxy(chain.anvil.url) as proxy:
        proxy.lie_text = said
        proxy.script["eth_estimateGas"] = ["lie_nonce_too_low"]
        w3 = Web3(Web3.HTTPProvider(f"{proxy.url}/v2/{PROVIDER_KEY}"))
        wallet = wallet_via(w3, network, client)
        with SigningSpy() as spy, pytest.raises(refusal) as refused:
            wallet.transfer(PAYEE, AMOUNT, asset=chain.token.address)
    assert spy.calls == []
    shown = f"{refused.value} {refused.value!r} {vars(refused.value)}"
    assert "[redacted]" in shown
    assert PROVIDER_KEY.lower() not in shown.lower()
