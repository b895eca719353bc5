"""The network keeps several registrations per policy client and evaluates a vault under the one
whose policy id the vault pins onchain: real vaults on anvil (8453), the reference network with
a chain RPC (gateway and operators), the owner's procedures of ``agentguard.chain.owner``."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import pytest
from web3.contract import Contract

from agentguard import Attestation, TransactionIntent
from agentguard.chain.owner import (
    apply_policy_switch,
    cancel_policy_switch,
    roll_out_policy,
    set_policy_delay,
    switch_policy,
)
from agentguard.network.launcher import ReferenceNetwork
from agentguard.network.state import policy_material
from agentguard.policies import policy_id
from tests.network.conftest import RPC, decision, params
from tests.network.test_hostile_gateway import evaluate
from tests.task_ids import bind

from .conftest import (
    LOOSE,
    NETCHECK,
    OWNER,
    TIGHT,
    UNIT,
    Chain,
    ask,
    execute,
    new_vault,
    pin_read_again,
)

HOUR = 3600
LOOSEST = params(max_per_tx=100 * UNIT)


def attested_id(result: dict[str, Any]) -> bytes:
    return Attestation.model_validate(result["attestation"]).policy_id


def pinned(vault: Contract) -> bytes:
    return bytes(vault.functions.policyId().call())


def later(chain: Chain, seconds: int) -> None:
    chain.anvil.rpc("evm_increaseTime", seconds)
    chain.anvil.rpc("evm_mine")


def register(
    network: ReferenceNetwork, vault: Contract, config: dict[str, Any], version: int
) -> dict[str, Any]:
    """The owner signs and registers ``config`` as ``version``; returns the signed registration."""
    signed = network.sign_registration(
        vault.address, NETCHECK, config, owner_key=OWNER.private_key, version=version
    )
    network._admin("agentguard_registerPolicyClient", signed)
    registration: dict[str, Any] = signed["registration"]
    return registration


def test_a_scheduled_switch_is_attested_under_the_pinned_id_until_it_applies(
    chain: Chain, network: ReferenceNetwork
) -> None:
    """Before versions the network attested under the newest registration: from the moment
    the owner registered the tighter configuration (step one of the switch) every attestation
    was under its id, which the vault refused (``PolicyMismatch``) for the whole delay."""
    vault = new_vault(chain, network, LOOSE, delay=HOUR)
    old_id = pinned(vault)
    rollout = roll_out_policy(
        chain.w3, vault, network, policy=NETCHECK, params=TIGHT, owner_key=OWNER.private_key
    )
    assert not rollout.switch.applied
    intent, result = ask(chain, network, vault, 3 * UNIT)  # within LOOSE, above TIGHT
    assert decision(result) == "allow" and attested_id(result) == old_id
    assert execute(chain, vault, intent, result) == "ok"

    later(chain, HOUR)
    assert apply_policy_switch(chain.w3, vault, sender=OWNER.address) == rollout.policy_id
    pin_read_again()
    _, refused = ask(chain, network, vault, 3 * UNIT)
    assert decision(refused) == "deny" and attested_id(refused) == rollout.policy_id
    intent, result = ask(chain, network, vault, UNIT // 2)
    assert decision(result) == "allow" and attested_id(result) == rollout.policy_id
    assert execute(chain, vault, intent, result) == "ok"


def test_a_cancelled_switch_leaves_the_network_on_the_old_id(
    chain: Chain, network: ReferenceNetwork
) -> None:
    """The owner registers and schedules a switch, then cancels it. Before versions the newest
    registration (the cancelled one) stayed what the network attested under: every attestation
    after the cancel was refused by the vault, for good."""
    vault = new_vault(chain, network, LOOSE, delay=HOUR)
    old_id = pinned(vault)
    roll_out_policy(
        chain.w3, vault, network, policy=NETCHECK, params=TIGHT, owner_key=OWNER.private_key
    )
    cancel_policy_switch(chain.w3, vault, sender=OWNER.address)
    later(chain, 2 * HOUR)
    pin_read_again()
    intent, result = ask(chain, network, vault, 3 * UNIT)
    assert decision(result) == "allow" and attested_id(result) == old_id
    assert execute(chain, vault, intent, result) == "ok"


def operator_task(
    vault: Contract, chain: Chain, registration: dict[str, Any], config: dict[str, Any], amount: int
) -> dict[str, Any]:
    """What a gateway sends an operator for a transfer from ``vault`` under ``registration``
    (its task id derived from a fresh request id, as a gateway derives it)."""
    intent = TransactionIntent.erc20_transfer(
        sender=vault.address,
        token=chain.token.address,
        recipient="0x" + "33" * 20,
        amount=amount,
        chain_id=8453,
    )
    now = int(time.time())
    body = {
        "policy_client": vault.address,
        "chain_id": 8453,
        "intent": intent.wire(),
        "policy_code_hash": "0x" + NETCHECK.code_hash.hex(),
        "policy": policy_material(NETCHECK),
        "params": config,
        "expire_after": 300,
        "expires_at": now + 300,
        "registration": registration,
        "wasm": {
            "now": now,
            "intent_hash": "0x" + intent.intent_hash.hex(),
            "approved": False,
            "spend": intent.spend.wasm(),
            "history": {},
        },
    }
    return bind(body)


def test_a_stale_gateway_replaying_an_older_registration_during_a_pending_switch(
    chain: Chain, network: ReferenceNetwork
) -> None:
    """The vault pinned LOOSEST (100 units), then LOOSE; TIGHT is registered and scheduled. A
    stale or hostile gateway replays the owner's LOOSEST registration: the gateway refuses it
    as a registration (not newer), and every operator refuses to sign under it, although it
    holds it (its history) and the owner signed it: the vault pins LOOSE. This guards the
    history operators now keep: without the pin check an older version they hold would be
    signable."""
    vault = new_vault(chain, network, LOOSEST, register=False)
    loosest = register(network, vault, LOOSEST, version=1)
    register(network, vault, LOOSE, version=2)
    switch_policy(
        chain.w3, vault, policy_id(vault.address, NETCHECK, LOOSE, 300), sender=OWNER.address
    )
    set_policy_delay(chain.w3, vault, HOUR, sender=OWNER.address)
    roll_out_policy(
        chain.w3, vault, network, policy=NETCHECK, params=TIGHT, owner_key=OWNER.private_key
    )
    pin_read_again()

    with pytest.raises(Exception, match="not newer"):
        network._admin(
            "agentguard_registerPolicyClient",
            {"registration": loosest, "policy": policy_material(NETCHECK)},
        )
    body = operator_task(vault, chain, loosest, LOOSEST, 50 * UNIT)
    for op in network.operators:
        error = evaluate(op, body)["error"]
        assert "pins policy id" in error["message"], error
    _, result = ask(chain, network, vault, 50 * UNIT)
    assert decision(result) == "deny"  # the network's own choice: LOOSE, which the vault pins


def test_an_operator_that_missed_the_pinned_registration_takes_it_because_the_vault_pins_it(
    chain: Chain, network: ReferenceNetwork
) -> None:
    """An operator down while LOOSE was registered holds only TIGHT (scheduled). Offered LOOSE
    with a task, it holds it as history because the chain says the vault pins its id, and
    signs; offered LOOSEST (older, the owner's, not pinned), it refuses."""
    vault = new_vault(chain, network, LOOSE, register=False)
    network.stop_operator(2)
    try:
        register(network, vault, LOOSEST, version=1)
        switch_policy(
            chain.w3, vault, policy_id(vault.address, NETCHECK, LOOSEST, 300), sender=OWNER.address
        )
        loose = register(network, vault, LOOSE, version=2)
        switch_policy(
            chain.w3, vault, policy_id(vault.address, NETCHECK, LOOSE, 300), sender=OWNER.address
        )
    finally:
        network.start_operator(2)
    late = network.operators[2]
    tight = register(network, vault, TIGHT, version=3)  # delivered to all three
    set_policy_delay(chain.w3, vault, HOUR, sender=OWNER.address)
    switch_policy(
        chain.w3, vault, policy_id(vault.address, NETCHECK, TIGHT, 300), sender=OWNER.address
    )

    body = operator_task(vault, chain, loose, LOOSE, 3 * UNIT)
    answer = evaluate(late, body)["result"]
    assert answer["decision"] == "allow" and answer["policy_id"] == "0x" + pinned(vault).hex()
    loosest = network.sign_registration(
        vault.address, NETCHECK, LOOSEST, owner_key=OWNER.private_key, version=1
    )["registration"]
    error = evaluate(late, operator_task(vault, chain, loosest, LOOSEST, 50 * UNIT))["error"]
    assert "not newer" in error["message"], error
    assert tight["version"] == 3


def tasks_recorded(network: ReferenceNetwork, vault: Contract) -> int:
    db = sqlite3.connect(network.state_dir / "state.sqlite3")
    try:
        (count,) = db.execute(
            "SELECT COUNT(*) FROM tasks WHERE lower(policy_client) = ?", (vault.address.lower(),)
        ).fetchone()
    finally:
        db.close()
    return int(count)


def test_a_vault_pinning_an_id_nobody_registered_gets_nothing_reserved_or_signed(
    chain: Chain, network: ReferenceNetwork
) -> None:
    """The owner switched the vault without registering the configuration. Before versions
    the network attested under the registered one and reserved the amount for an attestation
    the vault refuses; now the gateway refuses the task and says what to register."""
    vault = new_vault(chain, network, LOOSE)
    tight_id = policy_id(vault.address, NETCHECK, TIGHT, 300)
    switch_policy(chain.w3, vault, tight_id, sender=OWNER.address)
    pin_read_again()
    intent = TransactionIntent.erc20_transfer(
        sender=vault.address,
        token=chain.token.address,
        recipient="0x" + "33" * 20,
        amount=UNIT // 2,
        chain_id=8453,
    )
    answer = RPC(network, network.api_key).raw(
        "newt_createTask", {"policy_client": vault.address, "intent": intent.wire(), "timeout": 5}
    )
    error = answer.json()["error"]
    assert f"pins policy id 0x{tight_id.hex()}" in error["message"], error
    assert tasks_recorded(network, vault) == 0
    network.register_policy_client(vault.address, NETCHECK, TIGHT, owner_key=OWNER.private_key)
    intent, result = ask(chain, network, vault, UNIT // 2)
    assert attested_id(result) == tight_id and execute(chain, vault, intent, result) == "ok"
    assert tasks_recorded(network, vault) == 1


def test_a_restarted_gateway_finds_the_pinned_registration_in_its_state(
    chain: Chain, network: ReferenceNetwork
) -> None:
    """A gateway that starts during a pending switch loads only each client's newest
    registration; it reads the one the vault pins from the state's versions table."""
    vault = new_vault(chain, network, LOOSE, delay=HOUR)
    roll_out_policy(
        chain.w3, vault, network, policy=NETCHECK, params=TIGHT, owner_key=OWNER.private_key
    )
    network.kill_gateway()
    network.start_gateway()
    intent, result = ask(chain, network, vault, 3 * UNIT)
    assert decision(result) == "allow" and attested_id(result) == pinned(vault)
    assert execute(chain, vault, intent, result) == "ok"
