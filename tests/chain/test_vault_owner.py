"""AgentVault's owner: kill switch, operator rotation, agent and policy changes, withdrawals;
plus the properties that need a contract on the other end (re-entry, marking before calling)."""

from __future__ import annotations

from typing import Any

import pytest
from web3.contract import Contract
from web3.exceptions import ContractLogicError

from agentguard._attestation import operator_address
from agentguard._eip712 import keccak
from agentguard._intent import TransactionIntent
from agentguard.chain import execute_calldata, transact
from tests.chain.helpers import (
    AGENT,
    CHAIN_ID,
    OPERATORS,
    OUTSIDER,
    OWNER,
    PAYEE,
    POLICY_ID,
    STRANGER_KEYS,
    VAULT_ETH,
    VAULT_USDC,
    DeployTest,
    Env,
    attest,
    attested_execute,
    events,
    reverts,
)

ZERO = "0x" + "00" * 20
STRANGERS = [operator_address(k) for k in STRANGER_KEYS]


def test_owner_functions_refuse_everyone_else(env: Env) -> None:
    v = env.vault.functions
    for call in [
        v.pause(),
        v.unpause(),
        v.setOperators(STRANGERS, 1),
        v.setAgent(OUTSIDER),
        v.setPolicyId(b"\x01" * 32),
        v.withdraw(ZERO, OUTSIDER, 1),
        v.withdraw(env.token.address, OUTSIDER, 1),
    ]:
        for caller in (OUTSIDER, AGENT):
            with reverts("NotOwner", caller):
                call.transact({"from": caller})


def test_pause_and_unpause_emit_and_toggle(env: Env) -> None:
    receipt = transact(env.w3, env.vault.functions.pause(), sender=OWNER)
    assert events(env.vault, "Paused", receipt) == [{"by": OWNER}]
    assert env.vault.functions.paused().call() is True
    receipt = transact(env.w3, env.vault.functions.unpause(), sender=OWNER)
    assert events(env.vault, "Unpaused", receipt) == [{"by": OWNER}]
    assert env.vault.functions.paused().call() is False


def test_rotating_operators_retires_the_old_keys(env: Env) -> None:
    intent = env.transfer_intent()
    old = attested_execute(env, intent)
    receipt = transact(env.w3, env.vault.functions.setOperators(STRANGERS, 2), sender=OWNER)
    assert events(env.vault, "OperatorsSet", receipt) == [{"operators": STRANGERS, "threshold": 2}]
    assert env.vault.functions.operators().call() == STRANGERS
    assert not any(env.vault.functions.isOperator(o).call() for o in OPERATORS)
    with reverts("UnknownOperator", OPERATORS[0]):
        old.transact({"from": AGENT})
    transact(env.w3, attested_execute(env, intent, keys=STRANGER_KEYS), sender=AGENT)
    assert env.usdc(PAYEE) == 5_000_000
    with reverts("InvalidThreshold", 3, 2):
        env.vault.functions.setOperators(STRANGERS, 3).transact({"from": OWNER})


def test_new_agent_replaces_the_old(env: Env) -> None:
    call = attested_execute(env, env.transfer_intent())
    receipt = transact(env.w3, env.vault.functions.setAgent(OUTSIDER), sender=OWNER)
    assert events(env.vault, "AgentSet", receipt) == [{"agent": OUTSIDER}]
    with reverts("NotAgent", AGENT):
        call.transact({"from": AGENT})
    transact(env.w3, call, sender=OUTSIDER)
    assert env.usdc(PAYEE) == 5_000_000
    with reverts("ZeroAddress"):
        env.vault.functions.setAgent(ZERO).transact({"from": OWNER})


def test_new_policy_id_invalidates_old_attestations(env: Env) -> None:
    call = attested_execute(env, env.transfer_intent())
    new = keccak(b"new policy")
    receipt = transact(env.w3, env.vault.functions.setPolicyId(new), sender=OWNER)
    assert events(env.vault, "PolicyIdSet", receipt) == [{"policyId": new}]
    with reverts("PolicyMismatch", new, POLICY_ID):
        call.transact({"from": AGENT})
    with reverts("InvalidPolicyId"):
        env.vault.functions.setPolicyId(b"\x00" * 32).transact({"from": OWNER})


def test_owner_withdraws_eth_and_tokens_even_while_paused(env: Env) -> None:
    v = env.vault.functions
    transact(env.w3, v.pause(), sender=OWNER)
    before = env.w3.eth.get_balance(PAYEE)
    receipt = transact(env.w3, v.withdraw(ZERO, PAYEE, 1234), sender=OWNER)
    assert events(env.vault, "Withdrawn", receipt) == [{"token": ZERO, "to": PAYEE, "amount": 1234}]
    assert env.w3.eth.get_balance(PAYEE) == before + 1234
    assert env.w3.eth.get_balance(env.vault.address) == VAULT_ETH - 1234
    transact(env.w3, v.withdraw(env.token.address, PAYEE, 777), sender=OWNER)
    assert (env.usdc(PAYEE), env.usdc(env.vault.address)) == (777, VAULT_USDC - 777)
    with reverts("InsufficientBalance", env.vault.address, VAULT_USDC - 777, VAULT_USDC):
        v.withdraw(env.token.address, PAYEE, VAULT_USDC).transact({"from": OWNER})
    with pytest.raises(ContractLogicError):
        v.withdraw(ZERO, PAYEE, VAULT_ETH).transact({"from": OWNER})
    with reverts("ZeroAddress"):
        v.withdraw(ZERO, ZERO, 1).transact({"from": OWNER})
    with reverts("WithdrawFailed", OUTSIDER):  # an address without code is no token
        v.withdraw(OUTSIDER, PAYEE, 1).transact({"from": OWNER})


@pytest.fixture
def probe(env: Env, deploy_test: DeployTest) -> Contract:
    return deploy_test(env.w3, "Probe")


def _call_intent(
    env: Env, target: Contract, fn: str, signature: str, *args: Any
) -> TransactionIntent:
    data = target.encode_abi(fn, args=list(args))
    return TransactionIntent(
        from_=env.vault.address,
        to=target.address,
        data=data,
        chain_id=CHAIN_ID,
        function_signature=signature,
    )


def test_task_is_marked_used_before_the_call_goes_out(env: Env, probe: Contract) -> None:
    task = keccak(b"marked before call")
    intent = _call_intent(
        env, probe, "expectMarked", "expectMarked(address,bytes32)", env.vault.address, task
    )
    transact(env.w3, attested_execute(env, intent, task_id=task), sender=AGENT)
    assert env.vault.functions.taskUsed(task).call() is True


def test_execute_cannot_be_reentered(env: Env, probe: Contract) -> None:
    # The probe becomes the agent, executes a call into itself, and from there tries a second,
    # separately attested execute.
    transact(env.w3, env.vault.functions.setAgent(probe.address), sender=OWNER)
    inner_intent = env.transfer_intent()
    inner = execute_calldata(
        inner_intent, attest(env.vault.address, inner_intent, expires_at=env.now() + 600)
    )
    outer_intent = _call_intent(
        env, probe, "forward", "forward(address,bytes)", env.vault.address, inner
    )
    outer = execute_calldata(
        outer_intent, attest(env.vault.address, outer_intent, expires_at=env.now() + 600)
    )
    with reverts("Reentrancy"):
        probe.functions.forward(env.vault.address, outer).transact({"from": OUTSIDER})
    # the inner call alone is fine: it was the nesting that was refused
    transact(env.w3, probe.functions.forward(env.vault.address, inner), sender=OUTSIDER)
    assert env.usdc(PAYEE) == 5_000_000
