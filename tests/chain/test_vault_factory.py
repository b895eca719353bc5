"""AgentVaultFactory: clones at a caller-bound CREATE2 address, initialized in the same
transaction; the implementation is locked and a clone initializes once."""

from __future__ import annotations

from web3 import Web3

from agentguard.chain import load_artifact, transact
from tests.chain.helpers import (
    AGENT,
    OPERATORS,
    OUTSIDER,
    OWNER,
    POLICY_ID,
    Env,
    create_vault,
    events,
    reverts,
)

ZERO = "0x" + "00" * 20
SALT = b"\x42" * 32


def test_vault_lands_at_the_predicted_address_fully_initialized(env: Env) -> None:
    f = env.factory.functions
    predicted = f.predictVault(OUTSIDER, SALT).call()
    assert env.w3.eth.get_code(predicted) == b""
    receipt = transact(
        env.w3, f.createVault(OWNER, AGENT, OPERATORS, 2, POLICY_ID, SALT), sender=OUTSIDER
    )
    assert events(env.factory, "VaultCreated", receipt) == [
        {"vault": predicted, "creator": OUTSIDER, "agent": AGENT, "policyId": POLICY_ID}
    ]
    vault = env.w3.eth.contract(address=predicted, abi=load_artifact("AgentVault").abi).functions
    assert (vault.owner().call(), vault.agent().call(), vault.policyId().call()) == (
        OWNER,
        AGENT,
        POLICY_ID,
    )
    assert (vault.operators().call(), vault.threshold().call(), vault.paused().call()) == (
        OPERATORS,
        2,
        False,
    )
    # an EIP-1167 minimal proxy to the implementation
    impl = bytes.fromhex(f.implementation().call()[2:])
    proxy = (
        bytes.fromhex("363d3d373d3d3d363d73")
        + impl
        + bytes.fromhex("5af43d82803e903d91602b57fd5bf3")
    )
    assert env.w3.eth.get_code(predicted) == proxy


def test_salt_is_bound_to_the_caller(env: Env) -> None:
    f = env.factory.functions
    mine, theirs = f.predictVault(OWNER, SALT).call(), f.predictVault(OUTSIDER, SALT).call()
    assert mine != theirs
    # someone else using my salt first does not take my address
    transact(env.w3, f.createVault(OUTSIDER, OWNER, OPERATORS, 1, POLICY_ID, SALT), sender=OUTSIDER)
    vault = create_vault(env.w3, env.factory, salt=SALT, sender=OWNER)
    assert vault.address == mine
    assert vault.functions.agent().call() == AGENT
    with reverts("VaultExists", mine):
        f.createVault(OWNER, AGENT, OPERATORS, 2, POLICY_ID, SALT).transact({"from": OWNER})


def test_implementation_and_clones_cannot_be_reinitialized(env: Env) -> None:
    abi = load_artifact("AgentVault").abi
    implementation = env.w3.eth.contract(
        address=env.factory.functions.implementation().call(), abi=abi
    )
    with reverts("AlreadyInitialized"):
        implementation.functions.initialize(OUTSIDER, OUTSIDER, [OUTSIDER], 1, POLICY_ID).transact(
            {"from": OUTSIDER}
        )
    with reverts("AlreadyInitialized"):
        env.vault.functions.initialize(OUTSIDER, OUTSIDER, [OUTSIDER], 1, POLICY_ID).transact(
            {"from": OUTSIDER}
        )
    with reverts("AlreadyInitialized"):  # not even its owner
        env.vault.functions.initialize(OWNER, AGENT, OPERATORS, 2, POLICY_ID).transact(
            {"from": OWNER}
        )
    assert env.vault.functions.agent().call() == AGENT


def test_bad_initial_configuration_reverts_the_creation(env: Env) -> None:
    f = env.factory.functions
    dup = [OPERATORS[0], OPERATORS[0]]
    for args, error in [
        ((ZERO, AGENT, OPERATORS, 2, POLICY_ID), ("ZeroAddress",)),
        ((OWNER, ZERO, OPERATORS, 2, POLICY_ID), ("ZeroAddress",)),
        ((OWNER, AGENT, OPERATORS, 2, b"\x00" * 32), ("InvalidPolicyId",)),
        ((OWNER, AGENT, OPERATORS, 0, POLICY_ID), ("InvalidThreshold", 0, 3)),
        ((OWNER, AGENT, OPERATORS, 4, POLICY_ID), ("InvalidThreshold", 4, 3)),
        ((OWNER, AGENT, [], 1, POLICY_ID), ("InvalidThreshold", 1, 0)),
        ((OWNER, AGENT, dup, 1, POLICY_ID), ("InvalidOperator", OPERATORS[0])),
        ((OWNER, AGENT, [OPERATORS[0], ZERO], 1, POLICY_ID), ("InvalidOperator", ZERO)),
    ]:
        with reverts(*error):
            f.createVault(*args, SALT).transact({"from": OWNER})
    too_many = [Web3.to_checksum_address(f"0x{i:040x}") for i in range(1, 258)]
    with reverts("InvalidThreshold", 1, 257):
        f.createVault(OWNER, AGENT, too_many, 1, POLICY_ID, SALT).transact({"from": OWNER})
    assert env.w3.eth.get_code(f.predictVault(OWNER, SALT).call()) == b""
