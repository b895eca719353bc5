"""The signing-ticket registry: single redemption, expiry, and a bound on its size."""

from __future__ import annotations

import pytest

from agentguard import AttestationExpired, AttestationReplayed, VerificationError
from agentguard._tickets import Ticket, _Registry

from .conftest import Operators


def ticket(operators: Operators, intent, *, expires_at: int, task: int) -> Ticket:
    attestation = operators.attest(intent, expires_at=expires_at, task_id=task.to_bytes(32, "big"))
    return Ticket(
        task_id=attestation.task_id,
        attestation=attestation,
        intent=intent,
        intent_hash=intent.intent_hash,
        expires_at=expires_at,
        assurance="quorum-ecdsa",
    )


def test_a_ticket_is_redeemed_once_and_given_back_only_if_nothing_was_signed(operators, intent):
    registry = _Registry()
    t = ticket(operators, intent, expires_at=1_000, task=1)
    registry.issue(t, now=0)
    with pytest.raises(AttestationReplayed):  # issued once per task id
        registry.issue(t, now=0)
    assert registry.redeem(t.attestation, intent, now=10) == t
    with pytest.raises(AttestationReplayed):
        registry.redeem(t.attestation, intent, now=10)
    registry.give_back(t)
    assert registry.redeem(t.attestation, intent, now=10) == t


def test_an_expired_ticket_is_used_up(operators, intent):
    registry = _Registry()
    t = ticket(operators, intent, expires_at=100, task=2)
    registry.issue(t, now=0)
    with pytest.raises(AttestationExpired):
        registry.redeem(t.attestation, intent, now=100)
    with pytest.raises(AttestationReplayed):
        registry.redeem(t.attestation, intent, now=50)


def test_the_registry_is_bounded(operators, intent, monkeypatch):
    """Verifications that are never signed cannot grow the registry without limit: expired
    tickets (live or spent) are dropped, and a registry full of live ones refuses more."""
    monkeypatch.setattr("agentguard._tickets.MAX_TICKETS", 4)
    registry = _Registry()
    for task in range(4):
        registry.issue(ticket(operators, intent, expires_at=100, task=task), now=0)
    with pytest.raises(VerificationError, match="waiting to be signed"):
        registry.issue(ticket(operators, intent, expires_at=200, task=9), now=50)
    for task in range(4, 8):  # the first four expired at 100: pruned, not kept forever
        registry.issue(ticket(operators, intent, expires_at=300, task=task), now=150)
    assert len(registry._live) + len(registry._spent) == 4


def test_an_unknown_ticket_is_refused(operators, intent):
    registry = _Registry()
    with pytest.raises(VerificationError, match="not verified"):
        registry.redeem(operators.attest(intent), intent, now=0)
