"""A host that uses an attestation and then tells the network it did not is caught onchain."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from agentguard import PolicyDenied, TransactionIntent
from agentguard.network.launcher import ReferenceNetwork

from .conftest import AGENT, PAYEE, PER_TX_CAP, Chain, create_vault, make_wallet, new_policy_client


@pytest.fixture(scope="module")
def checked_network(chain) -> Iterator[ReferenceNetwork]:
    with ReferenceNetwork(operators=3, timeout=5.0, usage_check_rpc=chain.anvil.url) as net:
        yield net


EXPIRE_AFTER = 6
"""Short, so the tests wait little; long enough that a transaction sent right after an
authorization on a loaded machine is mined before its attestation expires (at 2 s one was
not: the vault refused it as expired)."""


def wait_for_expiry(seconds: float) -> None:
    time.sleep(seconds + 1.5)  # expiry, then the gateway's 1 s sweep


def test_a_lying_release_is_overruled_by_the_vault(snapshot, checked_network):
    chain = snapshot
    vault, _ = create_vault(chain, checked_network, salt=b"\x21" * 32, expire_after=EXPIRE_AFTER)
    liar = make_wallet(chain, checked_network, policy_client=vault.address, vault=vault.address)
    gateway = liar._guard.authorizer
    gateway.commit = lambda task_id, outcome: gateway.release(task_id)  # type: ignore[method-assign]
    liar.transfer(PAYEE, PER_TX_CAP, asset=chain.token.address)  # used onchain, "released"
    wait_for_expiry(EXPIRE_AFTER)

    honest = make_wallet(chain, checked_network, policy_client=vault.address, vault=vault.address)
    honest.transfer(PAYEE, PER_TX_CAP, asset=chain.token.address)  # 10 of the 12 USDC cap
    with pytest.raises(PolicyDenied, match="window cap"):
        honest.transfer(PAYEE, PER_TX_CAP, asset=chain.token.address)  # 15 > 12: still counted


def test_an_honest_release_gives_the_budget_back_at_expiry(snapshot, checked_network):
    release_then_spend_the_cap(snapshot, checked_network, salt=b"\x22" * 32)


def test_a_task_whose_usage_check_fails_does_not_hold_back_another_release(
    snapshot, checked_network
):
    """Runs last: its hostile task stays attested (its check failing) in the shared network.
    Expiring first, it heads every sweep: before the fix its error aborted each pass, so the
    other client's release was never given back (two transfers of 5 under 12: denied)."""
    chain = snapshot
    hostile, _ = new_policy_client(checked_network, chain.token.address, expire_after=EXPIRE_AFTER)
    stuck = make_wallet(chain, checked_network, policy_client=hostile)
    stuck._guard.authorize(_transfer(AGENT.address, chain))  # never committed nor released
    # Code at the client's address whose ``taskUsed`` reverts: the chain check raises for it.
    chain.w3.provider.make_request("anvil_setCode", [hostile, "0x5f5ffd"])
    release_then_spend_the_cap(chain, checked_network, salt=b"\x23" * 32)


def release_then_spend_the_cap(chain: Chain, network: ReferenceNetwork, *, salt: bytes) -> None:
    """A vault's released, never-sent attestation is given back at expiry: the cap is whole."""
    vault, _ = create_vault(chain, network, salt=salt, expire_after=EXPIRE_AFTER)
    wallet = make_wallet(chain, network, policy_client=vault.address, vault=vault.address)
    verified = wallet._guard.authorize(_transfer(vault.address, chain))
    wallet._guard.authorizer.release(verified.task_id)  # never sent
    time.sleep(EXPIRE_AFTER)
    # The chain's clock must pass the expiry too (an anvil revert leaves it behind).
    chain.w3.provider.make_request("evm_setTime", [int(time.time()) + 1])
    chain.w3.provider.make_request("evm_mine", [])
    wait_for_expiry(0)
    wallet.transfer(PAYEE, PER_TX_CAP, asset=chain.token.address)
    wallet.transfer(PAYEE, PER_TX_CAP, asset=chain.token.address)  # 10 ≤ 12: the release stood


def _transfer(sender: str, chain: Chain) -> TransactionIntent:
    return TransactionIntent.erc20_transfer(
        sender=sender, token=chain.token.address, recipient=PAYEE, amount=PER_TX_CAP, chain_id=8453
    )
