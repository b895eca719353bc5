"""The owner's procedures with the network: ``roll_out_policy`` and ``roll_out_migration`` on
real vaults (anvil, 8453) and the reference network reading the chain; the owner-change and
wrong-configuration attacks against them."""

from __future__ import annotations

import pytest
from web3.contract import Contract

from agentguard import Attestation, TransactionIntent
from agentguard._exceptions import ConfigurationError, GatewayRPCError
from agentguard.chain.owner import (
    accept_ownership,
    roll_out_migration,
    roll_out_policy,
    switch_policy,
    transfer_ownership,
)
from agentguard.network.launcher import ReferenceNetwork
from agentguard.policies import policy_id
from tests.network.conftest import RPC, decision

from .conftest import (
    LOOSE,
    NETCHECK,
    NEW_OWNER,
    OWNER,
    TIGHT,
    UNIT,
    Chain,
    ask,
    execute,
    new_vault,
    pin_read_again,
)


def pinned(vault: Contract) -> bytes:
    return bytes(vault.functions.policyId().call())


def test_without_a_delay_the_roll_out_switches_in_its_second_step(
    chain: Chain, network: ReferenceNetwork
) -> None:
    vault = new_vault(chain, network, LOOSE)
    rollout = roll_out_policy(
        chain.w3, vault, network, policy=NETCHECK, params=TIGHT, owner_key=OWNER.private_key
    )
    assert rollout.switch.applied and pinned(vault) == rollout.policy_id
    pin_read_again()
    _, refused = ask(chain, network, vault, 3 * UNIT)
    assert decision(refused) == "deny"
    intent, result = ask(chain, network, vault, UNIT // 2)
    assert Attestation.model_validate(result["attestation"]).policy_id == rollout.policy_id
    assert execute(chain, vault, intent, result) == "ok"


def test_only_the_vaults_owner_rolls_out_and_nothing_is_registered_otherwise(
    chain: Chain, network: ReferenceNetwork
) -> None:
    vault = new_vault(chain, network, LOOSE)
    before = pinned(vault)
    with pytest.raises(ConfigurationError, match="is owned by"):
        roll_out_policy(
            chain.w3, vault, network, policy=NETCHECK, params=TIGHT, owner_key=NEW_OWNER.private_key
        )
    assert pinned(vault) == before
    _, result = ask(chain, network, vault, 3 * UNIT)  # still LOOSE at the network
    assert decision(result) == "allow"


def test_an_ex_owners_registrations_do_not_outlive_the_transfer(
    chain: Chain, network: ReferenceNetwork
) -> None:
    """A pending owner registers nothing before it accepts; after the transfer the former
    owner can register nothing for the vault (the chain names the owner), and the registrations it made are not kept as versions: a new
    owner who points the vault back at one of their ids without registering it gets nothing
    signed under the former owner's registration."""
    vault = new_vault(chain, network, LOOSE)
    loose_id = pinned(vault)
    transfer_ownership(chain.w3, vault, NEW_OWNER.address, sender=OWNER.address)
    with pytest.raises(ConfigurationError, match="is owned by"):  # pending is not owner yet
        roll_out_policy(
            chain.w3, vault, network, policy=NETCHECK, params=TIGHT, owner_key=NEW_OWNER.private_key
        )
    with pytest.raises(GatewayRPCError, match=r"whose owner\(\) is"):
        network.register_policy_client(
            vault.address, NETCHECK, TIGHT, owner_key=NEW_OWNER.private_key
        )
    accept_ownership(chain.w3, vault, sender=NEW_OWNER.address)
    with pytest.raises(GatewayRPCError, match=r"whose owner\(\) is"):
        network.register_policy_client(vault.address, NETCHECK, LOOSE, owner_key=OWNER.private_key)
    with pytest.raises(ConfigurationError, match="is owned by"):
        roll_out_policy(
            chain.w3, vault, network, policy=NETCHECK, params=TIGHT, owner_key=OWNER.private_key
        )
    rollout = roll_out_policy(
        chain.w3, vault, network, policy=NETCHECK, params=TIGHT, owner_key=NEW_OWNER.private_key
    )
    pin_read_again()
    intent, result = ask(chain, network, vault, UNIT // 2)
    assert Attestation.model_validate(result["attestation"]).policy_id == rollout.policy_id
    assert execute(chain, vault, intent, result) == "ok"

    switch_policy(chain.w3, vault, loose_id, sender=NEW_OWNER.address)
    pin_read_again()
    answer = RPC(network, network.api_key).raw(
        "newt_createTask", {"policy_client": vault.address, "intent": intent.wire(), "timeout": 5}
    )
    assert f"pins policy id 0x{loose_id.hex()}" in answer.json()["error"]["message"]


def test_a_migration_registers_the_new_vault_then_moves_the_funds(
    chain: Chain, network: ReferenceNetwork
) -> None:
    old = new_vault(chain, network, LOOSE)
    new = new_vault(chain, network, LOOSE, register=False, fund=False)
    moved = roll_out_migration(
        chain.w3,
        old,
        new,
        network,
        policy=NETCHECK,
        params=LOOSE,
        tokens=[chain.token.address],
        owner_key=OWNER.private_key,
    )
    assert moved == {chain.token.address: 100 * UNIT}
    assert old.functions.paused().call()
    intent, result = ask(chain, network, new, 3 * UNIT)
    assert Attestation.model_validate(result["attestation"]).policy_id == pinned(new)
    assert execute(chain, new, intent, result) == "ok"
    intent, result = ask(chain, network, old, UNIT)  # the old vault: attested, refused onchain
    assert execute(chain, old, intent, result) == "AgentVault: VaultPaused()"


def test_a_new_vault_pinning_another_policy_than_the_registration_is_refused_first(
    chain: Chain, network: ReferenceNetwork
) -> None:
    """The new vault was created with TIGHT; the owner migrates saying LOOSE. Nothing is
    registered for the new vault (a registration the vault refuses would have been left at
    the network) and nothing moves."""
    old = new_vault(chain, network, LOOSE)
    new = new_vault(chain, network, TIGHT, register=False, fund=False)
    with pytest.raises(ConfigurationError, match="does not pin this policy"):
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
    assert chain.token.functions.balanceOf(old.address).call() == 100 * UNIT
    assert not old.functions.paused().call()
    answer = RPC(network, network.api_key).raw(
        "newt_createTask",
        {"policy_client": new.address, "intent": ask_intent(chain, new).wire(), "timeout": 5},
    )
    assert "is not registered" in answer.json()["error"]["message"]
    assert pinned(new) == policy_id(new.address, NETCHECK, TIGHT, 300)


def ask_intent(chain: Chain, vault: Contract) -> TransactionIntent:
    return TransactionIntent.erc20_transfer(
        sender=vault.address,
        token=chain.token.address,
        recipient="0x" + "33" * 20,
        amount=UNIT,
        chain_id=8453,
    )
