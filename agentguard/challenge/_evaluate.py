"""Re-evaluate one attested task exactly as an operator does: the same input builder and the
same evaluation call (``agentguard.network.operator.policy_input`` / ``evaluate_policy``), the
same engine (regopy), under the registration the attestation's policy id names."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from agentguard._exceptions import ChallengeError, ChallengeRetry, ConfigurationError, IntentError
from agentguard._intent import TransactionIntent
from agentguard._task_id import task_id
from agentguard._tiers import human_gate
from agentguard.challenge._evidence import TaskEvidence
from agentguard.network._rpc import RPCError
from agentguard.network.approvals import SignedApproval
from agentguard.network.gateway._registry import history_windows
from agentguard.network.operator import check_params, evaluate_policy, policy_input
from agentguard.network.registration import Registration
from agentguard.policies import Policy, canonical_json
from agentguard.policies._engine import PolicyEngine
from agentguard.policies._probe import (
    PROBE_TIMEOUT,
    PolicyRefused,
    ProbeUnavailable,
    probe,
    probe_key,
)

__all__ = [
    "CHALLENGE_PROBE_TIMEOUT",
    "Recomputed",
    "check_material",
    "most_permissive",
    "probes_passed",
    "reevaluate",
]

CHALLENGE_PROBE_TIMEOUT = 10 * PROBE_TIMEOUT
"""The challenger's probe limit: no one waits on its answer, and a good policy refused for
time here is a fraud left unchallenged until it is tried again."""

_engine: PolicyEngine | None = None
_engine_lock = threading.Lock()


def _default_engine() -> PolicyEngine:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = PolicyEngine()
        return _engine


@dataclass(frozen=True)
class Recomputed:
    decision: str  # "allow" | "deny" | "approval_required"
    reasons: tuple[str, ...]
    tier: int | None = None  # when the policy states one (tiers)

    @property
    def allowed(self) -> bool:
        return self.decision == "allow"

    def to_json(self) -> dict[str, Any]:
        return {"decision": self.decision, "reasons": list(self.reasons), "tier": self.tier}


def check_material(evidence: TaskEvidence, registration: Registration, policy: Policy) -> None:
    """The registration and policy are exactly what the attestation's policy id commits to:
    ``policy_id == keccak(client, code hash, params hash, expire_after)`` and the code hash is
    the material's own. ``ChallengeError`` otherwise."""
    policy_id = evidence.attestation.get("policy_id")
    if not isinstance(policy_id, str) or policy_id.lower() != "0x" + registration.policy_id.hex():
        raise ChallengeError(
            f"the registration's policy id 0x{registration.policy_id.hex()} is not the "
            f"attestation's ({str(policy_id)[:80]}): it is not the configuration evaluated"
        )
    if evidence.policy_client.lower() != registration.policy_client_hex:
        raise ChallengeError("the registration is for another policy client")
    if policy.code_hash != registration.policy_code_hash:
        raise ChallengeError(
            f"the policy material hashes to 0x{policy.code_hash.hex()}, not the registered "
            f"code hash 0x{registration.policy_code_hash.hex()}"
        )


def reevaluate(
    evidence: TaskEvidence,
    registration: Registration,
    policy: Policy,
    *,
    wasm: dict[str, Any] | None = None,
    engine: PolicyEngine | None = None,
) -> Recomputed:
    """The decision the policy gives on the recorded inputs. ``wasm`` overrides the recorded
    policy data (the watch passes history it recomputed). An approval the evidence carries is
    checked as an operator checks it; one that fails counts as no approval. ``ChallengeError``
    if the material is not the attested configuration, or the inputs are ones no honest
    operator evaluates (then the caller decides whom that blames)."""
    check_material(evidence, registration, policy)
    try:
        check_params(policy, registration.params)
    except RPCError as exc:
        raise ChallengeError(f"the registration's params: {exc}") from None
    try:
        intent, parsed, data = policy_input(
            evidence.intent, evidence.wasm if wasm is None else wasm
        )
    except RPCError as exc:
        raise ChallengeError(
            f"the recorded inputs are not ones an operator evaluates: {exc}"
        ) from None
    _check_bound(evidence, intent, data)
    expires_at = evidence.attestation.get("expires_at")
    if not isinstance(expires_at, int) or data["now"] + registration.expire_after != expires_at:
        raise ChallengeError(
            "the policy data's time is not the attestation's expiry minus the registered "
            "lifetime: it is not the policy data the operators evaluated"
        )
    if intent.chain_id != registration.chain_id:
        raise ChallengeError(
            f"the intent is for chain {intent.chain_id}, the registration for "
            f"{registration.chain_id}"
        )
    if data["approved"] and evidence.approval is not None:
        try:
            approval = SignedApproval.from_json(evidence.approval)
            approval.check(
                registration,
                intent_hash=intent.intent_hash,
                chain_id=intent.chain_id,
                now=data["now"],
            )
        except ConfigurationError:
            data = {**data, "approved": False}
    _probe(policy, registration.params)  # a watch runs for days: never crash it
    try:
        evaluation = evaluate_policy(
            engine if engine is not None else _default_engine(),
            policy,
            parsed,
            registration.params,
            data,
            params_json=canonical_json({"params": registration.params}),
        )
    except RPCError as exc:
        raise ChallengeError(f"the policy does not evaluate on these inputs: {exc}") from None
    # What an honest operator signs: at the human tier an allow only with an approval.
    decision, reasons = human_gate(
        evaluation.decision, tuple(evaluation.reasons), evaluation.tier, approved=data["approved"]
    )
    return Recomputed(decision=decision, reasons=reasons, tier=evaluation.tier)


def _check_bound(evidence: TaskEvidence, intent: TransactionIntent, data: dict[str, Any]) -> None:
    """The x402 details evaluated are the ones the signatures cover: the task id derives from
    them (``agentguard._task_id``), so a source that changed, added or dropped them, with or
    without the request id, gets ``ChallengeError`` (a record that proves nothing), never a
    re-evaluation that blames the operators for details they never saw."""
    details = data.get("x402")
    if evidence.request_id is None:
        if details is not None:
            raise ChallengeError(
                "the x402 details are bound to the signatures only through the task's request "
                "id, which this evidence does not carry: they may not be the ones evaluated"
            )
        return
    try:
        derived = task_id(evidence.policy_client, intent.intent_hash, details, evidence.request_id)
    except (IntentError, ValueError) as exc:  # a policy client that is not hex, a bad id
        raise ChallengeError(f"the task id cannot be derived from the evidence: {exc}") from None
    if "0x" + derived.hex() != evidence.task_id.lower():
        raise ChallengeError(
            "the task id does not derive from the recorded policy client, intent, x402 details "
            "and request id: these are not the inputs the operators evaluated"
        )


_PASSED: ContextVar[set[str] | None] = ContextVar("agentguard_probes_passed", default=None)


@contextmanager
def probes_passed() -> Iterator[set[str]]:
    """The probe keys (hex) whose probe passed inside the block: a watch that judged a task
    after all knows the machine can judge that key again, so its count of failures is over."""
    passed: set[str] = set()
    token = _PASSED.set(passed)
    try:
        yield passed
    finally:
        _PASSED.reset(token)


def _probe(policy: Policy, params: dict[str, Any]) -> None:
    """The policy probe, with the challenger's limit: a crash is the policy's own
    (``ChallengeError``: it cannot be re-evaluated); out of time or no child is maybe the
    machine's (``ChallengeRetry``, naming what was probed: judge it later)."""
    try:
        probe(policy, params, timeout=CHALLENGE_PROBE_TIMEOUT)
    except (PolicyRefused, ProbeUnavailable) as exc:
        if isinstance(exc, PolicyRefused) and exc.lasting:
            raise ChallengeError(
                f"the policy does not evaluate on these inputs: policy evaluation failed: {exc}"
            ) from None
        raise ChallengeRetry(
            f"the policy could not be judged now: {exc}", code=probe_key(policy, params)
        ) from None
    if (passed := _PASSED.get()) is not None:
        passed.add(probe_key(policy, params).hex())


def most_permissive(wasm: dict[str, Any], registration: Registration) -> dict[str, Any]:
    """The recorded policy data with every part no operator signs set in the action's favour:
    no earlier spend in any window (only this action's amount projected) and a human approval.
    Every window the registered params define is there, whatever the record holds: a policy
    refuses when a window is missing, so a record that dropped one would otherwise "prove"
    honest operators wrong.

    The signatures bind the intent, the policy id and the expiry (so the time); the history
    and the approval flag are the gateway's word. A wrong ``allow`` is proven by the record
    alone only if the policy refuses even on this data: no history a gateway could have
    given would have made it right. (The watch proves the history itself, from the chain.)"""
    spend = wasm.get("spend")
    asset = spend.get("asset") if isinstance(spend, dict) else None
    amount = spend.get("amount") if isinstance(spend, dict) else None
    history = wasm.get("history")
    windows = {str(w) for w in history_windows(registration)}
    windows.update(history if isinstance(history, dict) else {})
    alone = {asset: amount} if isinstance(asset, str) and isinstance(amount, str) else {}
    return {
        **wasm,
        "approved": True,
        "history": {key: {"count": 0, "spent": {}, "projected": alone} for key in windows},
    }
