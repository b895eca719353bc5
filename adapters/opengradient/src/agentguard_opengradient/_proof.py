"""The enclave's proof on an OpenGradient answer, and checking it.

An OpenGradient TEE signs every answer with its RSA-2048 key (RSA-PSS, SHA-256, salt 32)
over ``keccak256(request_hash ‖ output_hash ‖ uint256(timestamp))``, where
``request_hash = keccak256(json.dumps(canonical_request, sort_keys=True))`` and
``output_hash = keccak256(output text)``. The canonical request keeps only the fields the
enclave commits to, built exactly as OpenGradient's gateway builds it (tee-gateway @39b1555),
so the client recomputes both hashes from what it sent and what it is about to return: a
relay that alters either, or a key other than the pinned one, fails.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
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
    "canonical_request_bytes",
    "canonical_user_content",
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


# OpenGradient's gateway (tee-gateway @39b1555, controllers/chat_controller.py
# ``_parse_message`` / ``_chat_request_to_dict``, llm_backend.py ``canonical_user_content``)
# is the authority for every rule below. Where its input would be coerced in a way a client
# cannot mean (``str()`` of an object, ``list()`` of a dict) or make it fail after payment,
# the request is refused here, before anything is paid.


def canonical_user_content(content: object) -> Any:
    """User content as the gateway hashes it: a string as is; a list of parts reduced to its
    text parts and, for every other part, a ``{type[, filename]}`` stub (attachment bytes are
    never hashed)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, Sequence) or isinstance(content, bytes | bytearray):
        raise IntentError("a user message's content must be a string or a list of parts")
    parts: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, Mapping):
            raise IntentError("each part of a user message's content must be a JSON object")
        if part.get("type") == "text":
            parts.append({"type": "text", "text": part.get("text", "") or ""})
            continue
        stub: dict[str, Any] = {"type": part.get("type")}
        file = part.get("file")
        filename = (file.get("filename") if isinstance(file, Mapping) else None) or part.get(
            "filename"
        )
        if filename:
            stub["filename"] = filename
        parts.append(stub)
    return parts


def _required(message: Mapping[str, Any], name: str, role: str) -> Any:
    # The gateway fails (after payment) on an explicit null and hashes a missing key as null.
    value = message.get(name)
    if value is None:
        raise IntentError(f"a {role} message needs {name!r}")
    return value


def _text(message: Mapping[str, Any], name: str, role: str) -> str:
    value = _required(message, name, role)
    if not isinstance(value, str):  # the gateway would hash str() of it
        raise IntentError(f"a {role} message's {name!r} must be a string")
    return value


def _message(role: object, message: Mapping[str, Any]) -> dict[str, Any]:
    if role == "system":
        return {"role": "system", "content": _required(message, "content", "system")}
    if role == "user":
        content = _required(message, "content", "user")
        return {"role": "user", "content": canonical_user_content(content)}
    if role == "assistant":
        entry: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
        calls = message.get("tool_calls")
        if calls:  # the enclave commits to earlier tool calls too (which tool, which arguments)
            if not isinstance(calls, Sequence) or isinstance(calls, str):
                raise IntentError("an assistant message's tool_calls must be a list")
            entry["tool_calls"] = [_tool_call(call) for call in calls]
        return entry
    if role == "tool":
        return {
            "role": "tool",
            "content": _required(message, "content", "tool"),
            "tool_call_id": _text(message, "tool_call_id", "tool"),
        }
    if role == "function":
        return {
            "role": "function",
            "content": _text(message, "content", "function"),
            "name": _text(message, "name", "function"),
        }
    if role == "developer":  # OpenGradient's SDK maps it to system; the gateway refuses it
        raise IntentError(
            "OpenGradient's gateway refuses the 'developer' role (after its payment check); "
            "send the instructions as a 'system' message"
        )
    raise IntentError(f"chat message role {role!r} is not one OpenGradient accepts")


def _tool_call(call: object) -> dict[str, Any]:
    function = call.get("function", {}) if isinstance(call, Mapping) else None
    if not isinstance(call, Mapping) or not isinstance(function, Mapping):
        raise IntentError("a tool call must be an object with a function object")
    # Missing fields are hashed as null by the gateway (OpenGradient's SDK differs: "" and
    # "function"); the gateway's form is the one its enclave signs.
    return {
        "id": call.get("id"),
        "type": call.get("type"),
        "function": {"name": function.get("name"), "arguments": function.get("arguments")},
    }


def _temperature(body: Mapping[str, Any], default: float) -> float:
    if "temperature" not in body:
        return default
    value = body["temperature"]
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise IntentError(f"temperature must be a number, not {repr(value)[:40]}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise IntentError("temperature must be a finite number (the gateway hashes it as a float)")
    return number


def _web_search(body: Mapping[str, Any]) -> bool:
    value = body.get("web_search", False)
    if not isinstance(value, bool):
        raise IntentError("web_search must be true or false")
    return value


def canonical_chat_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a ``/v1/chat/completions`` body the enclave hashes, exactly as OpenGradient's
    gateway builds it: ``model``, its canonical ``messages``, float ``temperature`` (0.0 when
    absent), ``max_tokens`` when not null, ``stop``/``tools``/``response_format`` when
    non-empty, and ``"web_search": true`` when set."""
    messages = body.get("messages")
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise IntentError("a chat request needs a non-empty list of messages")
    if not all(isinstance(m, Mapping) for m in messages):
        raise IntentError("each chat message must be a JSON object")
    canonical: dict[str, Any] = {
        "model": _model(body),
        "messages": [_message(m.get("role"), m) for m in messages],
        "temperature": _temperature(body, 0.0),
    }
    _max_tokens(canonical, body, None)
    if body.get("stop"):
        canonical["stop"] = _stop(body["stop"])
    if body.get("tools"):
        if not isinstance(body["tools"], list):  # the gateway would hash list(tools)
            raise IntentError("tools must be a list")
        canonical["tools"] = body["tools"]
    if body.get("response_format"):
        if not isinstance(body["response_format"], Mapping):
            raise IntentError("response_format must be an object")
        canonical["response_format"] = body["response_format"]
    if _web_search(body):
        canonical["web_search"] = True
    return canonical


def canonical_completion_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a ``/v1/completions`` body the enclave hashes: ``model``, ``prompt``, float
    ``temperature``, ``max_tokens``, ``stop`` when non-empty, ``"web_search": true`` when set.

    The gateway reads this body through its ``CreateCompletionRequest`` defaults, so an absent
    ``temperature`` is hashed as 1.0 and an absent ``max_tokens`` as 16 (an explicit null:
    0.0, and no ``max_tokens``)."""
    if not isinstance(body.get("prompt"), str):
        raise IntentError("a completion request needs a prompt string")
    canonical: dict[str, Any] = {
        "model": _model(body),
        "prompt": body["prompt"],
        "temperature": _temperature(body, 1.0),
    }
    _max_tokens(canonical, body, 16)
    if body.get("stop"):
        canonical["stop"] = _stop(body["stop"])
    if _web_search(body):
        canonical["web_search"] = True
    return canonical


def _model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise IntentError("the request needs a model name")
    return model


def _max_tokens(canonical: dict[str, Any], body: Mapping[str, Any], default: int | None) -> None:
    value = body.get("max_tokens") if "max_tokens" in body else default
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise IntentError(f"max_tokens must be a positive integer, not {value!r}")
    canonical["max_tokens"] = value


def _stop(value: object) -> object:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return value
    raise IntentError("stop must be a string or a list of strings")


def canonical_request_bytes(canonical_request: Mapping[str, Any]) -> bytes:
    """The bytes the gateway hashes: ``json.dumps(canonical, sort_keys=True)`` (ASCII-escaped,
    default separators)."""
    return json.dumps(canonical_request, sort_keys=True).encode("utf-8")


def _request_hash(canonical_request: Mapping[str, Any]) -> bytes:
    return keccak(canonical_request_bytes(canonical_request))


def _signed_message(request_hash: bytes, output_hash: bytes, timestamp: int) -> bytes:
    return keccak(request_hash + output_hash + timestamp.to_bytes(32, "big"))


def sign_proof(
    key: RSAPrivateKey, canonical_request: Mapping[str, Any], output: str, timestamp: int
) -> dict[str, Any]:
    """The five ``tee_*`` fields an enclave adds to its answer, shaped as OpenGradient's gateway
    shapes them (hashes as hex without ``0x``, ``tee_id`` with it; used by the local server)."""
    request_hash = _request_hash(canonical_request)
    output_hash = keccak(output.encode("utf-8"))
    signature = key.sign(
        _signed_message(request_hash, output_hash, timestamp), _PSS, hashes.SHA256()
    )
    return {
        "tee_signature": base64.b64encode(signature).decode("ascii"),
        "tee_request_hash": request_hash.hex(),
        "tee_output_hash": output_hash.hex(),
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
    if (
        isinstance(timestamp, bool)
        or not isinstance(timestamp, int)
        or not 0 <= timestamp < 1 << 256
    ):
        raise ProofError(f"tee_timestamp {repr(timestamp)[:40]} is not a unix time (uint256)")
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
