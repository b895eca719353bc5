"""Fuzz: an OpenGradient node's answer and its TEE proof fields, and the request options a
caller passes (they are hashed into the proof's request hash).

A node (or a relay in front of it) is untrusted: its answer must come back as an
``InferenceResult`` whose proof verified, or as ``ExecutionError`` / ``ProofError``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from agentguard_opengradient._client import OpenGradientClient, _Call
from agentguard_opengradient._proof import (
    canonical_chat_request,
    canonical_completion_request,
    sign_proof,
    verify_proof,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from agentguard import AgentGuardError, ProofError

from .hostile import budget, json_text, mutated, outcome, python_values, wire_values

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = (
    KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
BODY = {
    "model": "gpt-4.1",
    "max_tokens": 100,
    "temperature": 0.0,
    "messages": [{"role": "user", "content": "hello"}],
}
CANONICAL = canonical_chat_request(BODY)
CALL = _Call("/v1/chat/completions", BODY, CANONICAL, "chat")


def _answer(text: str = "hi there") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "model": "gpt-4.1",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        **sign_proof(KEY, CANONICAL, text, 1_764_000_000),
    }


ANSWER = _answer()


def _result(raw: bytes) -> Any:
    client = OpenGradientClient.__new__(OpenGradientClient)
    client._key = PEM
    client._expected_tee_id = None
    response = httpx.Response(200, content=raw, request=httpx.Request("POST", "http://127.0.0.1"))
    return client._result(CALL, response)


def test_the_unmutated_answer_verifies() -> None:
    assert _result(json.dumps(ANSWER).encode()).proof is not None


@budget(250)
@given(
    st.one_of(mutated(ANSWER, max_edits=2).map(lambda d: json.dumps(d).encode()), json_text(ANSWER))
)
def test_answers(raw: bytes) -> None:
    outcome(_result, raw)


@budget(200)
@given(mutated({k: ANSWER[k] for k in ANSWER if k.startswith("tee_")}, wire_values))
def test_proof_fields(fields: Any) -> None:
    if isinstance(fields, dict):
        outcome(
            verify_proof, fields, canonical_request=CANONICAL, output="hi there", signing_key=PEM
        )


def test_a_timestamp_past_uint256_is_a_proof_error() -> None:
    """Found by ``test_proof_fields``: a relay sets ``tee_timestamp`` to 2**256 (the hashes
    still match, as they do not cover the timestamp); the client raises ``OverflowError``,
    which a caller catching ``AgentGuardError`` does not catch."""
    fields = {**{k: ANSWER[k] for k in ANSWER if k.startswith("tee_")}, "tee_timestamp": 2**256}
    with pytest.raises(ProofError):
        verify_proof(fields, canonical_request=CANONICAL, output="hi there", signing_key=PEM)


@budget(200)
@given(mutated(BODY, python_values))
def test_caller_request_options(body: Any) -> None:
    """What a caller passes (messages, stop, tools) is hashed into the request hash; a wrong
    value must be a typed refusal before anything is paid. (``temperature`` is the known
    finding below; it is kept valid here so the rest stays fuzzed.)"""
    if isinstance(body, dict):
        body["temperature"] = 0.0
        outcome(canonical_chat_request, body)
        outcome(canonical_completion_request, {**body, "prompt": "p"})


@pytest.mark.parametrize("temperature", ["hot", [0.0], 10**400])
def test_a_non_numeric_temperature_is_an_intent_error(temperature: Any) -> None:
    """Found by ``test_caller_request_options`` (``temperature=[0.0]``: ``TypeError``)."""
    with pytest.raises(AgentGuardError):
        canonical_chat_request({**BODY, "temperature": temperature})
