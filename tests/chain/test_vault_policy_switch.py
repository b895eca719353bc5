"""Switching a vault's policy under an owner-set delay.

``policyDelay`` 0 keeps today's behaviour (``setPolicyId`` switches at once). With a delay,
``setPolicyId`` schedules the switch and ``applyPolicySwitch`` makes it, no earlier than the
delay allows; attestations under the old id are accepted up to that transaction and refused
from it on. Raising the delay is immediate; lowering it waits the current delay.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hexbytes import HexBytes

from agentguard._eip712 import keccak
from agentguard._exceptions import ConfigurationError
from agentguard.chain import transact
from agentguard.chain.owner import (
    apply_policy_delay,
    apply_policy_switch,
    cancel_policy_switch,
    set_policy_delay,
    switch_policy,
)
from tests.chain.helpers import (
    AGENT,
    INVALID,
    MAGIC,
    OWNER,
    PAYEE,
    POLICY_ID,
    Env,
    Payment,
    attested_execute,
    events,
    reverts,
)

NEW = keccak(b"agentguard test policy v2")
HOUR = 3600


@pytest.fixture
def delayed(env: Env) -> Env:
    receipt = transact(env.w3, env.vault.functions.setPolicyDelay(HOUR), sender=OWNER)
    assert events(env.vault, "PolicyDelaySet", receipt) == [{"delay": HOUR}]
    return env


@contextmanager
def one_block(env: Env, timestamp: int) -> Iterator[None]:
    """Transactions sent inside go into one block mined at exactly ``timestamp``."""
    env.anvil.rpc("evm_setAutomine", False)
    try:
        yield
        env.anvil.rpc("evm_mine", timestamp)
    finally:
        env.anvil.rpc("evm_setAutomine", True)


def advance(env: Env, seconds: int) -> None:
    """Moves the chain's clock (a mined block, so calls and estimates see it)."""
    env.anvil.rpc("evm_increaseTime", seconds)
    env.anvil.rpc("evm_mine")


def send(call: Any, sender: str) -> HexBytes:
    """Sent with a fixed gas limit, so a reverting call is mined (and reverts) too."""
    return HexBytes(call.transact({"from": sender, "gas": 400_000}))


def status(env: Env, tx: HexBytes) -> int:
    return int(env.w3.eth.get_transaction_receipt(tx)["status"])


def test_with_a_delay_set_policy_id_only_schedules(delayed: Env) -> None:
    env = delayed
    receipt = transact(env.w3, env.vault.functions.setPolicyId(NEW), sender=OWNER)
    apply_at = env.now() + HOUR
    assert events(env.vault, "PolicySwitchScheduled", receipt) == [
        {"policyId": NEW, "applyAt": apply_at}
    ]
    assert events(env.vault, "PolicyIdSet", receipt) == []
    assert env.vault.functions.policyId().call() == POLICY_ID
    assert env.vault.functions.pendingPolicySwitch().call() == [NEW, apply_at]
    transact(env.w3, attested_execute(env, env.transfer_intent()), sender=AGENT)
    assert env.usdc(PAYEE) == 5_000_000


def test_old_attestations_stop_exactly_when_the_switch_applies(delayed: Env) -> None:
    """One second before the delay has passed the switch cannot apply and an attestation
    under the old id still executes; the switch applies at the first second allowed, and from
    that transaction on the old id is refused and the new one executes. Between the end of the
    delay and the apply transaction the old id still works: the switch is the transaction."""
    env = delayed
    transact(env.w3, env.vault.functions.setPolicyId(NEW), sender=OWNER)
    _, apply_at = env.vault.functions.pendingPolicySwitch().call()
    old_intent = env.transfer_intent(amount=1)
    late = apply_at + 600  # the attestations outlive the delay
    with one_block(env, apply_at - 1):
        early = send(env.vault.functions.applyPolicySwitch(), OWNER)
        old_ok = send(attested_execute(env, old_intent, expires_at=late), AGENT)
    assert (status(env, early), status(env, old_ok)) == (0, 1)
    with reverts("TooEarly", apply_at, apply_at - 1):
        env.vault.functions.applyPolicySwitch().call({"from": OWNER}, block_identifier="latest")
    old_after = attested_execute(env, old_intent, expires_at=late)
    with one_block(env, apply_at):
        applied = send(env.vault.functions.applyPolicySwitch(), OWNER)
    assert status(env, applied) == 1
    receipt = env.w3.eth.get_transaction_receipt(applied)
    assert events(env.vault, "PolicyIdSet", receipt) == [{"policyId": NEW}]
    assert env.vault.functions.policyId().call() == NEW
    assert env.vault.functions.pendingPolicySwitch().call() == [b"\x00" * 32, 0]
    with reverts("PolicyMismatch", NEW, POLICY_ID):
        old_after.transact({"from": AGENT})
    transact(env.w3, attested_execute(env, old_intent, policy_id=NEW), sender=AGENT)
    assert env.usdc(PAYEE) == 2


def test_after_the_delay_the_old_id_works_until_the_switch_is_applied(delayed: Env) -> None:
    env = delayed
    transact(env.w3, env.vault.functions.setPolicyId(NEW), sender=OWNER)
    advance(env, 2 * HOUR)
    transact(env.w3, attested_execute(env, env.transfer_intent()), sender=AGENT)
    with reverts("PolicyMismatch", POLICY_ID, NEW):
        attested_execute(env, env.transfer_intent(), policy_id=NEW).transact({"from": AGENT})


def test_a_cancelled_switch_never_applies(delayed: Env) -> None:
    env = delayed
    transact(env.w3, env.vault.functions.setPolicyId(NEW), sender=OWNER)
    receipt = transact(env.w3, env.vault.functions.cancelPolicySwitch(), sender=OWNER)
    assert events(env.vault, "PolicySwitchCancelled", receipt) == [{"policyId": NEW}]
    advance(env, 2 * HOUR)
    with reverts("NothingScheduled"):
        env.vault.functions.applyPolicySwitch().transact({"from": OWNER})
    with reverts("NothingScheduled"):
        env.vault.functions.cancelPolicySwitch().transact({"from": OWNER})
    assert env.vault.functions.policyId().call() == POLICY_ID


def test_rescheduling_restarts_the_delay(delayed: Env) -> None:
    env = delayed
    transact(env.w3, env.vault.functions.setPolicyId(NEW), sender=OWNER)
    advance(env, HOUR - 10)
    other = keccak(b"agentguard test policy v3")
    transact(env.w3, env.vault.functions.setPolicyId(other), sender=OWNER)
    assert env.vault.functions.pendingPolicySwitch().call() == [other, env.now() + HOUR]
    advance(env, 20)
    with reverts("TooEarly"):
        env.vault.functions.applyPolicySwitch().transact({"from": OWNER})


def test_lowering_the_delay_waits_the_current_delay(delayed: Env) -> None:
    """The attack: a stolen owner key that could set the delay to 0 and then switch the policy
    at once would skip the delay watchers (the challenger, the agent's operator) rely on. The
    lowering is itself delayed, so a switch asked for meanwhile is still only scheduled."""
    env = delayed
    v = env.vault.functions
    receipt = transact(env.w3, v.setPolicyDelay(0), sender=OWNER)
    due = env.now() + HOUR
    assert events(env.vault, "PolicyDelayChangeScheduled", receipt) == [
        {"delay": 0, "applyAt": due}
    ]
    assert v.policyDelay().call() == HOUR
    assert v.pendingPolicyDelay().call() == [0, due]
    transact(env.w3, v.setPolicyId(NEW), sender=OWNER)
    assert v.policyId().call() == POLICY_ID  # scheduled, not switched
    with reverts("TooEarly"):
        v.applyPolicyDelay().transact({"from": OWNER})
    advance(env, HOUR)
    receipt = transact(env.w3, v.applyPolicyDelay(), sender=OWNER)
    assert events(env.vault, "PolicyDelaySet", receipt) == [{"delay": 0}]
    assert v.pendingPolicyDelay().call() == [0, 0]
    other = keccak(b"agentguard test policy v3")
    transact(env.w3, v.setPolicyId(other), sender=OWNER)
    assert v.policyId().call() == other
    assert v.pendingPolicySwitch().call() == [b"\x00" * 32, 0]  # an immediate switch clears it


def test_raising_the_delay_is_immediate_and_drops_a_pending_lowering(delayed: Env) -> None:
    env = delayed
    v = env.vault.functions
    transact(env.w3, v.setPolicyDelay(60), sender=OWNER)
    receipt = transact(env.w3, v.setPolicyDelay(2 * HOUR), sender=OWNER)
    assert events(env.vault, "PolicyDelaySet", receipt) == [{"delay": 2 * HOUR}]
    assert v.policyDelay().call() == 2 * HOUR
    assert v.pendingPolicyDelay().call() == [0, 0]
    with reverts("NothingScheduled"):
        v.applyPolicyDelay().transact({"from": OWNER})
    with reverts("NothingScheduled"):
        v.cancelPolicyDelay().transact({"from": OWNER})
    transact(env.w3, v.setPolicyDelay(0), sender=OWNER)
    receipt = transact(env.w3, v.cancelPolicyDelay(), sender=OWNER)
    assert events(env.vault, "PolicyDelayChangeCancelled", receipt) == [{"delay": 0}]
    assert v.policyDelay().call() == 2 * HOUR


def test_a_delay_that_would_freeze_policy_changes_is_refused(env: Env) -> None:
    """A stolen owner key raising the delay to 2^64-1 would stop the real owner from ever
    switching the policy again; the delay is capped at 30 days."""
    limit = env.vault.functions.MAX_POLICY_DELAY().call()
    assert limit == 30 * 24 * HOUR
    with reverts("DelayTooLong", limit + 1, limit):
        env.vault.functions.setPolicyDelay(limit + 1).transact({"from": OWNER})
    transact(env.w3, env.vault.functions.setPolicyDelay(limit), sender=OWNER)


def test_nothing_scheduled_cannot_be_applied(env: Env) -> None:
    with reverts("NothingScheduled"):
        env.vault.functions.applyPolicySwitch().transact({"from": OWNER})


def test_python_helpers_schedule_apply_and_explain(delayed: Env) -> None:
    env = delayed
    scheduled = switch_policy(env.w3, env.vault, NEW, sender=OWNER)
    assert (scheduled.applied, scheduled.apply_at) == (False, env.now() + HOUR)
    with pytest.raises(ConfigurationError, match=r"applyPolicySwitch.*TooEarly"):
        apply_policy_switch(env.w3, env.vault, sender=OWNER)
    cancel_policy_switch(env.w3, env.vault, sender=OWNER)
    lowered = set_policy_delay(env.w3, env.vault, 0, sender=OWNER)
    assert (lowered.applied, lowered.apply_at) == (False, env.now() + HOUR)
    switch_policy(env.w3, env.vault, NEW, sender=OWNER)
    advance(env, HOUR)
    assert apply_policy_switch(env.w3, env.vault, sender=OWNER) == NEW
    apply_policy_delay(env.w3, env.vault, sender=OWNER)
    other = keccak(b"agentguard test policy v3")
    now = switch_policy(env.w3, env.vault, other, sender=OWNER)
    assert (now.applied, now.apply_at) == (True, env.now())
    assert env.vault.functions.policyId().call() == other


def test_an_x402_payment_under_the_old_id_stops_with_the_switch(delayed: Env) -> None:
    """The payment path follows the same rule: a payment signature made under the old id is
    valid while the switch is only scheduled and invalid from the apply transaction on, so a
    facilitator settling it late gets a refusal, not a payment under the old policy."""
    env = delayed
    p = Payment(env, expires_at=env.now() + 2 * HOUR)
    transact(env.w3, env.vault.functions.setPolicyId(NEW), sender=OWNER)
    assert p.is_valid(p.blob()) == MAGIC
    advance(env, HOUR)
    assert p.is_valid(p.blob()) == MAGIC
    transact(env.w3, env.vault.functions.applyPolicySwitch(), sender=OWNER)
    assert p.is_valid(p.blob()) == INVALID


def test_a_newton_vault_switches_under_the_same_delay(env: Env) -> None:
    """``executeNewton`` and the validator (through ``getPolicyId``) read the same policy id,
    so a Newton-mode vault's switch waits its delay too."""
    salt = b"\x57" * 32
    receipt = transact(
        env.w3,
        env.factory.functions.createNewtonVault(OWNER, AGENT, env.token.address, POLICY_ID, salt),
        sender=OWNER,
    )
    (created,) = events(env.factory, "VaultCreated", receipt)
    newton = env.w3.eth.contract(address=created["vault"], abi=env.vault.abi).functions
    transact(env.w3, newton.setPolicyDelay(HOUR), sender=OWNER)
    transact(env.w3, newton.setPolicyId(NEW), sender=OWNER)
    assert newton.getPolicyId().call() == POLICY_ID
    advance(env, HOUR)
    transact(env.w3, newton.applyPolicySwitch(), sender=OWNER)
    assert newton.getPolicyId().call() == NEW
