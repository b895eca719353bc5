"""Red team: an API key holder sending JSON the gateway's handlers cannot hash or re-encode.

Before the fix the gateway parsed requests with a lenient ``json.loads``: ``NaN``, ``Infinity``
and lone-surrogate escapes got through and failed later (hashing the request for the
idempotency cache, writing an outcome to SQLite) as an internal error (-32603, logged as a
gateway bug), and a key sent twice silently meant its last value. The same JSON reaches the
operators, which parse with the same function.
"""

from __future__ import annotations

import json
import socket
import uuid
from typing import Any

import httpx
import pytest

from agentguard.network._rpc import BODY_TIMEOUT
from agentguard.network.launcher import ReferenceNetwork

from .conftest import NETCHECK, RPC, fresh_agent, fresh_client, params, transfer


def post(network: ReferenceNetwork, body: str | bytes, url: str | None = None) -> dict[str, Any]:
    response = httpx.post(
        url or network.rpc_url,
        content=body,
        headers={"authorization": f"Bearer {network.api_key}", "content-type": "application/json"},
    )
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


def create_body(client: str, **extra: str) -> str:
    request = {"policy_client": client, "intent": transfer(fresh_agent()).wire(), "timeout": 5}
    fields = json.dumps(request)[:-1] + "".join(f', "{k}": {v}' for k, v in extra.items()) + "}"
    return (
        f'{{"jsonrpc": "2.0", "id": "{uuid.uuid4()}", "method": "newt_createTask", '
        f'"params": {fields}}}'
    )


@pytest.mark.parametrize(
    ("extra", "mentions"),
    [
        ({"x": "NaN"}, "NaN is not a JSON number"),
        ({"timeout": "Infinity"}, "Infinity is not a JSON number"),
        ({"x": '"\\ud800"'}, "lone surrogate"),
        ({"policy_client": '"0x0000000000000000000000000000000000000001"'}, "key 'policy_client'"),
        ({"x": "1" * 100}, "a uint256 has at most 78"),
    ],
)
def test_the_gateway_refuses_json_it_cannot_hash_or_reencode(
    network: ReferenceNetwork, extra: dict[str, str], mentions: str
) -> None:
    client = fresh_client()
    network.register_policy_client(client, NETCHECK, params())
    error = post(network, create_body(client, **extra))["error"]
    assert error["code"] == -32700 and mentions in error["message"], error


def test_an_outcome_with_a_lone_surrogate_is_refused_clearly(network: ReferenceNetwork) -> None:
    client = fresh_client()
    network.register_policy_client(client, NETCHECK, params())
    result = RPC(network, network.api_key).create(client, transfer(fresh_agent()))
    body = (
        '{"jsonrpc": "2.0", "id": 1, "method": "agentguard_commitTask", "params": '
        f'{{"task_id": "{result["task_id"]}", "outcome": "\\udc00"}}}}'
    )
    error = post(network, body)["error"]
    assert error["code"] == -32700 and "lone surrogate" in error["message"], error


def test_wasm_args_with_a_key_twice_is_refused(network: ReferenceNetwork) -> None:
    """A policy must not read one ``x402`` while a client's log shows another."""
    client = fresh_client()
    network.register_policy_client(client, NETCHECK, params())
    twice = b'{"note": "a", "note": "b"}'
    body = create_body(client, wasm_args=json.dumps("0x" + twice.hex()))
    error = post(network, body)["error"]
    assert error["code"] == -32602 and "key 'note' twice" in error["message"], error


def test_an_operator_refuses_nan_from_its_gateway(network: ReferenceNetwork) -> None:
    op = network.operators[0]
    token = op.token_file.read_text().strip()
    body = '{"jsonrpc": "2.0", "id": 1, "method": "newt_evaluateAndSign", "params": {"x": NaN}}'
    response = httpx.post(op.url, content=body, headers={"authorization": f"Bearer {token}"}).json()
    assert response["error"]["code"] == -32700, response


def read_response(conn: socket.socket) -> bytes:
    """One whole HTTP response (head and Content-Length body), or what came before a close."""
    data = b""
    while b"\r\n\r\n" not in data and (chunk := conn.recv(4096)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[-1].split(b"\r\n")[0] or 0)
    while len(body) < length and (chunk := conn.recv(4096)):
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_dripped_body_is_cut_off_with_an_answer(network: ReferenceNetwork) -> None:
    """Before the fix an authenticated caller that announced a body and never sent it held a
    gateway (or operator) handler open forever; now it gets a JSON-RPC error after
    ``BODY_TIMEOUT`` and the connection is answered."""
    targets = [
        (network.gateway_port, network.api_key),
        (network.operators[0].port, network.operators[0].token_file.read_text().strip()),
    ]
    # both stalls at once: the two servers' clocks run together, one BODY_TIMEOUT in all
    conns = [socket.create_connection(("127.0.0.1", port)) for port, _ in targets]
    try:
        for conn, (_, secret) in zip(conns, targets, strict=True):
            conn.sendall(
                b"POST /rpc HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + secret.encode()
                + b"\r\nContent-Length: 100\r\n\r\n{"
            )
            conn.settimeout(BODY_TIMEOUT + 20)
        answers = [read_response(conn) for conn in conns]
    finally:
        for conn in conns:
            conn.close()
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert b'"code":-32600' in answer and b"did not arrive" in answer, answer
