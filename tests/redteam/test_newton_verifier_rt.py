"""Red team: NewtonVerifier as a hostile gateway, agent host or RPC would attack it.

Each test reproduces an attack; the first two succeeded before the verifier bounded a
response's age by its signed initializationTimestamp (red-team findings, now fixed).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentguard._exceptions import AgentGuardError, AttestationExpired, AttestationReplayed
from agentguard._tickets import _REGISTRY
from agentguard._verifier import MemoryReplayGuard
from tests.newton.conftest import Chain, chain, chain_session, task_id
from tests.newton.newton_quorum import attestation_for
from tests.newton.test_newton_verifier import INTENT, _certified, _result, _verifier

__all__ = ["chain", "chain_session", "task_id"]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _forget_process_ticket(task_id: bytes) -> None:
    """What a process restart (or a second agent process) sees: the process-local ticket
    registry does not know the task; only the (shared, e.g. Redis) replay guard remembers."""
    _REGISTRY._live.pop(task_id, None)
    _REGISTRY._spent.pop(task_id, None)


def test_newton_certificate_verifies_again_after_its_ticket_lapsed(
    chain: Chain, task_id: bytes
) -> None:
    """Attack (hostile gateway / agent host): re-deliver an attestation that was already used
    once, after the first ticket lapsed. ``expires_at`` (the gateway's block number) is not
    signed; the replay entry lives only as long as the ticket (now + blocks x 2 s), and neither
    ``initializationTimestamp`` nor the certificate's ``referenceTimestamp`` (both signed) is
    compared with the clock. A replay guard shared by agent processes (the shared ledger) or
    surviving a restart therefore lets the same transfer be signed twice."""
    head = chain.w3.eth.get_block("latest")
    clock = Clock(float(head["timestamp"]))
    guard = MemoryReplayGuard(clock)
    result = _result(chain, task_id, expiration=int(head["number"]) + 10)
    result["task"]["initializationTimestamp"] = int(head["timestamp"])  # a fresh task
    result["task_response"]["initialization_timestamp"] = int(head["timestamp"])
    att = attestation_for(chain.quorum.certify(result), INTENT)
    first = _verifier(chain, clock=clock, replay_guard=guard).verify(att, INTENT)
    assert first.expires_at == int(head["timestamp"]) + 20
    _forget_process_ticket(task_id)
    clock.now += 7200  # two hours later (chain and agent clock); the gateway re-sends it
    chain.anvil.rpc("evm_increaseTime", 7200)
    chain.anvil.rpc("evm_mine")
    with pytest.raises((AttestationReplayed, AttestationExpired)):
        _verifier(chain, clock=clock, replay_guard=guard).verify(att, INTENT)


def test_newton_year_old_task_response_is_refused_for_an_eoa(chain: Chain, task_id: bytes) -> None:
    """Attack (hostile gateway): hand back a genuine certificate over a task response whose
    signed ``initializationTimestamp`` is a year before the chain's clock, with a fresh
    unsigned ``expiration`` block. ``AgentVault._requireFresh`` refuses such a response
    (``NEWTON_MAX_TASK_AGE`` = 1 h after the signed timestamp, because the block expiry rests
    on the unsigned ``taskCreatedBlock``); ``NewtonVerifier`` issues an EOA ticket for it."""
    head = chain.w3.eth.get_block("latest")
    result = _result(chain, task_id)
    year_ago = int(head["timestamp"]) - 365 * 86_400
    result["task"]["initializationTimestamp"] = year_ago
    result["task_response"]["initialization_timestamp"] = year_ago
    att = attestation_for(chain.quorum.certify(result), INTENT)
    with pytest.raises(AttestationExpired):
        _verifier(chain).verify(att, INTENT)


def _doc(att: Any) -> dict[str, Any]:
    return dict(json.loads(att.newton_result or ""))


def test_newton_held_spelling_and_summary_tricks_are_refused(chain: Chain, task_id: bytes) -> None:
    """Held: both spellings of a signed field disagreeing, a duplicate JSON key, and a
    summary policy id other than the signed one are all refused (never read one way for the
    digest and another for the intent)."""
    att = _certified(chain, task_id)
    doc = _doc(att)
    doc["task_response"]["intent"]["chain_id"] = hex(8453 + 1)
    dup = (att.newton_result or "").replace('{"task_id"', '{"task_id":"0x","task_id"', 1)
    for bad in (
        att.model_copy(update={"newton_result": json.dumps(doc)}),
        att.model_copy(update={"newton_result": dup}),
        att.model_copy(update={"policy_id": "0x" + "11" * 32}),
    ):
        with pytest.raises(AgentGuardError):
            _verifier(chain).verify(bad, INTENT)


def _dated(chain: Chain, task_id: bytes, created: int, **kwargs: Any) -> Any:
    result = _result(chain, task_id, initialization_timestamp=created, **kwargs)
    return attestation_for(chain.quorum.certify(result), INTENT)


def test_newton_future_dated_task_response_is_refused(chain: Chain, task_id: bytes) -> None:
    """Attack (hostile gateway): date the signed ``initializationTimestamp`` a day ahead so
    the signed deadline lies far in the future (the vault refuses a task more than 5 min
    ahead of the chain; before the fix the verifier ignored the timestamp)."""
    now = int(chain.w3.eth.get_block("latest")["timestamp"])
    with pytest.raises(AgentGuardError, match="future-dated"):
        _verifier(chain).verify(_dated(chain, task_id, now + 86_400), INTENT)


def test_newton_ticket_never_outlives_the_signed_deadline(chain: Chain, task_id: bytes) -> None:
    """A response signed 50 min ago (read in milliseconds, as Newton may send it) has 10 min
    of signed life left: the ticket must end then, not ``max_lifetime`` (1 h) from now."""
    now = int(chain.w3.eth.get_block("latest")["timestamp"])
    clock = Clock(float(now))
    att = _dated(chain, task_id, (now - 3000) * 1000, expire_after=10_000)
    verified = _verifier(chain, clock=clock).verify(att, INTENT)
    assert verified.expires_at <= now + 600


def test_newton_replay_claim_outlives_the_signed_deadline(chain: Chain, task_id: bytes) -> None:
    """The shared replay guard remembers a used task past the signed deadline (plus skew),
    even when the host's clock lags the chain's: a lagging host clock must not let the claim
    lapse while the chain still accepts the certificate."""
    now = int(chain.w3.eth.get_block("latest")["timestamp"])
    clock = Clock(float(now - 1800))  # the host is half an hour behind the chain
    guard = MemoryReplayGuard(clock)
    att = _dated(chain, task_id, now, expire_after=10_000)
    _verifier(chain, clock=clock, replay_guard=guard).verify(att, INTENT)
    _forget_process_ticket(task_id)
    clock.now = now + 3599  # the host caught up; the signed deadline (now + 1 h) is not reached
    with pytest.raises(AttestationReplayed):
        _verifier(chain, clock=clock, replay_guard=guard).verify(att, INTENT)
