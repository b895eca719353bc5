"""Red-team findings on vault migration, each reproduced as the attack that worked before its
fix: a migration must not be a way to shed what guards a change of the old vault."""

from __future__ import annotations

import pytest
from web3.contract import Contract

from agentguard._exceptions import ConfigurationError
from agentguard.chain import transact
from agentguard.chain.owner import (
    PolicyPreimage,
    cancel_policy_switch,
    migrate_vault,
    roll_out_migration,
    set_policy_delay,
    switch_policy,
)
from agentguard.network.launcher import ReferenceNetwork
from agentguard.policies import policy_id
from tests.network.conftest import params

from .conftest import LOOSE, NETCHECK, OWNER, TIGHT, UNIT, Chain, new_vault


def _migrate(chain: Chain, network: ReferenceNetwork, old: Contract, new: Contract) -> None:
    roll_out_migration(
        chain.w3,
        old,
        new,
        network,
        policy=NETCHECK,
        params=LOOSE,
        tokens=[chain.token.address],
        owner_key=OWNER.private_key,
    )


def _untouched(chain: Chain, old: Contract) -> None:
    assert chain.token.functions.balanceOf(old.address).call() == 100 * UNIT
    assert not old.functions.paused().call()


def test_a_migration_cannot_shed_the_policy_delay_or_loosen_tier_high(
    chain: Chain, network: ReferenceNetwork
) -> None:
    """Attack: the old vault has a one-hour policy delay (a lowering of tier ``high``'s
    threshold or of the delay itself waits it, and a watcher sees a switch coming) and tier
    ``high`` at every operator. A fresh vault from the factory has delay 0, and its owner set
    ``high`` to 2 of 3 at once there. ``migrateTo`` compares owner, agent, operators, threshold
    and policy only, so before the fix ``roll_out_migration`` moved the funds into it: the
    delay gone and tier ``high`` loosened in one owner step that skips the wait. Now it is
    refused before anything is registered or moved, naming what is looser."""
    old = new_vault(chain, network, LOOSE, delay=3600)
    assert old.functions.tierThreshold(1).call() == 3
    no_delay = new_vault(chain, network, LOOSE, register=False, fund=False)
    with pytest.raises(ConfigurationError, match="policyDelay 0 < 3600"):
        _migrate(chain, network, old, no_delay)
    _untouched(chain, old)

    lower_high = new_vault(chain, network, LOOSE, register=False, fund=False)
    transact(chain.w3, lower_high.functions.setHighThreshold(2), sender=OWNER.address)
    set_policy_delay(chain.w3, lower_high, 3600, sender=OWNER.address)  # lowered first: at once
    assert lower_high.functions.tierThreshold(1).call() == 2
    with pytest.raises(ConfigurationError, match="tier high's threshold 2 < 3"):
        migrate_vault(
            chain.w3,
            old,
            lower_high,
            tokens=[chain.token.address],
            preimage=PolicyPreimage.of(NETCHECK, LOOSE, 300),
            sender=OWNER.address,
        )
    _untouched(chain, old)

    as_strict = new_vault(chain, network, LOOSE, delay=3600, register=False, fund=False)
    _migrate(chain, network, old, as_strict)
    assert chain.token.functions.balanceOf(as_strict.address).call() == 100 * UNIT


def test_a_migration_carries_no_scheduled_change_across(
    chain: Chain, network: ReferenceNetwork
) -> None:
    """Attack 1: the owner scheduled a switch to a tighter policy on the old vault (due after
    the delay). Before the fix a migration to a vault pinning the old, looser policy went
    through and the tightening was silently gone. Attack 2: a switch to a looser policy
    scheduled on the new vault before the migration, where nobody watching the old vault
    looks, applies after it; before the fix that migration went through too. Now both are
    refused until the change is applied or cancelled."""
    old = new_vault(chain, network, LOOSE, delay=3600)
    network.register_policy_client(old.address, NETCHECK, TIGHT, owner_key=OWNER.private_key)
    tighter = policy_id(old.address, NETCHECK, TIGHT, 300)
    assert not switch_policy(chain.w3, old, tighter, sender=OWNER.address).applied
    new = new_vault(chain, network, LOOSE, delay=3600, register=False, fund=False)
    with pytest.raises(ConfigurationError, match=r"switch .* scheduled, and a migration would"):
        _migrate(chain, network, old, new)
    _untouched(chain, old)

    cancel_policy_switch(chain.w3, old, sender=OWNER.address)
    looser = policy_id(new.address, NETCHECK, params(max_per_tx=50 * UNIT), 300)
    assert not switch_policy(chain.w3, new, looser, sender=OWNER.address).applied
    with pytest.raises(ConfigurationError, match="nobody watching the old vault"):
        _migrate(chain, network, old, new)
    _untouched(chain, old)
