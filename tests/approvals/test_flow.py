"""The wait, step by step (sans-IO): what the flow asks for and what it does with the answers."""

from __future__ import annotations

import pytest

from agentguard import (
    ApprovalRejected,
    ApprovalRequired,
    ConfigurationError,
    PolicyDenied,
    TransactionIntent,
)
from agentguard.ledger import Ledger, Limits, WindowCap
from agentguard.pipeline import (
    DEFAULT_HOLD_SECONDS,
    Action,
    Audit,
    Authorize,
    AwaitApproval,
    Release,
    Reserve,
    guarded,
)

AGENT = "0x" + "aa" * 20
TOKEN = "0x" + "bb" * 20
INTENT = TransactionIntent.erc20_transfer(
    sender=AGENT, token=TOKEN, recipient="0x" + "cc" * 20, amount=10, chain_id=8453
)
OURS = "0x" + INTENT.intent_hash.hex()


def action(timeout: float | None) -> Action:
    return Action(
        agent=AGENT,
        intent=INTENT,
        limits=Limits(windows=[WindowCap(TOKEN, 86400, 100)]),
        rail="transaction",
        approval_timeout=timeout,
    )


def test_the_wait_keeps_the_hold_polls_our_hash_and_ends_on_a_rejection() -> None:
    """A gateway that names another intent hash in its answer does not choose what the agent
    waits for: the flow polls the hash of its own intent."""
    flow = guarded(action(30.0))
    reserve = next(flow)
    assert isinstance(reserve, Reserve)
    assert reserve.hold_seconds == DEFAULT_HOLD_SECONDS + 30.0  # outlives the wait
    ledger = Ledger()
    hold = ledger.reserve(
        AGENT, reserve.spend, key=reserve.key, expires_at=ledger.now() + 60, limits=reserve.limits
    )
    assert isinstance(flow.send(hold), Authorize)
    step = flow.throw(ApprovalRequired("ask", intent_hash="0x" + "ee" * 32))
    assert isinstance(step, Audit) and step.kind == "approval_pending"
    wait = flow.send(None)
    assert isinstance(wait, AwaitApproval) and wait.intent_hash == OURS
    assert isinstance(flow.send(None), Authorize)  # approved: the same intent again
    assert isinstance(flow.throw(ApprovalRequired("ask again")), AwaitApproval)
    release = flow.throw(ApprovalRejected("no", intent_hash=OURS))
    assert isinstance(release, Release) and release.reservation_id == hold.id
    denied = flow.send(None)
    assert isinstance(denied, Audit) and denied.kind == "denied"
    with pytest.raises(ApprovalRejected):
        flow.send(None)
    assert issubclass(ApprovalRejected, PolicyDenied)


def test_without_a_timeout_approval_required_is_final() -> None:
    flow = guarded(action(None))
    reserve = next(flow)
    assert reserve.hold_seconds == DEFAULT_HOLD_SECONDS
    ledger = Ledger()
    hold = ledger.reserve(
        AGENT, reserve.spend, key=reserve.key, expires_at=ledger.now() + 60, limits=reserve.limits
    )
    flow.send(hold)
    assert isinstance(flow.throw(ApprovalRequired("ask")), Release)


@pytest.mark.parametrize("timeout", [-1.0, float("nan"), float("inf"), True])
def test_a_negative_or_nan_timeout_is_a_configuration_error(timeout: float) -> None:
    with pytest.raises(ConfigurationError, match="approval_timeout"):
        next(guarded(action(timeout)))
