"""What the gateway hands the operators (``data.wasm``) and the caller (Newton's task result).

The ECDSA ``attestation`` states the trust ``tier`` the operators signed; a failed task whose
elevated tier could not reach its threshold states that ``tier`` too.

The reference network does not run on blocks (its expiries are unix timestamps); Newton's
block fields (``taskCreatedBlock``, ``reference_block``) are present, as 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentguard._intent import NATIVE_ASSET
from agentguard.network.gateway._fanout import Outcome
from agentguard.network.gateway._validation import TaskInput
from agentguard.network.state import WindowTotals

__all__ = ["REFERENCE_BLOCK", "task_result", "wasm_data"]

REFERENCE_BLOCK = 0
_FALSE_WORD = [0] * 32
_TRUE_WORD = [0] * 31 + [1]


def wasm_data(
    task: TaskInput,
    history: Mapping[int, WindowTotals],
    now: int,
    intent_hash_hex: str,
    *,
    approved: bool,
) -> dict[str, Any]:
    """The policy's oracle data: the windows' totals before and with this spend."""
    asset, amount = task.spend_asset, task.spend_amount
    windows: dict[str, Any] = {}
    for seconds, totals in history.items():
        spent = {a: str(v) for a, v in totals.spent.items()}
        projected = dict(spent)
        projected[asset] = str(totals.spent.get(asset, 0) + amount)
        windows[str(seconds)] = {"count": totals.count, "spent": spent, "projected": projected}
    wasm: dict[str, Any] = {
        "now": now,
        "intent_hash": intent_hash_hex,
        "approved": approved,
        "spend": task.intent.spend.wasm(),
        "history": windows,
    }
    if task.x402 is not None:
        wasm["x402"] = task.x402
    return wasm


def task_result(
    task: TaskInput,
    task_id_hex: str,
    now: int,
    expires_at: int,
    wasm: dict[str, Any],
    wasm_json: bytes,
    outcome: Outcome,
) -> dict[str, Any]:
    """Newton's ``CreateTaskResponse`` shape, plus the ECDSA ``attestation`` on a quorum;
    ``wasm_json`` is ``canonical_json(wasm)``, as the operators got it."""
    client = task.client
    decision, votes = outcome.decision, outcome.votes
    wire = task.intent.wire()
    policy_id_hex = "0x" + client.policy_id.hex()
    result: dict[str, Any] = {
        "task_id": task_id_hex,
        "status": "success" if decision is not None else "failed",
        "error": outcome.failure,
        "timestamp": now,
        "task": {
            "taskId": task_id_hex,
            "policyClient": client.address,
            "taskCreatedBlock": REFERENCE_BLOCK,
            "quorumThresholdPercentage": task.percentage,
            "intent": wire,
            "intentSignature": task.intent_signature,
            "wasmArgs": task.wasm_args_hex,
            "quorumNumbers": "0x00",
            "initializationTimestamp": now,
        },
        "task_response": None,
        "reference_block": REFERENCE_BLOCK,
        "expiration": expires_at,
        "operator_errors": outcome.errors,
        "attestation": None,
    }
    if decision is None:
        if outcome.tier is not None:
            result["tier"] = outcome.tier  # the tier whose threshold was not reached
        return result
    result["task_response"] = {
        "task_id": task_id_hex,
        "policy_client": client.address,
        "policy_id": policy_id_hex,
        "policy_address": NATIVE_ASSET,
        "intent": wire,
        "intent_signature": task.intent_signature,
        "evaluation_result": _TRUE_WORD if decision == "allow" else _FALSE_WORD,
        "policy_task_data": {
            "policyId": policy_id_hex,
            "policyAddress": NATIVE_ASSET,
            "policy": "0x",
            "policyCodeHash": "0x" + client.code_hash.hex(),
            "policyData": [
                {
                    "wasmArgs": task.wasm_args_hex,
                    "data": "0x" + wasm_json.hex(),
                    "policyDataAddress": NATIVE_ASSET,
                    "expireBlock": 0,
                }
            ],
        },
        "policy_config": {
            "policyParams": client.params_hex,
            "expireAfter": client.expire_after,
        },
        "initialization_timestamp": now,
    }
    result["attestation"] = {
        "scheme": "ecdsa",
        "decision": decision,
        "task_id": task_id_hex,
        "policy_id": policy_id_hex,
        "policy_client": client.address,
        "intent_hash": wasm["intent_hash"],
        "expires_at": expires_at,
        "tier": outcome.tier or 0,
        "signatures": [{"operator": v.link.address, "signature": v.signature} for v in votes],
        "reasons": votes[0].reasons,
    }
    return result
