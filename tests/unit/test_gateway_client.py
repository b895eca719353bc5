"""Error paths of the gateway client, driven through httpx.MockTransport.

The happy path and every fail-closed case against real gateway/operator processes live in
tests/integration; these pin the client's parsing and retry rules exactly. Hostile answers,
field by field and over a real loopback server, are in test_gateway_hostile.py and
test_gateway_loopback.py.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentguard import (
    AgentGuardError,
    AsyncNewtonGateway,
    GatewayAuthError,
    GatewayProtocolError,
    GatewayRPCError,
    GatewayUnavailable,
    NewtonGateway,
    PolicyEvaluationError,
    QuorumNotReached,
)
from agentguard._exceptions import DataProviderError, IncompatiblePolicyVersion

from .conftest import POLICY_CLIENT, bound

API_KEY = "sk-test-secret-api-key-1234567890"


def rpc_result(request: httpx.Request, result: Any) -> httpx.Response:
    body = json.loads(request.content)
    result = bound(result, body)  # for the task asked (``tests/unit/conftest.bound``)
    return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": result})


def task_result(attestation: Any) -> dict[str, Any]:
    data = attestation.to_json()
    return {
        "task_id": data["task_id"],
        "status": "success",
        "attestation": data,
        "task_response": {"evaluation_result": [0] * 31 + [1 if attestation.allowed else 0]},
    }


def gateway(handler, **kw) -> NewtonGateway:
    return NewtonGateway(
        "http://127.0.0.1:1",
        policy_client=POLICY_CLIENT,
        api_key=API_KEY,
        transport=httpx.MockTransport(handler),
        **kw,
    )


def test_request_is_newton_shaped(operators, intent):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return rpc_result(request, task_result(operators.attest(intent)))

    attestation = gateway(handler).authorize(intent)
    assert attestation.decision == "allow"
    request = seen[0]
    assert request.url.path == "/rpc"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    body = json.loads(request.content)
    assert body["jsonrpc"] == "2.0" and body["method"] == "newt_createTask"
    assert isinstance(body["id"], str) and len(body["id"]) == 36
    params = body["params"]
    assert params["policy_client"] == POLICY_CLIENT
    assert params["intent"] == intent.wire()
    # as Newton's SDK sends them: the gateway's default threshold, quorum "00" without 0x, no
    # intent signature (null, never the "0x" Newton refuses)
    assert params["quorum_threshold_percentage"] is None
    assert params["quorum_number"] == "00"
    assert params["intent_signature"] is None
    assert params["timeout"] == 5
    assert params["wasm_args"] == "0x"


def test_retries_transport_errors_and_5xx_with_the_same_id(operators, intent):
    ids: list[str] = []
    answers = iter(["connect", 502, 429, "ok"])

    def handler(request: httpx.Request) -> httpx.Response:
        ids.append(json.loads(request.content)["id"])
        answer = next(answers)
        if answer == "connect":
            raise httpx.ConnectError("refused")
        if answer == "ok":
            return rpc_result(request, task_result(operators.attest(intent)))
        return httpx.Response(answer)

    assert gateway(handler, dedupe=True).authorize(intent).decision == "allow"
    assert len(ids) == 4 and len(set(ids)) == 1


def test_gives_up_after_attempts(intent):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503)

    with pytest.raises(GatewayUnavailable, match="503"):
        gateway(handler, attempts=3, dedupe=True).authorize(intent)
    assert len(calls) == 3


def test_timeout_is_unavailable(intent):
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    with pytest.raises(GatewayUnavailable, match="ReadTimeout"):
        gateway(handler, attempts=2).authorize(intent)


def test_deny_is_returned_once_never_retried(operators, intent):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return rpc_result(
            request, task_result(operators.attest(intent, decision="deny", reasons=("no",)))
        )

    attestation = gateway(handler).authorize(intent)
    assert attestation.decision == "deny" and attestation.reasons == ("no",)
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (-32615, PolicyEvaluationError),
        (-32619, IncompatiblePolicyVersion),
        (-32620, DataProviderError),
        (-32002, GatewayAuthError),
        (-32602, GatewayRPCError),
    ],
)
def test_rpc_errors_are_typed_and_final(intent, code, cls):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        body = json.loads(request.content)
        return httpx.Response(
            200, json={"jsonrpc": "2.0", "id": body["id"], "error": {"code": code, "message": "m"}}
        )

    with pytest.raises(cls) as info:
        gateway(handler).authorize(intent)
    assert info.value.code == code
    assert len(calls) == 1


def test_401_is_an_auth_error_and_the_key_is_not_in_it(intent):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, text="unauthorized")

    with pytest.raises(GatewayAuthError) as info:
        gateway(handler).authorize(intent)
    assert API_KEY not in str(info.value)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>502</html>",
        b'{"jsonrpc": "2.0", "id": "x", "res',  # truncated
        b"[]",
        b'{"jsonrpc": "2.0", "id": "someone-else", "result": {}}',
        b'{"jsonrpc": "1.0"}',
    ],
)
def test_garbage_is_a_protocol_error(intent, body):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    with pytest.raises(GatewayProtocolError):
        gateway(handler).authorize(intent)


def test_quorum_failure_carries_operator_errors(intent):
    errors = [
        {
            "operator_address": "0x1",
            "error_code": "timeout",
            "message": "timed out",
            "retryable": True,
        }
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        return rpc_result(
            request,
            {"status": "failed", "error": "quorum_not_reached: 1 of 2", "operator_errors": errors},
        )

    with pytest.raises(QuorumNotReached) as info:
        gateway(handler).authorize(intent)
    assert info.value.operator_errors == errors


def test_contradictory_evaluation_result_is_refused(operators, intent):
    def handler(request: httpx.Request) -> httpx.Response:
        result = task_result(operators.attest(intent))
        result["task_response"]["evaluation_result"] = [0] * 32
        return rpc_result(request, result)

    with pytest.raises(GatewayProtocolError, match="contradicts"):
        gateway(handler).authorize(intent)


def test_newton_bls_result_is_parsed_for_its_binding_fields(intent):
    def handler(request: httpx.Request) -> httpx.Response:
        return rpc_result(
            request,
            {
                "task_id": "0x" + "ab" * 32,
                "status": "success",
                "expiration": 123456,
                "task_response": {
                    "task_id": list(b"\xab" * 32),
                    "policy_client": POLICY_CLIENT,
                    "policy_id": "0x" + "cd" * 32,
                    "intent": {**intent.wire(), "data": list(intent.data)},
                    "evaluation_result": [0] * 31 + [1],
                },
                "aggregation_response": {"signers_agg_sig_g1": {"g1_point": {}}},
            },
        )

    attestation = gateway(handler).authorize(intent)
    assert attestation.scheme == "newton-bls"
    assert attestation.intent_hash == intent.intent_hash
    assert attestation.decision == "allow"


def test_repr_never_shows_the_api_key():
    g = gateway(lambda r: httpx.Response(200))
    assert API_KEY not in repr(g)
    assert POLICY_CLIENT in repr(g)


async def test_async_client_has_the_same_behaviour(operators, intent):
    answers = iter([503, "ok"])

    def handler(request: httpx.Request) -> httpx.Response:
        answer = next(answers)
        if answer == "ok":
            return rpc_result(request, task_result(operators.attest(intent)))
        return httpx.Response(answer)

    async with AsyncNewtonGateway(
        "http://127.0.0.1:1",
        policy_client=POLICY_CLIENT,
        transport=httpx.MockTransport(handler),
        dedupe=True,
    ) as client:
        assert (await client.authorize(intent)).decision == "allow"


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    status=st.sampled_from([200, 200, 200, 400, 401, 404, 500]),
    body=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=30),
            lambda c: (
                st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=5)
            ),
            max_leaves=25,
        ).map(lambda v: json.dumps({"jsonrpc": "2.0", "result": v}).encode()),
    ),
)
def test_fuzz_any_answer_is_a_typed_error_or_a_parsed_attestation(intent, status, body):
    def handler(request: httpx.Request) -> httpx.Response:
        rid = json.loads(request.content)["id"]
        return httpx.Response(
            status,
            content=body.replace(b'"jsonrpc": "2.0"', f'"jsonrpc": "2.0", "id": "{rid}"'.encode()),
        )

    try:
        gateway(handler, attempts=1).authorize(intent)
    except AgentGuardError:
        pass
