"""What the gateway hands the operators (``data.wasm``) and the caller (Newton's task result).

The ECDSA ``attestation`` states the trust ``tier`` the operators signed; a failed task whose
elevated tier could not reach its threshold states that ``tier`` too.

The reference network does not run on blocks (its expiries are unix timestamps); Newton's
block fields (``taskCreatedBlock``, ``reference_block``) are present, as 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from json.encoder import encode_basestring
from typing import Any

from agentguard._intent import NATIVE_ASSET
from agentguard.network._rpc import PreEncoded, encode
from agentguard.network.gateway._fanout import Outcome
from agentguard.network.gateway._registry import PolicyClient
from agentguard.network.gateway._validation import TaskInput
from agentguard.network.state import WindowTotals

__all__ = ["COMPACT_PARAM", "REFERENCE_BLOCK", "compact_result", "task_result", "wasm_data"]

REFERENCE_BLOCK = 0
_FALSE_WORD = [0] * 32
_TRUE_WORD = [0] * 31 + [1]
COMPACT_PARAM = "agentguard_compact"
"""A ``newt_createTask`` param: ``true`` asks for ``compact_result`` instead of the whole
answer (``agentguard_networkInfo`` offers it as ``compact_answers``)."""
_COMPACT_KEYS = ("task_id", "status", "error", "expiration", "operator_errors", "tier")


def wasm_data(
    task: TaskInput,
    history: Mapping[int, WindowTotals],
    now: int,
    intent_hash_hex: str,
    *,
    approved: bool,
) -> dict[str, Any]:
    """The policy's oracle data: the totals of the windows the client's params name (the state
    may track more) before and with this spend."""
    asset, amount = task.spend_asset, task.spend_amount
    windows: dict[str, Any] = {}
    for seconds in task.client.windows:
        totals = history.get(seconds)
        if totals is None:  # never: the state tracks every window asked for (fails closed)
            continue
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
    request_id: str,
    now: int,
    expires_at: int,
    wasm: dict[str, Any],
    wasm_json: bytes,
    outcome: Outcome,
    intent_json: str | None = None,
    *,
    whole: bool = True,
) -> dict[str, Any]:
    """Newton's ``CreateTaskResponse`` shape, plus the ECDSA ``attestation`` on a quorum;
    ``wasm_json`` is ``canonical_json(wasm)``, as the operators got it. A quorum's answer
    comes ``PreEncoded``: its JSON joined from its policy client's constant fragments and
    the task's own values (``_joined``), the very bytes ``encode`` gives for the dict;
    ``intent_json`` is ``encode(task.intent.wire())``, if the caller has it already. Not
    ``whole`` (the caller sends ``compact_result`` of it): a plain dict, its JSON not joined,
    as nobody sends it (the state records the dict; ``encode`` of it is the same bytes)."""
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
            "requestId": request_id,  # what the task id derives from (``agentguard._task_id``)
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
    if not whole:
        return result
    intent = encode(wire).decode() if intent_json is None else intent_json
    return PreEncoded(result, _joined(result, task, wasm_json, intent))


class _Parts:
    """The constant stretches of one policy client's answers, encoded once."""

    __slots__ = ("allow", "attestation", "config", "deny", "response", "task")

    def __init__(self, client: PolicyClient) -> None:
        address, native = encode(client.address).decode(), encode(NATIVE_ASSET).decode()
        policy_id = encode("0x" + client.policy_id.hex()).decode()
        self.task = (
            f',"policyClient":{address},"taskCreatedBlock":{REFERENCE_BLOCK},'
            '"quorumThresholdPercentage":'
        )
        self.response = (
            f',"policy_client":{address},"policy_id":{policy_id},"policy_address":{native},'
            '"intent":'
        )
        data = (
            f',"policy_task_data":{{"policyId":{policy_id},"policyAddress":{native},"policy":"0x",'
            f'"policyCodeHash":{encode("0x" + client.code_hash.hex()).decode()},'
            '"policyData":[{"wasmArgs":'
        )
        self.allow = ',"evaluation_result":' + encode(_TRUE_WORD).decode() + data
        self.deny = ',"evaluation_result":' + encode(_FALSE_WORD).decode() + data
        self.config = (
            f',"policyDataAddress":{native},"expireBlock":0}}]}},"policy_config":'
            f'{{"policyParams":{encode(client.params_hex).decode()},'
            f'"expireAfter":{encode(client.expire_after).decode()}}},"initialization_timestamp":'
        )
        self.attestation = f',"policy_id":{policy_id},"policy_client":{address},"intent_hash":'


_PARTS_MAX = 1024
_parts: dict[tuple[Any, ...], _Parts] = {}


def _parts_of(client: PolicyClient) -> _Parts:
    """Every value a fragment holds is in the key: a re-registration gets its own."""
    key = (
        client.address,
        client.policy_id,
        client.code_hash,
        client.params_hex,
        client.expire_after,
    )
    parts = _parts.get(key)
    if parts is None:
        if len(_parts) >= _PARTS_MAX:
            _parts.clear()
        parts = _parts[key] = _Parts(client)
    return parts


def _number(value: Any) -> str:
    """An int as ``encode`` writes it (a bool or anything else goes through ``encode``)."""
    return str(value) if type(value) is int else encode(value).decode()


def _strings(values: list[Any]) -> str:
    """A list of strings (the operators' reasons, checked by ``vote``) as ``encode`` writes it."""
    if all(type(v) is str for v in values):
        return "[" + ",".join(map(encode_basestring, values)) + "]"
    return encode(values).decode()


_SIGNATURE_KEYS = ("operator", "signature")


def _signatures(signatures: list[dict[str, Any]]) -> str:
    """``[{"operator": ..., "signature": ...}, ...]`` as ``encode`` writes it."""
    if all(
        tuple(s) == _SIGNATURE_KEYS and type(s["operator"]) is str and type(s["signature"]) is str
        for s in signatures
    ):
        return (
            "["
            + ",".join(
                '{"operator":'
                + encode_basestring(s["operator"])
                + ',"signature":'
                + encode_basestring(s["signature"])
                + "}"
                for s in signatures
            )
            + "]"
        )
    return encode(signatures).decode()


def _joined(result: dict[str, Any], task: TaskInput, wasm_json: bytes, intent: str) -> bytes:
    """``encode(result)`` for a quorum's answer: the client's fragments joined with the
    task's values, each read from ``result`` and written as ``encode`` writes it (strings
    through the same ``encode_basestring``; the policy data is hex, which needs no escape)."""
    parts = _parts_of(task.client)
    task_part, attestation = result["task"], result["attestation"]
    task_id = encode_basestring(result["task_id"])
    stamp = _number(result["timestamp"])
    expiry = _number(result["expiration"])
    signature = encode_basestring(task_part["intentSignature"])
    wasm_args = encode_basestring(task_part["wasmArgs"])
    return "".join(
        (
            '{"task_id":',
            task_id,
            ',"status":"success","error":null,"timestamp":',
            stamp,
            ',"task":{"taskId":',
            task_id,
            ',"requestId":',
            encode_basestring(task_part["requestId"]),
            parts.task,
            _number(task_part["quorumThresholdPercentage"]),
            ',"intent":',
            intent,
            ',"intentSignature":',
            signature,
            ',"wasmArgs":',
            wasm_args,
            ',"quorumNumbers":"0x00","initializationTimestamp":',
            stamp,
            '},"task_response":{"task_id":',
            task_id,
            parts.response,
            intent,
            ',"intent_signature":',
            signature,
            parts.allow if attestation["decision"] == "allow" else parts.deny,
            wasm_args,
            ',"data":"0x',
            wasm_json.hex(),
            '"',
            parts.config,
            stamp,
            f'}},"reference_block":{REFERENCE_BLOCK},"expiration":',
            expiry,
            ',"operator_errors":',
            encode(result["operator_errors"]).decode() if result["operator_errors"] else "[]",
            ',"attestation":{"scheme":"ecdsa","decision":',
            encode_basestring(attestation["decision"]),
            ',"task_id":',
            task_id,
            parts.attestation,
            encode_basestring(attestation["intent_hash"]),
            ',"expires_at":',
            _number(attestation["expires_at"]),
            ',"tier":',
            _number(attestation["tier"]),
            ',"signatures":',
            _signatures(attestation["signatures"]),
            ',"reasons":',
            _strings(attestation["reasons"]),
            "}}",
        )
    ).encode()


def compact_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """``result`` without what an agentguard client never reads: Newton's echo of the task,
    the intent and the policy's configuration. Kept: the task's id, status and failure, the
    ``attestation`` (what the client verifies), ``evaluation_result`` (checked against the
    attestation's decision) and the policy data (for the client's audit log), each the same
    value the whole answer holds, so a client reads both forms alike (a retry whose answer is
    rebuilt from the durable record may get the whole form). About 2 KiB instead of 5."""
    out = {key: result[key] for key in _COMPACT_KEYS if key in result}
    response = result.get("task_response")
    if isinstance(response, Mapping):
        data = response.get("policy_task_data")
        entries = data.get("policyData") if isinstance(data, Mapping) else None
        out["task_response"] = {
            "evaluation_result": response.get("evaluation_result"),
            "policy_task_data": {
                "policyData": [
                    {"data": entry.get("data")}
                    for entry in entries or ()
                    if isinstance(entry, Mapping)
                ]
            },
        }
    out["attestation"] = result.get("attestation")
    return out
