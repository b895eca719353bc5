"""Whatever a client sends, the gateway answers JSON-RPC errors with Newton's codes, never 500."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from agentguard.network.launcher import ReferenceNetwork

from .conftest import (
    NETCHECK,
    POLICY_IDS,
    RPC,
    TOKEN,
    UNIT,
    fresh_agent,
    fresh_client,
    params,
    simulation,
    transfer,
)


def post(network: ReferenceNetwork, content: bytes, key: str | None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return httpx.post(network.rpc_url, content=content, headers=headers, timeout=30.0)


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "missing"),
        ({"authorization": "Bearer agk_wrong"}, "not valid"),
        ({"authorization": "Basic x"}, "missing"),
    ],
)
def test_bad_or_missing_api_key_is_401(
    network: ReferenceNetwork, headers: dict[str, str], why: str
) -> None:
    response = httpx.post(
        network.rpc_url,
        json={"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": "newt_createTask", "params": {}},
        headers=headers,
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == -32002
    assert why in response.json()["error"]["message"]
    assert network.api_key not in response.text and network.admin_key not in response.text


def test_admin_methods_need_the_admin_key(network: ReferenceNetwork, rpc: RPC) -> None:
    response = rpc.raw(
        "agentguard_registerPolicyClient",
        {"policy_client": fresh_client(), "policy": NETCHECK.name, "params": params()},
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == -32002


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", -32700),
        (b"{not json", -32700),
        (b"\xff\xfe\x00", -32700),
        (b"[]", -32600),
        (b"[1, 2]", -32600),
        (b'"just a string"', -32600),
        (b'{"id": "a", "method": "newt_createTask"}', -32600),
        (b'{"jsonrpc": "2.0", "id": "a", "method": 7}', -32600),
        (b'{"jsonrpc": "2.0", "id": "a", "method": "newt_nope", "params": {}}', -32601),
        (b'{"jsonrpc": "2.0", "id": "a", "method": "newt_createTask", "params": 5}', -32602),
        (b'{"jsonrpc": "2.0", "id": 7, "method": "newt_createTask", "params": {}}', -32600),
        # a non-UUID string id and no id at all are how Newton's own SDK sends; the empty
        # params are what is wrong with these
        (
            b'{"jsonrpc": "2.0", "id": "not-a-uuid", "method": "newt_createTask", "params": {}}',
            -32602,
        ),
        (b'{"jsonrpc": "2.0", "method": "newt_createTask", "params": {}}', -32602),
    ],
)
def test_garbage_bodies_get_jsonrpc_errors(
    network: ReferenceNetwork, body: bytes, code: int
) -> None:
    response = post(network, body, network.api_key)
    assert response.status_code == 200
    assert response.json()["error"]["code"] == code


def _task(client: str, **override: Any) -> dict[str, Any]:
    request: dict[str, Any] = {"policy_client": client, "intent": transfer(fresh_agent()).wire()}
    request.update(override)
    return {k: v for k, v in request.items() if v is not None}


BAD_TASKS: list[tuple[dict[str, Any], str]] = [
    ({"policy_client": None}, "policy_client"),
    ({"policy_client": "0x1234"}, "policy_client"),
    ({"policy_client": "0x" + "99" * 20}, "not registered"),
    ({"intent": None}, "intent"),
    ({"intent": "0xdeadbeef"}, "intent"),
    ({"intent": {"from": "0x12", "to": TOKEN, "chain_id": "0x2105"}}, "intent"),
    ({"intent": {**transfer(fresh_agent()).wire(), "data": "0xa9059cbb00"}}, "intent"),
    ({"intent": {**transfer(fresh_agent()).wire(), "chain_id": "0x0"}}, "intent"),
    ({"intent": {**transfer(fresh_agent()).wire(), "value": "0x" + "f" * 80}}, "intent"),
    ({"intent": {**transfer(fresh_agent()).wire(), "function_signature": "0xzz"}}, "intent"),
    ({"intent": {**transfer(fresh_agent()).wire(), "chain_id": "0x7"}}, "chain_id 7"),
    ({"wasm_args": "0xzz"}, "wasm_args"),
    ({"wasm_args": "0x" + b"not json".hex()}, "wasm_args"),
    ({"wasm_args": "0x" + b"[1]".hex()}, "JSON object"),
    ({"wasm_args": "0x" + b'{"x402": 5}'.hex()}, "x402"),
    ({"wasm_args": 12}, "wasm_args"),
    ({"quorum_threshold_percentage": 0}, "quorum_threshold_percentage"),
    ({"quorum_threshold_percentage": 101}, "quorum_threshold_percentage"),
    ({"quorum_threshold_percentage": "66"}, "quorum_threshold_percentage"),
    ({"quorum_number": "0x01"}, "quorum_number"),
    ({"timeout": -1}, "timeout"),
    ({"timeout": "soon"}, "timeout"),
    ({"intent_signature": "nothex"}, "intent_signature"),
]


@pytest.mark.parametrize(("override", "mentions"), BAD_TASKS)
def test_bad_task_params_are_invalid_params(
    rpc: RPC, client: str, override: dict[str, Any], mentions: str
) -> None:
    response = rpc.raw("newt_createTask", _task(client, **override))
    assert response.status_code == 200
    error = response.json()["error"]
    assert error["code"] == -32602, error
    assert mentions in error["message"]


@pytest.mark.parametrize(
    ("override", "mentions"),
    [(o, m) for o, m in BAD_TASKS if set(o) <= {"intent", "wasm_args"} and "policy" not in m],
)
def test_bad_simulation_params_are_invalid_params(
    rpc: RPC, client: str, override: dict[str, Any], mentions: str
) -> None:
    """``newt_simulateTask`` in Newton's shape: the same intent and wasm-args checks."""
    request = _task(client, **override)
    wasm_args = request.get("wasm_args")
    body = simulation(request.get("intent"), POLICY_IDS[client], wasm_args)
    error = rpc.raw("newt_simulateTask", body).json()["error"]
    assert error["code"] == -32602, error
    assert mentions in error["message"]


@pytest.mark.parametrize(
    ("policy_task_data", "mentions"),
    [
        (None, "policy_task_data"),
        ({"policyId": "0x12"}, "policyId"),
        ({"policyId": "0x" + "ee" * 32}, "no policy client"),
        ({"policyId": "KNOWN", "policyData": [1]}, "policyData[0]"),
        ({"policyId": "KNOWN", "policyData": [{}, {}]}, "at most one"),
    ],
)
def test_bad_policy_task_data_is_invalid_params(
    rpc: RPC, client: str, policy_task_data: Any, mentions: str
) -> None:
    if isinstance(policy_task_data, dict) and policy_task_data["policyId"] == "KNOWN":
        policy_task_data = {**policy_task_data, "policyId": POLICY_IDS[client]}
    body = {"intent": transfer(fresh_agent()).wire(), "policy_task_data": policy_task_data}
    error = rpc.raw("newt_simulateTask", body).json()["error"]
    assert error["code"] == -32602, error
    assert mentions in error["message"]


def test_task_ids_that_do_not_exist_cannot_be_released_or_committed(rpc: RPC) -> None:
    for method in ("agentguard_releaseTask", "agentguard_commitTask"):
        for task_id in ("0x" + "00" * 32, "nope", None):
            error = rpc.raw(method, {"task_id": task_id}).json()["error"]
            assert error["code"] == -32602


def _register(network: ReferenceNetwork, request: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = (
        RPC(network, network.admin_key).raw("agentguard_registerPolicyClient", request).json()
    )
    return body


@pytest.mark.parametrize(
    ("change", "mentions"),
    [
        ({"max_per_tx": 1000}, "params.max_per_tx: 1000 is not of type 'string'"),
        ({"max_per_tx": "-5"}, "params.max_per_tx"),
        ({"max_per_tx": "1.5"}, "params.max_per_tx"),
        (
            {"window_caps": [{"asset": TOKEN, "window_seconds": 0, "max_amount": "1"}]},
            "params.window_caps[0].window_seconds",
        ),
        ({"allowed_recipients": ["bob"]}, "params.allowed_recipients[0]"),
        ({"surprise": True}, "Additional properties"),
    ],
)
def test_registration_rejects_params_that_break_the_schema(
    network: ReferenceNetwork, change: dict[str, Any], mentions: str
) -> None:
    body = _register(
        network, network.sign_registration(fresh_client(), NETCHECK, {**params(), **change})
    )
    assert body["error"]["code"] == -32602
    assert mentions in body["error"]["message"]


def _material() -> dict[str, Any]:
    from agentguard.network.state import policy_material

    return policy_material(NETCHECK)


@pytest.mark.parametrize(
    ("policy_change", "registration_change", "mentions"),
    [
        ({"policy": "no_such_policy"}, {}, "no bundled policy"),
        ({"policy": 5}, {}, "policy must be"),
        ({"policy": {"entrypoint": "x.allow", "modules": {}}}, {}, "modules"),
        ({"policy": "agent_spend"}, {}, "not to the registered policy_code_hash"),
        ({}, {"expire_after": 0}, "expire_after"),
        ({}, {"expire_after": 10**9}, "expire_after"),
        ({}, {"policy_client": "bob"}, "policy_client"),
        ({}, {"params": []}, "params must be a JSON object"),
        ({}, {"chain_id": "base"}, "chain_id"),
        ({}, {"version": -1}, "version"),
        ({}, {"signature": "0x" + "11" * 65}, "signature"),
        ({}, {"surprise": 1}, "unknown fields"),
        ({}, {"policy_id": "0x" + "00" * 32}, "policy_id does not match"),
        # changed after signing: the signature no longer recovers to the owner
        ({}, {"params": {**params(), "max_per_tx": "1"}}, "not by the owner"),
        ({}, {"expire_after": 301}, "not by the owner"),
        ({}, {"chain_id": 1}, "not by the owner"),
    ],
)
def test_registration_rejects_bad_requests(
    network: ReferenceNetwork,
    policy_change: dict[str, Any],
    registration_change: dict[str, Any],
    mentions: str,
) -> None:
    request = network.sign_registration(fresh_client(), NETCHECK, params())
    request = {
        **request,
        "registration": {**request["registration"], **registration_change},
        **policy_change,
    }
    body = _register(network, request)
    assert body["error"]["code"] == -32602, body
    assert mentions in body["error"]["message"]


def test_an_unsigned_registration_is_refused(network: ReferenceNetwork) -> None:
    """Before the fix the gateway took ``{policy_client, policy, params}`` from anyone holding
    the admin key and the operators evaluated whatever it sent."""
    body = _register(
        network, {"policy_client": fresh_client(), "policy": _material(), "params": params()}
    )
    assert body["error"]["code"] == -32602
    assert "signed by its owner" in body["error"]["message"]


def test_only_the_owner_on_record_re_registers_and_only_forward(network: ReferenceNetwork) -> None:
    client = fresh_client()
    network.register_policy_client(client, NETCHECK, params(), version=10)
    stranger = "0x" + "5a" * 32
    taken = _register(
        network,
        network.sign_registration(client, NETCHECK, params(max_per_tx=1), owner_key=stranger),
    )
    assert "a registration signed by" in taken["error"]["message"]
    replay = _register(network, network.sign_registration(client, NETCHECK, params(), version=9))
    assert "not newer" in replay["error"]["message"]
    network.register_policy_client(client, NETCHECK, params(max_per_tx=UNIT), version=11)


def test_a_policy_that_fails_to_compile_is_a_policy_evaluation_error(
    network: ReferenceNetwork, rpc: RPC
) -> None:
    client = fresh_client()
    broken = {
        "name": "broken",
        "entrypoint": "broken.allow",
        "modules": {"p.rego": "package broken\nallow if {"},
    }
    network.register_policy_client(client, _policy(broken), {})
    error = rpc.raw("newt_createTask", _task(client)).json()["error"]
    assert error["code"] == -32615
    assert "compile" in error["message"]


def _policy(material: dict[str, Any]) -> Any:
    from agentguard.network.state import policy_from_material

    return policy_from_material(material)


def _hex_json(value: Any) -> str:
    import json

    return "0x" + json.dumps(value).encode().hex()


HOSTILE_TASKS: list[dict[str, Any]] = [
    {"intent": {"from": 5}},
    {"intent": None},
    {"wasm_args": _hex_json({"x402": 5})},
    {"wasm_args": _hex_json({"x402": ["exact"]})},
    {"wasm_args": _hex_json({"x402": {"amount": 1.5, "scheme": "exact"}})},
    {"wasm_args": _hex_json({"x402": {"amount": "-1", "network": "eip155:8453"}})},
    {"wasm_args": _hex_json({"x402": {"amount": "9" * 100}})},
    {"wasm_args": _hex_json({"x402": {"network": "eip155:" + "9" * 30}})},
    {"wasm_args": _hex_json([1, 2])},
    {"wasm_args": "0x" + "ff" * 8},
    {"wasm_args": 7},
    {"wasm_args": "0x" + ("[" * 50_000 + "]" * 50_000).encode().hex()},
    {"timeout": "soon"},
    {"quorum_threshold_percentage": 1.5},
    {"policy_client": ["0x" + "00" * 20]},
]


@pytest.mark.parametrize("override", HOSTILE_TASKS)
def test_hostile_task_requests_are_json_rpc_errors(
    rpc: RPC, client: str, override: dict[str, Any]
) -> None:
    response = rpc.raw("newt_createTask", {**_task(client), **override})
    assert response.status_code in (200, 401, 403)
    error = response.json()["error"]
    assert error["code"] != -32603, error  # never an internal error


def test_deeply_nested_json_is_refused_clearly(network: ReferenceNetwork) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    body = '{"jsonrpc":"2.0","id":"1","method":"newt_createTask","params":{"x":' + deep + "}}"
    response = httpx.post(
        network.rpc_url,
        content=body,
        headers={"authorization": f"Bearer {network.api_key}", "content-type": "application/json"},
    )
    assert response.status_code == 200
    assert "nested deeper" in response.json()["error"]["message"]
    nested = {"x": 1}
    for _ in range(100):
        nested = {"x": nested}
    error = _register(network, {"registration": nested, "policy": "agent_spend"})["error"]
    assert "nested deeper" in error["message"]


@pytest.mark.parametrize(
    "override",
    [
        {"registration": []},
        {"registration": {"policy_client": 5}},
        {"policy": ["x"]},
        {"policy_code_hash": 5},
        {"params": float("1e308")},
        {"chain_id": True},
        {"expires_at": 1.5},
        {"intent": "garbage"},
        {"wasm": {"x402": 5}},
        {"wasm": []},
    ],
)
def test_hostile_operator_requests_are_json_rpc_errors(
    network: ReferenceNetwork, override: dict[str, Any]
) -> None:
    op = network.operators[0]
    token = op.token_file.read_text().strip()
    body = {
        "task_id": "0x" + "42" * 32,
        "policy_client": fresh_client(),
        "chain_id": 8453,
        "intent": transfer(fresh_agent()).wire(),
        "policy_code_hash": "0x" + NETCHECK.code_hash.hex(),
        "params": params(),
        "expire_after": 300,
        "expires_at": 0,
        "wasm": {},
        **override,
    }
    envelope = {"jsonrpc": "2.0", "id": 1, "method": "newt_evaluateAndSign", "params": body}
    response = httpx.post(op.url, json=envelope, headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200
    error = response.json()["error"]
    assert error["code"] == -32602, error
