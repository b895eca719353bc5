"""The request the enclave signs, checked against vectors written from OpenGradient's gateway.

Every expected form below was written by hand from OpenGradient/tee-gateway @39b1555
(``tee_gateway/controllers/chat_controller.py``: ``_parse_message``, ``_chat_request_to_dict``;
``tee_gateway/llm_backend.py``: ``canonical_user_content``;
``tee_gateway/controllers/completions_controller.py`` and
``tee_gateway/models/create_completion_request.py`` @265cfad for the completion defaults),
and OpenGradient/OpenGradient-SDK @0afa3f3 (``client/tee_verify.py``) where the SDK differs.
The hashes are keccak256 of the literal ``json.dumps(..., sort_keys=True)`` bytes the gateway
signs; none of them is produced by the code under test.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from agentguard_opengradient._proof import (
    canonical_chat_request,
    canonical_completion_request,
    canonical_request_bytes,
    canonical_user_content,
    verify_proof,
)
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from eth_utils.crypto import keccak

from agentguard import IntentError, ProofError

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]

# A conversation with everything the old canonical form got wrong: an attachment list, an
# earlier tool call, a tool answer, the legacy function role, and web search.
CHAT_BODY: dict[str, Any] = {
    "model": "gpt-4.1",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this file?"},
                {
                    "type": "file",
                    "file": {
                        "filename": "q3.pdf",
                        "file_data": "data:application/pdf;base64,JVBERi0x",
                    },
                },
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                {"type": "input_file", "filename": "notes.txt", "base64": "aGk="},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "q3"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "revenue 12"},
        {"role": "function", "name": "legacy", "content": "ok"},
    ],
    "temperature": 0.2,
    "max_tokens": 64,
    "top_p": 0.9,  # not hashed
    "tool_choice": "auto",  # not hashed
    "n": 1,  # not hashed
    "stream": False,  # not hashed
    "stop": ["\n\n"],
    "tools": TOOLS,
    "response_format": {"type": "json_object"},
    "web_search": True,
}

# The gateway's _chat_request_to_dict for CHAT_BODY, by hand: attachments reduced to
# {type[, filename]}, the assistant's null content as "", its tool call kept whole, the tool
# message's tool_call_id, the function message's name, web_search as true.
CHAT_CANONICAL: dict[str, Any] = {
    "model": "gpt-4.1",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this file?"},
                {"type": "file", "filename": "q3.pdf"},
                {"type": "image_url"},
                {"type": "input_file", "filename": "notes.txt"},
            ],
        },
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "q3"}'},
                }
            ],
        },
        {"role": "tool", "content": "revenue 12", "tool_call_id": "call_1"},
        {"role": "function", "content": "ok", "name": "legacy"},
    ],
    "temperature": 0.2,
    "max_tokens": 64,
    "stop": ["\n\n"],
    "tools": TOOLS,
    "response_format": {"type": "json_object"},
    "web_search": True,
}
CHAT_BYTES = (
    b'{"max_tokens": 64, "messages": [{"content": "You are terse.", "role": "system"}, '
    b'{"content": [{"text": "What is in this file?", "type": "text"}, {"filename": "q3.pdf", '
    b'"type": "file"}, {"type": "image_url"}, {"filename": "notes.txt", "type": "input_file"}], '
    b'"role": "user"}, {"content": "", "role": "assistant", "tool_calls": [{"function": '
    b'{"arguments": "{\\"q\\": \\"q3\\"}", "name": "lookup"}, "id": "call_1", "type": '
    b'"function"}]}, {"content": "revenue 12", "role": "tool", "tool_call_id": "call_1"}, '
    b'{"content": "ok", "name": "legacy", "role": "function"}], "model": "gpt-4.1", '
    b'"response_format": {"type": "json_object"}, "stop": ["\\n\\n"], "temperature": 0.2, '
    b'"tools": [{"function": {"name": "lookup", "parameters": {"type": "object"}}, "type": '
    b'"function"}], "web_search": true}'
)
CHAT_HASH = "b1a3cfc0cd3e2384676df3a0306cc4287dfcfaa0315b0ef8d76acd3d7e3ca100"


def test_the_chat_request_is_canonicalized_exactly_as_the_gateway_does() -> None:
    """Before this change the adapter dropped the function role (IntentError), hashed list
    content whole (attachment bytes included) and ignored web_search: OpenGradient's valid
    proof for this request failed with ProofError."""
    canonical = canonical_chat_request(CHAT_BODY)
    assert canonical == CHAT_CANONICAL
    assert canonical_request_bytes(canonical) == CHAT_BYTES
    assert keccak(CHAT_BYTES).hex() == CHAT_HASH


def test_literal_serialization_escapes_as_python_json_dumps() -> None:
    # Absent temperature is 0.0 for chat; non-ASCII is \u-escaped (ensure_ascii).
    body = {"model": "m", "messages": [{"role": "user", "content": "h\u00e9llo"}]}
    assert canonical_request_bytes(canonical_chat_request(body)) == (
        b'{"messages": [{"content": "h\\u00e9llo", "role": "user"}], "model": "m", '
        b'"temperature": 0.0}'
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # CreateCompletionRequest defaults: temperature=1, max_tokens=16 when absent.
        (
            {"model": "m", "prompt": "hi"},
            b'{"max_tokens": 16, "model": "m", "prompt": "hi", "temperature": 1.0}',
        ),
        # Explicit nulls: temperature 0.0, no max_tokens.
        (
            {"model": "m", "prompt": "hi", "temperature": None, "max_tokens": None},
            b'{"model": "m", "prompt": "hi", "temperature": 0.0}',
        ),
        (
            {"model": "m", "prompt": "hi", "temperature": 0, "max_tokens": 5, "stop": "x",
             "web_search": True, "top_p": 1},
            b'{"max_tokens": 5, "model": "m", "prompt": "hi", "stop": "x", "temperature": 0.0, '
            b'"web_search": true}',
        ),
    ],
)  # fmt: skip
def test_the_completion_request_follows_the_gateway_defaults(
    body: dict[str, Any], expected: bytes
) -> None:
    """Before this change an absent temperature was hashed as 0.0 and an absent max_tokens
    left out, where the gateway hashes 1.0 and 16: such a proof failed."""
    assert canonical_request_bytes(canonical_completion_request(body)) == expected


def test_a_tool_call_without_id_or_type_is_hashed_as_the_gateway_does_not_as_the_sdk() -> None:
    """The gateway reads a missing id/type as null; OpenGradient's SDK writes "" and
    "function". Only the gateway's form is what its enclave signs."""
    call = {"function": {"name": "f", "arguments": "{}"}}
    body = {"model": "m", "messages": [{"role": "assistant", "content": "", "tool_calls": [call]}]}
    got = canonical_request_bytes(canonical_chat_request(body))
    gateway = (
        b'{"messages": [{"content": "", "role": "assistant", "tool_calls": [{"function": '
        b'{"arguments": "{}", "name": "f"}, "id": null, "type": null}]}], "model": "m", '
        b'"temperature": 0.0}'
    )
    sdk = gateway.replace(b'"id": null, "type": null', b'"id": "", "type": "function"')
    assert got == gateway
    assert keccak(gateway).hex() == (
        "c24f4a95d1f4278a23259813444466a8a5d03db7a44680bcb6c152513931cc50"
    )
    assert keccak(sdk).hex() == "1b1f6aa2aa57c39c1bbb9e7b18e435e59652524df5c613f0f4e261f3ea5cc5fb"


def test_the_developer_role_is_refused_before_paying_as_the_gateway_refuses_it() -> None:
    """The gateway's _parse_message raises on "developer" (after the payment check); the SDK
    maps it to system. We refuse it up front; its system spelling hashes as the SDK's form."""
    developer = {"model": "m", "messages": [{"role": "developer", "content": "be brief"}]}
    with pytest.raises(IntentError, match="'developer' role"):
        canonical_chat_request(developer)
    system = {"model": "m", "messages": [{"role": "system", "content": "be brief"}]}
    assert canonical_request_bytes(canonical_chat_request(system)) == (
        b'{"messages": [{"content": "be brief", "role": "system"}], "model": "m", '
        b'"temperature": 0.0}'
    )


def test_list_user_content_keeps_text_and_stubs_only() -> None:
    content = [
        {"type": "text", "text": None},  # the gateway writes "" for a null text
        {"type": "image_url", "image_url": {"url": "https://x/cat.png"}, "filename": ""},
        {"type": "file", "file": "not-an-object", "filename": "f.txt"},
        {"type": "file", "file": {"filename": "a.pdf"}, "filename": "b.pdf"},  # file's wins
    ]
    assert canonical_user_content(content) == [
        {"type": "text", "text": ""},
        {"type": "image_url"},
        {"type": "file", "filename": "f.txt"},
        {"type": "file", "filename": "a.pdf"},
    ]
    assert canonical_user_content("plain") == "plain"


def test_attachment_bytes_are_not_hashed_but_their_names_are() -> None:
    def body(data: str, name: str) -> dict[str, Any]:
        part = {"type": "file", "file": {"filename": name, "file_data": data}}
        return {"model": "m", "messages": [{"role": "user", "content": [part]}]}

    assert canonical_chat_request(body("AAAA", "a.pdf")) == canonical_chat_request(
        body("BBBB", "a.pdf")
    )
    assert canonical_chat_request(body("AAAA", "a.pdf")) != canonical_chat_request(
        body("AAAA", "b.pdf")
    )


def test_web_search_false_or_absent_is_not_hashed() -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert "web_search" not in canonical_chat_request(base)
    assert "web_search" not in canonical_chat_request({**base, "web_search": False})
    assert canonical_chat_request({**base, "web_search": True})["web_search"] is True


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"web_search": "yes"}, "web_search"),
        ({"temperature": "0.5"}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"max_tokens": "50"}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"tools": {"type": "function"}}, "tools must be a list"),
        ({"response_format": "json"}, "response_format"),
        ({"stop": 5}, "stop"),
        ({"model": 7}, "model"),
        ({"messages": [{"role": "user", "content": None}]}, "needs 'content'"),
        ({"messages": [{"role": "user", "content": {"text": "x"}}]}, "string or a list"),
        ({"messages": [{"role": "user", "content": ["bare"]}]}, "JSON object"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
        ({"messages": [{"role": "tool", "content": "x", "tool_call_id": 5}]}, "must be a str"),
        ({"messages": [{"role": "function", "content": {"a": 1}, "name": "f"}]}, "must be a str"),
        ({"messages": [{"role": "function", "content": "x"}]}, "needs 'name'"),
        ({"messages": [{"role": "assistant", "tool_calls": {"id": "x"}}]}, "must be a list"),
        ({"messages": [{"role": "assistant", "tool_calls": [{"function": "f"}]}]}, "function"),
        ({"messages": [{"role": "User", "content": "x"}]}, "role 'User'"),
    ],
)
def test_what_the_gateway_would_refuse_or_coerce_is_refused_before_paying(
    change: dict[str, Any], message: str
) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **change}
    with pytest.raises(IntentError, match=message):
        canonical_chat_request(body)


def _gateway_sign(
    key: rsa.RSAPrivateKey, request_bytes: bytes, output: str, ts: int
) -> dict[str, Any]:
    """The gateway's compute_tee_msg_hash + sign_data, written from its source: hashes as hex
    without 0x, tee_id with it."""
    request_hash, output_hash = keccak(request_bytes), keccak(output.encode())
    message = keccak(request_hash + output_hash + ts.to_bytes(32, "big"))
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "tee_signature": base64.b64encode(key.sign(message, pss, hashes.SHA256())).decode(),
        "tee_request_hash": request_hash.hex(),
        "tee_output_hash": output_hash.hex(),
        "tee_timestamp": ts,
        "tee_id": "0x" + keccak(der).hex(),
    }


def test_a_gateway_signed_answer_verifies_and_a_changed_history_does_not() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    output = json.dumps([{"id": "c2", "type": "function"}], sort_keys=True)
    fields = _gateway_sign(key, CHAT_BYTES, output, 1_764_000_000)
    proof = verify_proof(
        fields, canonical_request=canonical_chat_request(CHAT_BODY), output=output, signing_key=pem
    )
    assert proof.request_hash == "0x" + CHAT_HASH
    # A relay that rewrote the earlier tool call's arguments, or the attachment's name, or
    # switched web search off, no longer matches what the enclave signed.
    mutations: list[Callable[[dict[str, Any]], None]] = [
        lambda b: b["messages"][2]["tool_calls"][0]["function"].update(arguments='{"q": "q4"}'),
        lambda b: b["messages"][1]["content"][1]["file"].update(filename="q4.pdf"),
        lambda b: b.update(web_search=False),
        lambda b: b["messages"][4].update(name="other"),
    ]
    for mutate in mutations:
        changed = json.loads(json.dumps(CHAT_BODY))
        mutate(changed)
        with pytest.raises(ProofError, match="different request"):
            verify_proof(
                fields,
                canonical_request=canonical_chat_request(changed),
                output=output,
                signing_key=pem,
            )
