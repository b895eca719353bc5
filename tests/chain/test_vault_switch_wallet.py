"""The in-flight rule end to end: a guarded wallet in vault mode, the reference network, anvil.

The network still attests under the policy the vault pinned before; the owner schedules a switch
and applies it after the delay. Until the apply transaction the wallet's transfers go through;
from it on the vault refuses the old id, and the wallet signs nothing and gives its ledger hold
back (the amount is not counted as spent).
"""

from __future__ import annotations

import pytest

from agentguard._eip712 import keccak
from agentguard._exceptions import TransactionReverted
from agentguard.chain.owner import apply_policy_switch, set_policy_delay, switch_policy
from agentguard.ledger import Ledger
from agentguard.network.launcher import ReferenceNetwork
from tests.wallet import conftest as wallet_fixtures
from tests.wallet.conftest import OWNER, PAYEE, AuditList, Chain, create_vault, make_wallet

# the wallet tests' fixtures: anvil with token and factory (one snapshot per test), the network
chain = wallet_fixtures.chain
snapshot = wallet_fixtures.snapshot
network = wallet_fixtures.network

HOUR = 3600


def test_the_wallet_releases_its_hold_when_the_switch_applies(
    snapshot: Chain,
    network: ReferenceNetwork,
) -> None:
    vault, _ = create_vault(snapshot, network, salt=b"\x71" * 32)
    ledger, audit = Ledger(), AuditList()
    wallet = make_wallet(
        snapshot,
        network,
        policy_client=vault.address,
        vault=vault.address,
        ledger=ledger,
        audit=audit,
    )
    token = snapshot.token.address
    wallet.transfer(PAYEE, 1_000_000, asset=token)
    set_policy_delay(snapshot.w3, vault, HOUR, sender=OWNER.address)
    switch_policy(snapshot.w3, vault, keccak(b"the next policy"), sender=OWNER.address)
    wallet.transfer(PAYEE, 2_000_000, asset=token)  # scheduled is not switched
    snapshot.anvil.rpc("evm_increaseTime", HOUR)
    snapshot.anvil.rpc("evm_mine")
    apply_policy_switch(snapshot.w3, vault, sender=OWNER.address)
    with pytest.raises(TransactionReverted, match="PolicyMismatch"):
        wallet.transfer(PAYEE, 4_000_000, asset=token)
    assert ledger.usage(wallet.account, 2 * HOUR).spent[token.lower()] == 3_000_000
    assert audit.kinds[-1] == "released"
    assert int(snapshot.token.functions.balanceOf(PAYEE).call()) == 3_000_000
