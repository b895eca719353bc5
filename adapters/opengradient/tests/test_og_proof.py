"""TEE proof checking with real RSA-2048 keys: a good proof verifies, any change fails."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from agentguard_opengradient import tee_id, verify_proof
from agentguard_opengradient._proof import canonical_chat_request, sign_proof
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from eth_utils.crypto import keccak

from agentguard import IntentError, ProofError

BODY = {
    "model": "gpt-4.1",
    "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    "max_tokens": 50,
    "temperature": 0,
    "top_p": 0.5,
}
OUTPUT = "You said: hi"


@pytest.fixture(scope="module")
def key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def signed(key: RSAPrivateKey) -> dict[str, Any]:
    return sign_proof(key, canonical_chat_request(BODY), OUTPUT, 1_764_000_000)


def test_canonical_request_keeps_only_what_the_enclave_commits_to() -> None:
    assert canonical_chat_request(BODY) == {
        "model": "gpt-4.1",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "temperature": 0.0,
        "max_tokens": 50,
    }
    with pytest.raises(IntentError, match="role 'wizard'"):
        canonical_chat_request({**BODY, "messages": [{"role": "wizard", "content": "x"}]})


def test_a_good_proof_verifies_and_matches_the_documented_construction(key: RSAPrivateKey) -> None:
    fields = signed(key)
    proof = verify_proof(
        fields, canonical_request=canonical_chat_request(BODY), output=OUTPUT, signing_key=pem(key)
    )
    request_hash = keccak(json.dumps(canonical_chat_request(BODY), sort_keys=True).encode())
    output_hash = keccak(OUTPUT.encode())
    assert proof.request_hash == "0x" + request_hash.hex() == "0x" + fields["tee_request_hash"]
    assert proof.output_hash == "0x" + output_hash.hex()
    assert proof.timestamp == 1_764_000_000
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert proof.tee_id == "0x" + keccak(der).hex() == tee_id(pem(key))
    # The signature is RSA-PSS-SHA256 (salt 32) over keccak(request ‖ output ‖ uint256(ts)).
    key.public_key().verify(
        base64.b64decode(fields["tee_signature"]),
        keccak(request_hash + output_hash + (1_764_000_000).to_bytes(32, "big")),
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.update(tee_timestamp=f["tee_timestamp"] + 1), "does not verify"),
        (lambda f: f.update(tee_output_hash="0x" + "00" * 32), "not the output"),
        (lambda f: f.update(tee_request_hash="0x" + "11" * 32), "different request"),
        (
            lambda f: f.update(tee_signature=base64.b64encode(b"\x00" * 256).decode()),
            "does not verify",
        ),
        (lambda f: f.update(tee_signature="%%%"), "does not verify"),
        (lambda f: f.update(tee_id="0x" + "22" * 32), "claims TEE"),
        (lambda f: f.pop("tee_signature"), "no TEE proof fields tee_signature"),
        (lambda f: f.update(tee_timestamp="1764000000"), "not a unix time"),
    ],
)
def test_any_tampered_field_fails(key: RSAPrivateKey, change: Any, message: str) -> None:
    fields = signed(key)
    change(fields)
    with pytest.raises(ProofError, match=message):
        verify_proof(
            fields,
            canonical_request=canonical_chat_request(BODY),
            output=OUTPUT,
            signing_key=pem(key),
        )


def test_other_text_or_other_request_fails(key: RSAPrivateKey) -> None:
    fields = signed(key)
    with pytest.raises(ProofError, match="not the output"):
        verify_proof(
            fields,
            canonical_request=canonical_chat_request(BODY),
            output=OUTPUT + "!",
            signing_key=pem(key),
        )
    other = canonical_chat_request({**BODY, "max_tokens": 51})
    with pytest.raises(ProofError, match="different request"):
        verify_proof(fields, canonical_request=other, output=OUTPUT, signing_key=pem(key))


def test_wrong_key_or_wrong_expected_id_fails(key: RSAPrivateKey, other_key: RSAPrivateKey) -> None:
    fields = signed(key)
    with pytest.raises(ProofError, match="claims TEE"):
        verify_proof(
            fields,
            canonical_request=canonical_chat_request(BODY),
            output=OUTPUT,
            signing_key=pem(other_key),
        )
    forged = sign_proof(other_key, canonical_chat_request(BODY), OUTPUT, 1_764_000_000)
    forged["tee_id"] = tee_id(pem(key))  # claims to be the trusted TEE, signed by another key
    with pytest.raises(ProofError, match="does not verify"):
        verify_proof(
            forged,
            canonical_request=canonical_chat_request(BODY),
            output=OUTPUT,
            signing_key=pem(key),
        )
    with pytest.raises(ProofError, match="expected 0xabc"):
        verify_proof(
            fields, canonical_request=canonical_chat_request(BODY), output=OUTPUT,
            signing_key=pem(key), expected_tee_id="0xabc",
        )  # fmt: skip
    with pytest.raises(ProofError, match="not a PEM public key"):
        verify_proof(
            fields,
            canonical_request=canonical_chat_request(BODY),
            output=OUTPUT,
            signing_key="junk",
        )


def test_earlier_tool_calls_are_part_of_the_signed_request(key: RSAPrivateKey) -> None:
    """Attack: a relay rewrites an earlier assistant tool call in the history (which tool was
    called, with what arguments), steering the model while the proof still verifies. Before
    the canonical request kept ``tool_calls`` on assistant messages (as OpenGradient's enclave
    does), the altered request hashed the same and ``verify_proof`` accepted the answer."""

    def body(arguments: str) -> dict[str, Any]:
        call = {"id": "c1", "type": "function", "function": {"name": "pay", "arguments": arguments}}
        messages = [
            {"role": "user", "content": "pay the shop"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "content": "paid", "tool_call_id": "c1"},
        ]
        return {**BODY, "messages": messages}

    sent, relayed = body('{"amount": 1}'), body('{"amount": 1000}')
    assert canonical_chat_request(sent)["messages"][1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "pay", "arguments": '{"amount": 1}'},
            }
        ],
    }
    proof = sign_proof(key, canonical_chat_request(relayed), OUTPUT, 1_764_000_000)
    with pytest.raises(ProofError, match="different request"):
        verify_proof(
            proof,
            canonical_request=canonical_chat_request(sent),
            output=OUTPUT,
            signing_key=pem(key),
        )
    with pytest.raises(IntentError, match="tool call"):
        bad = {**sent, "messages": [{"role": "assistant", "content": "", "tool_calls": ["x"]}]}
        canonical_chat_request(bad)
