"""Fuzz: what a gateway answers (the body on the wire, the JSON-RPC envelope, the task result).

The gateway is not trusted with anything but liveness. Whatever it sends, the client's
parsers must produce an ``Attestation`` (and the ``Verifier`` a ``VerifiedAttestation`` or a
``VerificationError``), a ``Simulation``, an ``ApprovalStatus``, or an ``AuthorizationError``;
an API key must never appear in what is raised.
"""

from __future__ import annotations

import gzip
import json
import time
import zlib
from typing import Any

import httpx
import pytest
from coincurve import PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from agentguard import AgentGuardError, Attestation, NewtonGateway, TransactionIntent, Verifier
from agentguard._attestation import attestation_digest, operator_address, sign_attestation
from agentguard._gateway import (
    _Body,
    _Call,
    _parse_approval_status,
    _parse_simulation,
    _parse_task,
    _rpc_error,
)

from .hostile import budget, json_text, mutated, outcome, wire_values

CLIENT = "0x000000000000000000000000000000000000C0DE"
KEYS = [PrivateKey(bytes([i + 1]) * 32) for i in range(3)]
OPERATORS = [operator_address(k) for k in KEYS]
API_KEY = "agk_fuzz_0123456789abcdef0123456789abcdef"
INTENT = TransactionIntent.erc20_transfer(
    sender="0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    token="0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
    recipient="0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
    amount=1_000_000,
    chain_id=8453,
)
EXPIRES = 4_000_000_000


def _reference_result(task_id: bytes = b"\x11" * 32) -> dict[str, Any]:
    policy_id = b"\x22" * 32
    digest = attestation_digest(
        chain_id=8453,
        policy_client=bytes.fromhex(CLIENT[2:]),
        task_id=task_id,
        policy_id=policy_id,
        intent_hash=INTENT.intent_hash,
        allow=True,
        expires_at=EXPIRES,
    )
    attestation = {
        "scheme": "ecdsa",
        "decision": "allow",
        "task_id": "0x" + task_id.hex(),
        "policy_id": "0x" + policy_id.hex(),
        "policy_client": CLIENT,
        "intent_hash": "0x" + INTENT.intent_hash.hex(),
        "expires_at": EXPIRES,
        "signatures": [
            {"operator": OPERATORS[i], "signature": "0x" + sign_attestation(KEYS[i], digest).hex()}
            for i in (0, 1)
        ],
        "reasons": ["ok"],
    }
    return {
        "task_id": "0x" + task_id.hex(),
        "status": "success",
        "error": None,
        "timestamp": 1_764_000_000,
        "expiration": EXPIRES,
        "task_response": {
            "task_id": "0x" + task_id.hex(),
            "policy_client": CLIENT,
            "policy_id": "0x" + policy_id.hex(),
            "intent": INTENT.wire(),
            "evaluation_result": [0] * 31 + [1],
        },
        "operator_errors": [
            {
                "operator_address": OPERATORS[2],
                "operator_id": "2",
                "error_code": "timeout",
                "message": "slow",
                "timestamp": 1,
                "retryable": True,
            }
        ],
        "attestation": attestation,
    }


def _newton_result() -> dict[str, Any]:
    """Newton's own shape: no ``attestation``, byte fields as number arrays, camelCase task."""
    result = _reference_result()
    del result["attestation"], result["operator_errors"]
    response = result["task_response"]
    response["task_id"] = list(b"\x11" * 32)
    response["intent"] = {**INTENT.wire(), "data": list(INTENT.data)}
    wire = INTENT.wire()
    result["task"] = {
        "taskId": "0x" + "11" * 32,
        "policyClient": CLIENT,
        "taskCreatedBlock": 100,
        "intent": {
            "from": wire["from"],
            "to": wire["to"],
            "value": wire["value"],
            "data": wire["data"],
            "chainId": wire["chain_id"],
            "functionSignature": wire["function_signature"],
        },
    }
    result["aggregation_response"] = {"signers_agg_sig_g1": {"g1_point": {"X": "1", "Y": "2"}}}
    return result


REFERENCE = _reference_result()
NEWTON = _newton_result()


def _verifier() -> Verifier:
    return Verifier(OPERATORS, policy_client=CLIENT, clock=lambda: EXPIRES - 100)


@budget(400)
@given(st.one_of(mutated(REFERENCE, max_edits=2), mutated(NEWTON, max_edits=2), wire_values))
def test_task_results(result: Any) -> None:
    attestation = outcome(_parse_task, result, CLIENT, secrets=[API_KEY])
    if isinstance(attestation, Attestation) and attestation.scheme == "ecdsa":
        outcome(_verifier().verify, attestation, INTENT)


def test_the_unmutated_results_parse_and_verify() -> None:
    """The fuzzed documents start valid, so the mutations test refusals, not a broken seed."""
    fresh = _reference_result(PrivateKey().secret)  # a task id verified once per process
    attestation = _parse_task(fresh, CLIENT)
    assert _verifier().verify(attestation, INTENT).attestation.decision == "allow"
    assert _parse_task(json.loads(json.dumps(NEWTON)), CLIENT).scheme == "newton-bls"


@budget(300)
@given(
    st.integers(100, 599),
    st.one_of(
        json_text({"jsonrpc": "2.0", "id": "ID", "result": REFERENCE}),
        json_text({"jsonrpc": "2.0", "id": "ID", "error": {"code": -32602, "message": "no"}}),
        mutated({"jsonrpc": "2.0", "id": "ID", "error": {"code": -32616, "data": [1]}}).map(
            lambda d: json.dumps(d).encode()
        ),
        st.binary(max_size=200),
    ),
)
def test_json_rpc_envelopes(status: int, raw: bytes) -> None:
    call = _Call("newt_createTask", {"api_key_echo": "no"}, 5.0)
    raw = raw.replace(b'"ID"', json.dumps(call.id).encode())
    result = outcome(call.parse, status, raw, secrets=[API_KEY])
    if not isinstance(result, Exception):
        outcome(_parse_task, result, CLIENT)


@budget(150)
@given(wire_values, st.integers(100, 599))
def test_json_rpc_error_objects(error: Any, status: int) -> None:
    made = outcome(_rpc_error, error, status, allowed=())
    assert isinstance(made, Exception) and str(made)


@budget(200)
@given(
    st.one_of(
        mutated({"decision": "allow", "reasons": ["ok"], "policy_id": "0x" + "22" * 32}),
        wire_values,
    ),
    st.one_of(
        mutated({"intent_hash": "0x" + "ab" * 32, "status": "pending", "expires_at": 5}),
        wire_values,
    ),
)
def test_simulation_and_approval_answers(simulation: Any, approval: Any) -> None:
    outcome(_parse_simulation, simulation, "0x" + "cd" * 32)
    outcome(_parse_approval_status, approval, "0x" + "ab" * 32)


_DOC = json.dumps({"jsonrpc": "2.0", "id": "x", "result": REFERENCE}).encode()
_BODIES = {
    "plain": _DOC,
    "gzip": gzip.compress(_DOC),
    "deflate": zlib.compress(_DOC),
    "bomb": gzip.compress(b"[" * (4 << 20)),  # 4 KiB that inflates to 4 MiB
    "junk": b"\x1f\x8b\x08\x00garbage",
    "gzip-then-junk": gzip.compress(_DOC) + b"tail",
    "cut": gzip.compress(_DOC)[:-9],
}


@budget(150)
@given(
    st.sampled_from(["identity", "gzip", "x-gzip", "deflate", "br", "GZIP ", "gzip, gzip", ""]),
    st.sampled_from(["plain", "gzip", "deflate", "bomb", "junk", "gzip-then-junk", "cut"]),
    st.lists(st.integers(1, 4096), min_size=1, max_size=8),
)
def test_encoded_bodies(label: str, body_kind: str, cuts: list[int]) -> None:
    """``_Body`` with every label and content pairing, fed in arbitrary chunk sizes."""
    body = _BODIES[body_kind]
    call = _Call("newt_createTask", {}, 5.0)

    def read() -> bytes:
        reader = _Body(call, {"content-encoding": label}, time.monotonic() + 60, preread=False)
        at = 0
        for size in cuts * (len(body) // max(1, sum(cuts)) + 1):
            if at >= len(body):
                break
            reader.feed(body[at : at + size])
            at += size
        return reader.finish()

    outcome(read)


@pytest.mark.parametrize("code", [-32002, -32602, -32000])
def test_the_api_key_never_reaches_an_exception(code: int) -> None:
    """A gateway (or whatever answers at a mistyped URL) may quote the request's credentials
    back, as many APIs do ("invalid bearer token …"). Its words end up in the exception, which
    applications log and LangChain tools hand to the model. Expected: the registered secret
    cut out of the message and data."""

    def echo(request: httpx.Request) -> httpx.Response:
        key = request.headers["authorization"].removeprefix("Bearer ")
        error = {"code": code, "message": f"invalid bearer token {key}", "data": {"key": key}}
        rpc_id = json.loads(request.content)["id"]
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": rpc_id, "error": error})

    gateway = NewtonGateway(
        "http://127.0.0.1:1",
        policy_client=CLIENT,
        api_key=API_KEY,
        transport=httpx.MockTransport(echo),
    )
    with pytest.raises(AgentGuardError) as refused:
        gateway.authorize(INTENT)
    shown = f"{refused.value} {refused.value!r} {getattr(refused.value, 'data', '')}"
    assert API_KEY.lower() not in shown.lower()
