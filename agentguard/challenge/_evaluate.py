"""Re-evaluate one attested task exactly as an operator does: the same input builder and the
same evaluation call (``agentguard.network.operator.policy_input`` / ``evaluate_policy``), the
same engine (regopy), under the registration the attestation's policy id names."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from agentguard._exceptions import ChallengeError, ConfigurationError
from agentguard.challenge._evidence import TaskEvidence
from agentguard.network._rpc import RPCError
from agentguard.network.approvals import SignedApproval
from agentguard.network.operator import evaluate_policy, policy_input
from agentguard.network.registration import Registration
from agentguard.policies import Policy, canonical_json
from agentguard.policies._engine import PolicyEngine

__all__ = ["Recomputed", "check_material", "reevaluate"]

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
        intent, parsed, data = policy_input(
            evidence.intent, evidence.wasm if wasm is None else wasm
        )
    except RPCError as exc:
        raise ChallengeError(
            f"the recorded inputs are not ones an operator evaluates: {exc}"
        ) from None
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
    tier = getattr(evaluation, "tier", None)
    return Recomputed(
        decision=evaluation.decision,
        reasons=tuple(evaluation.reasons),
        tier=tier if isinstance(tier, int) else None,
    )
