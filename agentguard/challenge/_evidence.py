"""One attested task as a challenger sees it: the exact inputs the operators evaluated and what
they signed, taken from a source that may lie (a gateway, a state, an agent's audit log).

Nothing here is trusted: ``evidence_from_result`` only checks the shape. What the operators
signed is read from the signatures themselves (``signed_values``), never from the ``decision``
field a source reports.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from agentguard._attestation import Attestation, recover_signer
from agentguard._exceptions import AgentGuardError, ChallengeError
from agentguard._intent import TransactionIntent
from agentguard._json import strict_loads

__all__ = ["SignedBy", "TaskEvidence", "evidence_from_result", "signed_values"]

Source = str  # "gateway" | "state" | "audit"


@dataclass(frozen=True)
class TaskEvidence:
    task_id: str
    policy_client: str
    intent: dict[str, Any]  # wire form
    wasm: dict[str, Any]  # data.wasm exactly as the operators got it
    attestation: dict[str, Any]  # Attestation.to_json() form (signatures included)
    created_at: int
    source: str  # "gateway" | "state" | "audit"
    approval: dict[str, Any] | None = None  # signed approval if the task used one
    # the JSON-RPC id the task id derives from (``agentguard._task_id``): what binds the
    # x402 details to the signatures; None when the source does not say (an audit log)
    request_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "policy_client": self.policy_client,
            "intent": self.intent,
            "wasm": self.wasm,
            "attestation": self.attestation,
            "created_at": self.created_at,
            "source": self.source,
            "approval": self.approval,
            "request_id": self.request_id,
        }


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ChallengeError(f"{where} is not an object")
    return value


def policy_data(response: Any) -> dict[str, Any]:
    """``data.wasm`` from a task result's ``task_response`` (hex of its canonical JSON)."""
    response = _object(response, "task_response")
    data = _object(response.get("policy_task_data"), "task_response.policy_task_data")
    entries = data.get("policyData")
    if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
        raise ChallengeError("task_response.policy_task_data.policyData is not one entry")
    raw = entries[0].get("data")
    if not isinstance(raw, str) or not raw.startswith("0x"):
        raise ChallengeError("the policy data is not 0x-hex")
    try:
        wasm = strict_loads(bytes.fromhex(raw[2:]))
    except ValueError as exc:
        raise ChallengeError(f"the policy data is not JSON: {exc}") from None
    return _object(wasm, "the policy data")


def evidence_from_result(
    result: Mapping[str, Any], *, created_at: int, source: str
) -> TaskEvidence:
    """Evidence from a reference network's task result (a stored record or a gateway's copy).
    ``ChallengeError`` if its shape is not one (the source is lying or broken)."""
    attestation = _object(result.get("attestation"), "attestation")
    task = _object(result.get("task"), "task")
    intent = _object(task.get("intent"), "task.intent")
    task_id, client = attestation.get("task_id"), attestation.get("policy_client")
    if not isinstance(task_id, str) or not isinstance(client, str):
        raise ChallengeError("the attestation has no task id or policy client")
    request_id = task.get("requestId")
    return TaskEvidence(
        task_id=task_id,
        policy_client=client,
        intent=intent,
        wasm=policy_data(result.get("task_response")),
        attestation=attestation,
        created_at=created_at,
        source=source,
        request_id=request_id if isinstance(request_id, str) else None,
    )


@dataclass(frozen=True)
class SignedBy:
    """One signature of an attestation: who it names, who it recovers to, and what it signs
    (``allow`` None: it recovers to its named operator for neither value, or that operator is
    not a known one; such a signature blames no one)."""

    operator: str
    allow: bool | None
    note: str = ""


def signed_values(
    attestation: Attestation, intent: TransactionIntent, operators: Collection[str] | None
) -> list[SignedBy]:
    """What each signature signs, recovered from the signature itself over the digest of this
    intent (its hash recomputed, never the reported one) with ``allow`` true and false: the
    value whose digest recovers to the named operator is the one that operator signed."""
    known = None if operators is None else {o.lower() for o in operators}
    intent_hash, chain_id = intent.intent_hash, intent.chain_id
    digests = {
        value: attestation.model_copy(update={"decision": "allow" if value else "deny"}).digest_for(
            intent_hash, chain_id
        )
        for value in (True, False)
    }
    found = []
    for sig in attestation.signatures:
        operator = sig.operator.lower()
        if known is not None and operator not in known:
            found.append(SignedBy(operator, None, "not a known operator"))
            continue
        signed: bool | None = None
        for value, digest in digests.items():
            try:
                if "0x" + recover_signer(digest, sig.signature).hex() == operator:
                    signed = value
                    break
            except AgentGuardError:
                break
        note = "" if signed is not None else "does not recover to its operator for this task"
        found.append(SignedBy(operator, signed, note))
    return found
