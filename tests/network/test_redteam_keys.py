"""Red team: one API key holder against another's policy client and tasks, on a real gateway
whose keys are scoped (``api_keys[].policy_clients``): key A may use client X only, key B
client Y only. Every cross-key use is refused, and key B reusing key A's JSON-RPC ids neither
reads nor poisons A's idempotency cache."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agentguard.network._keys import api_key_digest, new_api_key
from agentguard.network.launcher import ReferenceNetwork

from .conftest import NETCHECK, RPC, decision, fresh_agent, fresh_client, params, transfer

X, Y = fresh_client(), fresh_client()
KEY_A, KEY_B = new_api_key(), new_api_key()


@pytest.fixture(scope="module")
def scoped() -> Iterator[ReferenceNetwork]:
    with ReferenceNetwork(operators=3, timeout=5.0, startup_timeout=180.0) as net:
        net.register_policy_client(X, NETCHECK, params())
        net.register_policy_client(Y, NETCHECK, params())
        net.kill_gateway()
        config = json.loads(net.config_file.read_text())
        config["api_keys"] += [
            {"sha256": api_key_digest(KEY_A), "policy_clients": [X], "admin": False},
            {"sha256": api_key_digest(KEY_B), "policy_clients": [Y], "admin": False},
        ]
        net.config_file.write_text(json.dumps(config))
        net.start_gateway()
        yield net


def error(rpc: RPC, method: str, body: dict[str, Any], rpc_id: str | None = None) -> Any:
    response: httpx.Response = rpc.raw(method, body, rpc_id)
    answer = response.json()
    assert "error" in answer, answer
    return response.status_code, answer["error"]


def test_a_key_cannot_use_or_settle_another_keys_client(scoped: ReferenceNetwork) -> None:
    a, b = RPC(scoped, KEY_A), RPC(scoped, KEY_B)
    intent = transfer(fresh_agent())
    task = a.create(X, intent)
    assert decision(task) == "allow"
    request = {"policy_client": X, "intent": intent.wire(), "timeout": 5}
    for method, body in [
        ("newt_createTask", request),
        (
            "newt_simulateTask",
            {
                "intent": intent.wire(),
                "policy_task_data": {"policyId": task["task_response"]["policy_id"]},
            },
        ),
        ("agentguard_releaseTask", {"task_id": task["task_id"]}),
        ("agentguard_commitTask", {"task_id": task["task_id"], "outcome": "0x"}),
        ("agentguard_approve", {"policy_client": Y, "intent_hash": "0x" + "11" * 32}),
        ("agentguard_reject", {"policy_client": X, "intent_hash": "0x" + "11" * 32}),
        ("agentguard_listApprovals", {}),
        ("agentguard_approvalStatus", {"policy_client": X, "intent_hash": "0x" + "11" * 32}),
    ]:
        status, refused = error(b, method, body)
        assert status == 403 and refused["code"] == -32002, (method, refused)
    # A's task is untouched: A can still release it
    assert a.call("agentguard_releaseTask", {"task_id": task["task_id"]})["status"] in (
        "releasing",
        "released",
    )


def test_a_reused_rpc_id_neither_leaks_nor_poisons_another_keys_answer(
    scoped: ReferenceNetwork,
) -> None:
    a, b = RPC(scoped, KEY_A), RPC(scoped, KEY_B)
    rpc_id = str(uuid.uuid4())
    intent = transfer(fresh_agent())
    first = a.create(X, intent, rpc_id=rpc_id)
    # B, with A's id and A's exact request: refused, nothing of A's comes back
    status, refused = error(
        b, "newt_createTask", {"policy_client": X, "intent": intent.wire(), "timeout": 5}, rpc_id
    )
    assert status == 403, refused
    # B, with A's id: its own client, its own task
    other = b.create(Y, transfer(fresh_agent(), 2), rpc_id=rpc_id)
    assert other["task_id"] != first["task_id"]
    # A's retry still gets A's first answer, and A cannot reuse the id for another intent
    assert a.create(X, intent, rpc_id=rpc_id)["attestation"] == first["attestation"]
    status, refused = error(
        a,
        "newt_createTask",
        {"policy_client": X, "intent": transfer(fresh_agent(), 3).wire(), "timeout": 5},
        rpc_id,
    )
    assert refused["code"] == -32602 and "already used" in refused["message"], refused
