"""The enclave's proof on an OpenGradient answer, and checking it.

An OpenGradient TEE signs every answer with its RSA-2048 key (RSA-PSS, SHA-256, salt 32)
over ``keccak256(request_hash ‖ output_hash ‖ uint256(timestamp))``, where
``request_hash = keccak256(json.dumps(canonical_request, sort_keys=True))`` and
``output_hash = keccak256(output text)``. The canonical request keeps only the fields the
enclave commits to, so the client recomputes both hashes from what it sent and what it is
about to return: a relay that alters either, or a key other than the pinned one, fails.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from eth_utils.crypto import keccak

from agentguard import IntentError, ProofError

__all__ = [
    "TeeProof",
    "canonical_chat_request",
    "canonical_completion_request",
    "sign_proof",
    "tee_id",
    "verify_proof",
]

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
_HASH_RE = re.compile(r"(0x)?[0-9a-fA-F]{64}")
PROOF_FIELDS = ("tee_signature", "tee_request_hash", "tee_output_hash", "tee_timestamp", "tee_id")


@dataclass(frozen=True, slots=True)
class TeeProof:
    """A verified proof: this enclave key signed this request and this output at ``timestamp``."""

    tee_id: str
    request_hash: str
    output_hash: str
    timestamp: int
    signature: str


def _public_key(pem: str | bytes) -> RSAPublicKey:
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise ProofError("the TEE signing key is not a PEM public key") from None
    if not isinstance(key, RSAPublicKey):
        raise ProofError("the TEE signing key is not an RSA key")
    return key


def tee_id(public_key: RSAPublicKey | str | bytes) -> str:
    """``0x`` + keccak256 of the key's DER ``SubjectPublicKeyInfo`` (OpenGradient's TEE id)."""
    key = public_key if isinstance(public_key, RSAPublicKey) else _public_key(public_key)
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "0x" + keccak(der).hex()


def _message(role: object, message: Mapping[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if role in ("system", "developer"):  # the enclave treats developer messages as system
        return {"role": "system", "content": content}
    if role == "user":
        return {"role": "user", "content": content}
    if role == "assistant":
        entry: dict[str, Any] = {"role": "assistant", "content": content or ""}
        calls = message.get("tool_calls")
        if calls:  # the enclave commits to earlier tool calls too (which tool, which arguments)
            if not isinstance(calls, Sequence) or isinstance(calls, str):
                raise IntentError("an assistant message's tool_calls must be a list")
            entry["tool_calls"] = [_tool_call(call) for call in calls]
        return entry
    if role == "tool":
        return {"role": "tool", "content": content, "tool_call_id": message.get("tool_call_id")}
    raise IntentError(f"chat message role {role!r} is not one OpenGradient accepts")


def _tool_call(call: object) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(call, Mapping) or not isinstance(function, Mapping):
        raise IntentError("a tool call must be an object with a function object")
    return {
        "id": call.get("id"),
        "type": call.get("type"),
        "function": {"name": function.get("name"), "arguments": function.get("arguments")},
    }


def canonical_chat_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a ``/v1/chat/completions`` body the enclave hashes (OpenGradient's rule:
    ``model``, role-normalised ``messages``, float ``temperature``, and ``max_tokens``,
    ``stop``, ``tools``, ``response_format`` when set)."""
    messages = body.get("messages")
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise IntentError("a chat request needs a non-empty list of messages")
    if not all(isinstance(m, Mapping) for m in messages):
        raise IntentError("each chat message must be a JSON object")
    canonical: dict[str, Any] = {
        "model": body.get("model"),
        "messages": [_message(m.get("role"), m) for m in messages],
        "temperature": float(body.get("temperature") or 0.0),
    }
    return _optional(canonical, body, ("stop", "tools", "response_format"))


def canonical_completion_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a ``/v1/completions`` body the enclave hashes: ``model``, ``prompt``, float
    ``temperature``, and ``max_tokens``/``stop`` when set."""
    if not isinstance(body.get("prompt"), str):
        raise IntentError("a completion request needs a prompt string")
    canonical = {
        "model": body.get("model"),
        "prompt": body["prompt"],
        "temperature": float(body.get("temperature") or 0.0),
    }
    return _optional(canonical, body, ("stop",))


def _optional(
    canonical: dict[str, Any], body: Mapping[str, Any], truthy: Sequence[str]
) -> dict[str, Any]:
    if body.get("max_tokens") is not None:
        canonical["max_tokens"] = body["max_tokens"]
    for name in truthy:
        if body.get(name):
            canonical[name] = body[name]
    return canonical


def _request_hash(canonical_request: Mapping[str, Any]) -> bytes:
    return keccak(json.dumps(canonical_request, sort_keys=True).encode("utf-8"))


def _signed_message(request_hash: bytes, output_hash: bytes, timestamp: int) -> bytes:
    return keccak(request_hash + output_hash + timestamp.to_bytes(32, "big"))


def sign_proof(
    key: RSAPrivateKey, canonical_request: Mapping[str, Any], output: str, timestamp: int
) -> dict[str, Any]:
    """The five ``tee_*`` fields an enclave adds to its answer (used by the local server)."""
    request_hash = _request_hash(canonical_request)
    output_hash = keccak(output.encode("utf-8"))
    signature = key.sign(
        _signed_message(request_hash, output_hash, timestamp), _PSS, hashes.SHA256()
    )
    return {
        "tee_signature": base64.b64encode(signature).decode("ascii"),
        "tee_request_hash": "0x" + request_hash.hex(),
        "tee_output_hash": "0x" + output_hash.hex(),
        "tee_timestamp": timestamp,
        "tee_id": tee_id(key.public_key()),
    }


def _same_hash(reported: object, computed: bytes) -> bool:
    return (
        isinstance(reported, str)
        and _HASH_RE.fullmatch(reported) is not None
        and bytes.fromhex(reported.removeprefix("0x")) == computed
    )


def verify_proof(
    body: Mapping[str, Any],
    *,
    canonical_request: Mapping[str, Any],
    output: str,
    signing_key: str | bytes,
    expected_tee_id: str | None = None,
) -> TeeProof:
    """Check an answer's ``tee_*`` fields against what was sent and what came back.

    Raises ``ProofError`` if a field is missing, the key does not name the claimed (or the
    expected) TEE, either hash differs from the recomputed one, or the signature is invalid.
    """
    missing = [name for name in PROOF_FIELDS if name not in body]
    if missing:
        raise ProofError(f"the answer carries no TEE proof fields {', '.join(missing)}")
    key = _public_key(signing_key)
    key_id = tee_id(key)
    claimed = body["tee_id"]
    if not isinstance(claimed, str) or claimed.lower() != key_id:
        raise ProofError(f"the answer claims TEE {claimed!r}, the signing key is TEE {key_id}")
    if expected_tee_id is not None and expected_tee_id.lower() != key_id:
        raise ProofError(f"the signing key is TEE {key_id}, expected {expected_tee_id}")
    timestamp = body["tee_timestamp"]
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ProofError(f"tee_timestamp {timestamp!r} is not a unix time")
    request_hash = _request_hash(canonical_request)
    if not _same_hash(body["tee_request_hash"], request_hash):
        raise ProofError("the enclave signed a different request than the one sent")
    output_hash = keccak(output.encode("utf-8"))
    if not _same_hash(body["tee_output_hash"], output_hash):
        raise ProofError("the answer's text is not the output the enclave signed")
    encoded = body["tee_signature"]
    try:
        signature = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else b""
    except (binascii.Error, ValueError):
        signature = b""
    try:
        key.verify(
            signature, _signed_message(request_hash, output_hash, timestamp), _PSS, hashes.SHA256()
        )
    except InvalidSignature:
        raise ProofError(f"the RSA-PSS signature does not verify under TEE {key_id}") from None
    return TeeProof(
        tee_id=key_id,
        request_hash="0x" + request_hash.hex(),
        output_hash="0x" + output_hash.hex(),
        timestamp=timestamp,
        signature=str(encoded),
    )
