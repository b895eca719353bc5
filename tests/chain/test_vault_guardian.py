"""The guardian: an address the owner grants that can ``pause()`` the vault and nothing else
(the challenger's watch mode uses it on a proven discrepancy). It never unpauses, moves funds,
or changes policy, operators, agent, ownership or guardians."""

from __future__ import annotations

from typing import Any

import pytest
from web3 import Web3
from web3.contract import Contract

from agentguard._exceptions import ConfigurationError, NodeUnavailable
from agentguard.chain import transact
from agentguard.chain.owner import grant_guardian, revoke_guardian
from tests.chain.helpers import (
    AGENT,
    INVALID,
    MAGIC,
    OUTSIDER,
    OWNER,
    VAULT_ETH,
    VAULT_USDC,
    Env,
    Payment,
    attested_execute,
    events,
    reverts,
)

GUARDIAN = OUTSIDER
ZERO = "0x" + "00" * 20
# Functions anyone but the owner may call, each refusing strangers on its own terms.
NOT_OWNER_ONLY = {
    "pause",  # owner or guardian
    "initialize",
    "initializeNewton",  # AlreadyInitialized
    "execute",
    "executeNewton",  # the agent's
    "acceptOwnership",  # the pending owner's
}
DUMMY: dict[str, Any] = {
    "address": OUTSIDER,
    "address[]": [OUTSIDER],
    "address payable": OUTSIDER,
    "uint256": 1,
    "uint64": 1,
    "bytes32": b"\x01" * 32,
    "bytes": b"",
    "bytes[]": [],
}


def owner_functions(vault: Contract) -> list[tuple[str, list[Any]]]:
    """Every state-changing function of the vault's ABI that only its owner may call, with
    arguments of the right types: a function added later is covered without editing this."""
    found = []
    for item in vault.abi:
        if item["type"] != "function" or item["stateMutability"] in {"view", "pure"}:
            continue
        if item["name"] in NOT_OWNER_ONLY:
            continue
        found.append((item["name"], [DUMMY[i["type"]] for i in item["inputs"]]))
    return found


@pytest.fixture
def guarded(env: Env) -> Env:
    grant_guardian(env.w3, env.vault, GUARDIAN, sender=OWNER)
    return env


def test_the_owner_grants_a_guardian_who_can_pause(env: Env) -> None:
    receipt = transact(env.w3, env.vault.functions.grantGuardian(GUARDIAN), sender=OWNER)
    assert events(env.vault, "GuardianGranted", receipt) == [{"guardian": GUARDIAN}]
    assert env.vault.functions.isGuardian(GUARDIAN).call() is True
    call = attested_execute(env, env.transfer_intent())
    receipt = transact(env.w3, env.vault.functions.pause(), sender=GUARDIAN)
    assert events(env.vault, "Paused", receipt) == [{"by": GUARDIAN}]
    with reverts("VaultPaused"):
        call.transact({"from": AGENT})
    # pausing twice is harmless; only the owner lifts it
    transact(env.w3, env.vault.functions.pause(), sender=GUARDIAN)
    transact(env.w3, env.vault.functions.unpause(), sender=OWNER)
    transact(env.w3, call, sender=AGENT)


def test_the_guardian_can_call_no_other_owner_function(guarded: Env) -> None:
    """A guardian key that leaks (or a challenger that errs) can stop the vault, never more:
    every owner-only function in the ABI refuses it, and nothing moved or changed."""
    env = guarded
    calls = owner_functions(env.vault)
    names = {name for name, _ in calls}
    assert {
        "unpause", "setOperators", "setAgent", "setPolicyId", "withdraw", "grantGuardian",
        "revokeGuardian", "transferOwnership", "setPolicyDelay", "applyPolicySwitch",
        "cancelPolicySwitch", "applyPolicyDelay", "cancelPolicyDelay", "migrateTo",
    } <= names  # fmt: skip
    transact(env.w3, env.vault.functions.pause(), sender=GUARDIAN)
    for name, args in calls:
        with reverts("NotOwner", GUARDIAN):
            env.vault.functions[name](*args).transact({"from": GUARDIAN})
    with reverts("NotPendingOwner", GUARDIAN):
        env.vault.functions.acceptOwnership().transact({"from": GUARDIAN})
    with reverts("NotAgent", GUARDIAN):
        attested_execute(env, env.transfer_intent()).transact({"from": GUARDIAN})
    v = env.vault.functions
    assert v.paused().call() is True
    assert (v.owner().call(), v.agent().call()) == (OWNER, AGENT)
    assert env.usdc(env.vault.address) == VAULT_USDC
    assert env.w3.eth.get_balance(env.vault.address) == VAULT_ETH


def test_a_revoked_guardian_cannot_pause(guarded: Env) -> None:
    env = guarded
    receipt = transact(env.w3, env.vault.functions.revokeGuardian(GUARDIAN), sender=OWNER)
    assert events(env.vault, "GuardianRevoked", receipt) == [{"guardian": GUARDIAN}]
    assert env.vault.functions.isGuardian(GUARDIAN).call() is False
    with reverts("NotOwner", GUARDIAN):
        env.vault.functions.pause().transact({"from": GUARDIAN})
    assert env.vault.functions.paused().call() is False


def test_only_the_owner_grants_and_no_one_grants_the_zero_address(env: Env) -> None:
    for caller in (AGENT, OUTSIDER):
        with reverts("NotOwner", caller):
            env.vault.functions.grantGuardian(caller).transact({"from": caller})
        with reverts("NotOwner", caller):
            env.vault.functions.pause().transact({"from": caller})
    with reverts("ZeroAddress"):
        env.vault.functions.grantGuardian(ZERO).transact({"from": OWNER})


def test_python_helpers_grant_revoke_and_explain_refusals(env: Env) -> None:
    grant_guardian(env.w3, env.vault, GUARDIAN, sender=OWNER)
    assert env.vault.functions.isGuardian(GUARDIAN).call() is True
    revoke_guardian(env.w3, env.vault, GUARDIAN, sender=OWNER)
    assert env.vault.functions.isGuardian(GUARDIAN).call() is False
    with pytest.raises(ConfigurationError, match=r"grantGuardian.*NotOwner"):
        grant_guardian(env.w3, env.vault, GUARDIAN, sender=AGENT)


def test_a_node_that_fails_is_an_agentguard_error(env: Env) -> None:
    """No web3 or requests exception escapes the owner helpers: a dead RPC node is
    ``NodeUnavailable`` (nothing was sent)."""
    dead = Web3(Web3.HTTPProvider("http://127.0.0.1:9", request_kwargs={"timeout": 2}))
    vault = dead.eth.contract(address=env.vault.address, abi=env.vault.abi)
    with pytest.raises(NodeUnavailable, match="grantGuardian"):
        grant_guardian(dead, vault, GUARDIAN, sender=OWNER)


def test_a_guardian_pause_also_stops_x402_payments(guarded: Env) -> None:
    env = guarded
    p = Payment(env)
    assert p.is_valid(p.blob()) == MAGIC
    transact(env.w3, env.vault.functions.pause(), sender=GUARDIAN)
    assert p.is_valid(p.blob()) == INVALID
