"""A recorded result, stored compactly: what only this task has, plus a part its client shares.

The gateway's answer to an ``allow`` (Newton's shape) repeats the intent, the policy client and
the policy id several times, carries the policy data as hex of JSON and the policy's params as
hex; storing it whole cost ~6 KiB and most of a record's time. ``pack`` keeps the task's own
values (intent, signatures, reasons, policy data as text) and moves what every task of one
policy client and policy version shares (policy id and code hash, params, expiry, constants)
into a part stored once under its digest. ``unpack`` rebuilds the same dict.

``pack`` checks that the rebuild equals the result, keys in the same order (a retry answered
from the record gets the very bytes first answered), before it trusts the compact form; a
result of any other shape is stored whole, so a change of the answer's shape can cost space,
never correctness.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["Packed", "pack", "unpack"]

_COMPACT = "agentguard.compact/1"
_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_PARTS_MAX = 1024
_parts: dict[tuple[Any, ...], tuple[str, str]] = {}


class Packed:
    """``text`` for the task's row; ``shared`` (digest, body) for the shared part, or None."""

    __slots__ = ("shared", "text")

    def __init__(self, text: str, shared: tuple[str, str] | None) -> None:
        self.text = text
        self.shared = shared


def pack(task_id: str, result: Mapping[str, Any]) -> Packed:
    """The stored form of the result recorded for ``task_id``."""
    try:
        own, shared = _split(result)
        built = _build(task_id, own, shared)
        if built == result and _same_order(built, result):
            part = _part(shared)
            own["k"] = part[0]
            return Packed(_DUMPS(own), part)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        pass
    return Packed(_DUMPS(result), None)


def _same_order(built: dict[str, Any], result: Mapping[str, Any]) -> bool:
    """Whether the (equal) dicts ``_build`` makes list their keys in the answer's order: the
    rebuilt answer must encode to the very bytes that were answered. (What it copies as is,
    the intent and the signatures, keeps its order: the same objects, then JSON, which keeps
    it.)"""
    response, theirs = built["task_response"], result["task_response"]
    data, their_data = response["policy_task_data"], theirs["policy_task_data"]
    pairs = (
        (built, result),
        (built["task"], result["task"]),
        (built["attestation"], result["attestation"]),
        (response, theirs),
        (data, their_data),
        (data["policyData"][0], their_data["policyData"][0]),
        (response["policy_config"], theirs["policy_config"]),
    )
    return all(list(mine) == list(other) for mine, other in pairs)


def _part(shared: dict[str, Any]) -> tuple[str, str]:
    """(digest, body) of a shared part; remembered, as one client's tasks all share one."""
    memo = tuple(tuple(v) if isinstance(v, list) else v for v in shared.values())
    found = _parts.get(memo)
    if found is None:
        if len(_parts) >= _PARTS_MAX:
            _parts.clear()
        body = _DUMPS(shared)
        found = _parts[memo] = (hashlib.sha256(body.encode()).hexdigest()[:32], body)
    return found


def unpack(task_id: str, text: str, shared: str | None) -> dict[str, Any]:
    """The result ``pack`` was given; ``shared`` is the body stored under the row's digest."""
    stored = json.loads(text)
    if stored.get("v") != _COMPACT:
        return dict(stored)  # stored whole (any shape, or written before compaction)
    if shared is None:
        raise ValueError(f"the shared part of task {task_id}'s record is missing")
    return _build(task_id, stored, json.loads(shared))


def _split(result: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    task, response, att = result["task"], result["task_response"], result["attestation"]
    data = response["policy_task_data"]
    config = response["policy_config"]
    wasm = data["policyData"][0]["data"]
    own = {
        "v": _COMPACT,
        "t": result["timestamp"],
        "q": task["quorumThresholdPercentage"],
        "i": task["intent"],
        "s": task["intentSignature"],
        "a": task["wasmArgs"],
        "w": bytes.fromhex(wasm.removeprefix("0x")).decode(),
        "x": result["expiration"],
        "e": result["operator_errors"],
        "d": att["decision"],
        "h": att["intent_hash"],
        "g": att["signatures"],
        "r": att["reasons"],
    }
    if "tier" in att:  # the signed trust tier (records from before tiers have none)
        own["y"] = att["tier"]
    if "requestId" in task:  # what the task id derives from (records from before have none)
        own["rq"] = task["requestId"]
    shared = {
        "c": att["policy_client"],
        "p": att["policy_id"],
        "n": response["policy_address"],
        "o": response["evaluation_result"],
        "m": data["policyCodeHash"],
        "pp": config["policyParams"],
        "ea": config["expireAfter"],
        "b": result["reference_block"],
    }
    return own, shared


def _build(task_id: str, own: Mapping[str, Any], shared: Mapping[str, Any]) -> dict[str, Any]:
    now, intent, signature, wasm_args = own["t"], own["i"], own["s"], own["a"]
    client, policy_id, native, block = shared["c"], shared["p"], shared["n"], shared["b"]
    attestation = {
        "scheme": "ecdsa",
        "decision": own["d"],
        "task_id": task_id,
        "policy_id": policy_id,
        "policy_client": client,
        "intent_hash": own["h"],
        "expires_at": own["x"],
    }
    if "y" in own:  # in the answer's own key order: a retry gets the same bytes
        attestation["tier"] = own["y"]
    attestation["signatures"] = own["g"]
    attestation["reasons"] = own["r"]
    task: dict[str, Any] = {"taskId": task_id}
    if "rq" in own:
        task["requestId"] = own["rq"]
    task.update(
        policyClient=client,
        taskCreatedBlock=block,
        quorumThresholdPercentage=own["q"],
        intent=intent,
        intentSignature=signature,
        wasmArgs=wasm_args,
        quorumNumbers="0x00",
        initializationTimestamp=now,
    )
    return {
        "task_id": task_id,
        "status": "success",
        "error": None,
        "timestamp": now,
        "task": task,
        "task_response": {
            "task_id": task_id,
            "policy_client": client,
            "policy_id": policy_id,
            "policy_address": native,
            "intent": intent,
            "intent_signature": signature,
            "evaluation_result": shared["o"],
            "policy_task_data": {
                "policyId": policy_id,
                "policyAddress": native,
                "policy": "0x",
                "policyCodeHash": shared["m"],
                "policyData": [
                    {
                        "wasmArgs": wasm_args,
                        "data": "0x" + own["w"].encode().hex(),
                        "policyDataAddress": native,
                        "expireBlock": 0,
                    }
                ],
            },
            "policy_config": {"policyParams": shared["pp"], "expireAfter": shared["ea"]},
            "initialization_timestamp": now,
        },
        "reference_block": block,
        "expiration": own["x"],
        "operator_errors": own["e"],
        "attestation": attestation,
    }
