"""The reference network accepts requests shaped as Newton's own SDK sends them and answers in
Newton's result shape (newt-foundation/newton-sdk ``src/modules/avs/index.ts``,
``src/utils/json-rpc.ts``, ``src/types/task.ts``; ``site/developers/reference/rpc-api.mdx``).

Before: a request without ``id`` or with a non-UUID string id was ``-32600``, a null
``quorum_threshold_percentage`` or ``intent_signature`` was ``-32602``, and the answer had no
``taskCreatedBlock``/``reference_block`` and a string ``error_code``.
"""

from __future__ import annotations

from typing import Any

import pytest

from agentguard import Attestation, ConfigurationError, Guard
from agentguard.network.gateway._results import COMPACT_PARAM
from agentguard.network.launcher import ReferenceNetwork

from .conftest import POLICY_IDS, RPC, fresh_agent, transfer


def sdk_request(client: str, agent: str) -> dict[str, Any]:
    """``newt_createTask`` params exactly as the SDK's ``submitEvaluationRequest`` builds them
    when the caller leaves the optional fields out."""
    return {
        "policy_client": client,
        "intent": transfer(agent).wire(),
        "intent_signature": None,
        "quorum_number": None,
        "quorum_threshold_percentage": None,
        "wasm_args": None,
        "timeout": 5,
        "direct_broadcast": True,
    }


def post(rpc: RPC, body: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = rpc.http.post(rpc.url, json=body).json()
    return answer


def test_a_request_without_an_id_as_the_sdk_sends_it_is_a_task(rpc: RPC, client: str) -> None:
    body = {
        "jsonrpc": "2.0",
        "method": "newt_createTask",
        "params": sdk_request(client, fresh_agent()),
    }
    answer = post(rpc, body)
    assert "error" not in answer, answer
    assert answer["id"] is None
    result = answer["result"]
    assert result["status"] == "success"
    attestation = Attestation.from_json(result["attestation"])
    assert attestation.decision == "allow" and len(attestation.signatures) >= 2


def test_sdk_shaped_params_with_a_non_uuid_id_and_stripped_prefixes(rpc: RPC, client: str) -> None:
    params = {**sdk_request(client, fresh_agent()), "quorum_number": "00", "wasm_args": "7b7d"}
    answer = post(
        rpc,
        {
            "jsonrpc": "2.0",
            "id": "task-1-" + fresh_agent(),
            "method": "newt_createTask",
            "params": params,
        },
    )
    assert "error" not in answer, answer
    result = answer["result"]
    task = result["task"]
    # Newton's Task is camelCase, with its block fields; the reference network has no blocks
    assert task["taskCreatedBlock"] == 0 and result["reference_block"] == 0
    assert task["intentSignature"] == "0x"
    # ECDSA quorum: no BLS aggregation_response
    assert "aggregation_response" not in result
    data = result["task_response"]["policy_task_data"]
    assert set(data) >= {"policyId", "policyAddress", "policy", "policyData"}


def test_a_retry_with_the_same_string_id_is_the_same_task(rpc: RPC, client: str) -> None:
    params = sdk_request(client, fresh_agent())
    body = {"jsonrpc": "2.0", "id": "retry-me", "method": "newt_createTask", "params": params}
    first, second = post(rpc, body)["result"], post(rpc, body)["result"]
    assert first["task_id"] == second["task_id"]


def test_a_real_intent_signature_is_accepted_and_echoed(rpc: RPC, client: str) -> None:
    signature = "0x" + "11" * 64 + "1b"
    params = {**sdk_request(client, fresh_agent()), "intent_signature": signature[2:]}
    result = rpc.call("newt_createTask", params)
    assert result["task"]["intentSignature"] == signature
    assert result["task_response"]["intent_signature"] == signature


def test_a_short_intent_signature_is_refused(rpc: RPC, client: str) -> None:
    params = {**sdk_request(client, fresh_agent()), "intent_signature": "0xabcd"}
    error = rpc.raw("newt_createTask", params).json()["error"]
    assert error["code"] == -32602 and "65-byte" in error["message"]


def test_network_info_says_ecdsa_and_dedupes_and_lists_no_operators(rpc: RPC) -> None:
    info = rpc.call("agentguard_networkInfo", {})
    assert info["scheme"] == "ecdsa" and info["dedupes"] is True
    assert info["compact_answers"] is True
    assert "operators" not in info


def test_a_compact_request_gets_the_compact_answer_for_each_try(rpc: RPC, client: str) -> None:
    params = {**sdk_request(client, fresh_agent()), COMPACT_PARAM: True}
    body = {"jsonrpc": "2.0", "id": "compact-try", "method": "newt_createTask", "params": params}
    first = post(rpc, body)["result"]
    assert "task" not in first and set(first["task_response"]) == {
        "evaluation_result",
        "policy_task_data",
    }
    assert Attestation.from_json(first["attestation"]).decision == "allow"
    again = post(rpc, body)["result"]  # a retry: the same task (rebuilt from its record)
    assert again["attestation"] == first["attestation"]
    assert (
        again["task_response"]["evaluation_result"] == first["task_response"]["evaluation_result"]
    )


def test_the_same_id_asking_for_the_other_form_is_another_request(rpc: RPC, client: str) -> None:
    """Forms are not mixed under one id: the flag is part of the request a retry must repeat
    (the client builds it once per call), so flipping it is refused, never answered."""
    params = sdk_request(client, fresh_agent())
    compact = {"jsonrpc": "2.0", "id": "one-form", "method": "newt_createTask"}
    first = post(rpc, {**compact, "params": {**params, COMPACT_PARAM: True}})["result"]
    assert "task" not in first
    error = post(rpc, {**compact, "params": params})["error"]
    assert error["code"] == -32602 and "different request" in error["message"]


def test_simulation_in_newtons_shape_denies_with_reasons(rpc: RPC, client: str) -> None:
    from .conftest import simulation

    big = transfer(fresh_agent(), amount=10**30)
    sim = rpc.call("newt_simulateTask", simulation(big.wire(), POLICY_IDS[client]))
    assert sim["success"] is True and sim["result"]["allow"] is False
    assert sim["result"]["reasons"] and isinstance(sim["result"]["reason"], str)


def test_connect_without_operators_to_a_reference_network_is_refused(
    network: ReferenceNetwork, client: str
) -> None:
    """The operator set is never taken from the gateway: it must be configured."""
    with pytest.raises(ConfigurationError, match="pass operators"):
        Guard.connect(
            network.url,
            policy_client=client,
            policy_id=POLICY_IDS[client],
            api_key=network.api_key,
            web3=object(),  # type: ignore[arg-type]
        )


def test_connect_with_operators_learns_that_the_reference_network_dedupes(
    network: ReferenceNetwork, client: str
) -> None:
    with Guard.connect(
        network.url,
        policy_client=client,
        operators=network.operator_addresses,
        policy_id=POLICY_IDS[client],
        api_key=network.api_key,
    ) as guard:
        assert guard.authorizer._cfg.dedupe is True
        assert guard.authorizer._cfg.compact is True
        assert guard.authorize(transfer(fresh_agent())).assurance == "quorum-ecdsa"
