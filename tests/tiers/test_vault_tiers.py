"""AgentVault enforces the signed trust tier onchain, on both paths (``execute`` and x402's
ERC-1271), and only its owner sets tier high's threshold, a lowering waiting the policy delay
(anvil, chain id 8453; operators signed with the shared chain-test keys, 2-of-3 vault)."""

from __future__ import annotations

from typing import Any

import pytest

from agentguard._tiers import ALL, HIGH, HUMAN, STANDARD, VAULT_ONLY
from agentguard.chain import DEV_ACCOUNTS, execute_args, transact
from tests.chain import conftest as chain_fixtures
from tests.chain.helpers import (
    AGENT,
    MAGIC,
    OPERATOR_KEYS,
    OWNER,
    PAYEE,
    Env,
    Payment,
    attest,
    reverts,
)

chain_env = chain_fixtures.chain_env  # the chain tests' vault (3 operators, threshold 2)
env = chain_fixtures.env

GUARDIAN = DEV_ACCOUNTS[6].address
DAY = 86400


def _execute(env: Env, *, tier: int, keys: int, amount: int = 5_000_000, **kw: Any) -> Any:
    intent = env.transfer_intent(amount=amount)
    attestation = attest(
        env.vault.address,
        intent,
        expires_at=env.now() + 600,
        keys=OPERATOR_KEYS[:keys],
        tier=tier,
        **kw,
    )
    return env.vault.functions.execute(*execute_args(intent, attestation))


def _later(env: Env, seconds: int) -> None:
    env.anvil.rpc("evm_increaseTime", seconds)
    env.anvil.rpc("evm_mine")


def test_each_tier_needs_its_threshold(env: Env) -> None:
    v = env.vault.functions
    assert [v.tierThreshold(t).call() for t in range(9)] == [2, 3, 3, 3, 2, 3, 3, 3, 0]
    transact(env.w3, _execute(env, tier=STANDARD, keys=2), sender=AGENT)
    transact(env.w3, _execute(env, tier=VAULT_ONLY, keys=2), sender=AGENT)  # it is a vault
    for tier in (HIGH, ALL, HUMAN, HUMAN | VAULT_ONLY):
        with reverts("InsufficientQuorum", 2, 3):
            _execute(env, tier=tier, keys=2).transact({"from": AGENT})
        transact(env.w3, _execute(env, tier=tier, keys=3), sender=AGENT)
    assert env.usdc(PAYEE) == 6 * 5_000_000


def test_a_tier_outside_the_table_authorizes_nothing(env: Env) -> None:
    """Every operator signed tier 8: no rule exists for it, so no quorum can be enough."""
    with reverts("UnknownTier", 8):
        _execute(env, tier=8, keys=3).transact({"from": AGENT})


def test_a_relabelled_or_replayed_tier_does_not_recover(env: Env) -> None:
    """Attack: a gateway (or the agent) submits a tier-all attestation as standard, where two
    signatures would do: the tier is in the digest, so the signatures recover to strangers.
    Once used, the same attestation under any tier is spent."""
    intent = env.transfer_intent()
    genuine = attest(env.vault.address, intent, expires_at=env.now() + 600, keys=OPERATOR_KEYS,
                     tier=ALL)  # fmt: skip
    relabelled = genuine.model_copy(update={"tier": STANDARD})
    with reverts("UnknownOperator"):
        env.vault.functions.execute(*execute_args(intent, relabelled)).transact({"from": AGENT})
    stripped = genuine.model_copy(update={"signatures": genuine.signatures[:2]})
    with reverts("InsufficientQuorum", 2, 3):
        env.vault.functions.execute(*execute_args(intent, stripped)).transact({"from": AGENT})
    transact(env.w3, env.vault.functions.execute(*execute_args(intent, genuine)), sender=AGENT)
    for tier in (STANDARD, HIGH, VAULT_ONLY):
        with reverts("TaskAlreadyUsed", genuine.task_id):
            env.vault.functions.execute(
                *execute_args(intent, genuine.model_copy(update={"tier": tier}))
            ).transact({"from": AGENT})


def test_x402_payments_through_erc1271_obey_the_tier(env: Env) -> None:
    short = Payment(env, tier=ALL, keys=OPERATOR_KEYS[:2])
    assert short.is_valid(short.blob()) != MAGIC
    relabelled = Payment(env, tier=ALL, keys=OPERATOR_KEYS)
    assert relabelled.is_valid(relabelled.raw_blob(tier=STANDARD)) != MAGIC
    assert relabelled.is_valid(relabelled.blob()) == MAGIC
    transact(env.w3, relabelled.settle_call(), sender=PAYEE)


def test_only_the_owner_sets_the_high_threshold_within_bounds(env: Env) -> None:
    v = env.vault.functions
    transact(env.w3, v.grantGuardian(GUARDIAN), sender=OWNER)
    for caller in (AGENT, PAYEE, GUARDIAN):
        with reverts("NotOwner", caller):
            v.setHighThreshold(2).transact({"from": caller})
    with reverts("InvalidThreshold", 1, 3):  # below the standard quorum
        v.setHighThreshold(1).transact({"from": OWNER})
    with reverts("InvalidThreshold", 4, 3):  # more than the operators
        v.setHighThreshold(4).transact({"from": OWNER})
    transact(env.w3, v.setHighThreshold(2), sender=OWNER)  # no policy delay: at once
    assert v.tierThreshold(HIGH).call() == 2 and v.tierThreshold(ALL).call() == 3
    transact(env.w3, _execute(env, tier=HIGH, keys=2), sender=AGENT)


def test_lowering_the_high_threshold_waits_the_policy_delay(env: Env) -> None:
    """Attack: a stolen owner key lowers tier high's threshold to what it can get signed.
    Lowering loosens, so under a policy delay it is only scheduled (raising applies at
    once); the vault keeps demanding every operator until the delay has passed."""
    v = env.vault.functions
    transact(env.w3, v.setPolicyDelay(DAY), sender=OWNER)
    transact(env.w3, v.setHighThreshold(2), sender=OWNER)
    threshold, pending, apply_at = v.highThreshold().call()
    assert (threshold, pending) == (0, 2) and apply_at >= env.now() + DAY - 5
    assert v.tierThreshold(HIGH).call() == 3
    with reverts("InsufficientQuorum", 2, 3):
        _execute(env, tier=HIGH, keys=2).transact({"from": AGENT})
    with reverts("TooEarly"):
        v.applyHighThreshold().transact({"from": OWNER})
    with reverts("NotOwner", AGENT):
        v.applyHighThreshold().transact({"from": AGENT})
    _later(env, DAY)
    transact(env.w3, v.applyHighThreshold(), sender=OWNER)
    assert v.tierThreshold(HIGH).call() == 2
    transact(env.w3, _execute(env, tier=HIGH, keys=2), sender=AGENT)
    transact(env.w3, v.setHighThreshold(3), sender=OWNER)  # raising: at once
    assert list(v.highThreshold().call()) == [3, 0, 0]
    with reverts("InsufficientQuorum", 2, 3):
        _execute(env, tier=HIGH, keys=2).transact({"from": AGENT})


def test_a_scheduled_lowering_can_be_cancelled_and_is_dropped_by_a_raise(env: Env) -> None:
    v = env.vault.functions
    transact(env.w3, v.setPolicyDelay(DAY), sender=OWNER)
    transact(env.w3, v.setHighThreshold(2), sender=OWNER)
    transact(env.w3, v.cancelHighThreshold(), sender=OWNER)
    with reverts("NothingScheduled"):
        v.applyHighThreshold().transact({"from": OWNER})
    transact(env.w3, v.setHighThreshold(2), sender=OWNER)
    transact(env.w3, v.setHighThreshold(0), sender=OWNER)  # every operator: a raise
    _later(env, DAY)
    with reverts("NothingScheduled"):
        v.applyHighThreshold().transact({"from": OWNER})
    assert v.tierThreshold(HIGH).call() == 3


@pytest.mark.parametrize("tier", [HIGH, ALL])
def test_fewer_operators_never_lower_a_tier_below_the_quorum(env: Env, tier: int) -> None:
    """After ``setOperators`` shrinks the set, a configured high threshold above the new set
    means every operator, and nothing falls below the standard threshold."""
    v = env.vault.functions
    transact(env.w3, v.setHighThreshold(3), sender=OWNER)
    operators = v.operators().call()
    transact(env.w3, v.setOperators(operators[:2], 2), sender=OWNER)
    assert v.tierThreshold(tier).call() == 2
    assert v.tierThreshold(STANDARD).call() == 2
