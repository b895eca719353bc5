"""Operator requests whose task id derives from their parts, as the gateway derives it."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from agentguard._exceptions import AgentGuardError
from agentguard._intent import TransactionIntent
from agentguard._task_id import canonical_x402, task_id


def bind(body: dict[str, Any], request_id: str | None = None) -> dict[str, Any]:
    """``body`` (changed in place and returned) with a ``request_id`` (``request_id``, the one
    it has, or a fresh one) and the ``task_id`` the operators derive from it, its policy
    client, intent and ``wasm.x402``."""
    rid = request_id or body.get("request_id") or str(uuid.uuid4())
    body["request_id"] = rid
    try:
        intent = TransactionIntent.from_wire(body["intent"])
        wasm = body.get("wasm")
        x402 = wasm.get("x402") if isinstance(wasm, dict) else None
        derived = task_id(body["policy_client"], intent.intent_hash, x402, rid)
    except (AgentGuardError, KeyError, TypeError, ValueError):  # a test of a malformed body
        derived = os.urandom(32)
    body["task_id"] = "0x" + derived.hex()
    return body


def asked_id(request: dict[str, Any]) -> bytes:
    """The task id a reference network must give the ``newt_createTask`` JSON-RPC ``request``
    (what the client checks): from its policy client, intent, wasm_args' x402 and id."""
    params = request["params"]
    intent = TransactionIntent.from_wire(params["intent"])
    raw = (params.get("wasm_args") or "0x").removeprefix("0x")
    x402 = json.loads(bytes.fromhex(raw)).get("x402") if raw else None
    details = None if x402 is None else canonical_x402(x402, intent)
    return task_id(params["policy_client"], intent.intent_hash, details, request["id"])
