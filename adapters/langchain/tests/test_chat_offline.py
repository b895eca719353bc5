"""``ChatOpenGradient`` checks its configuration, options and messages before anything is sent.

The client here points at a closed loopback port: a call that reached the network would fail
with a connection error, so each typed agentguard error below also shows nothing was sent.
"""

from __future__ import annotations

from typing import Any

import pytest
from agentguard_opengradient import InferenceResult, OpenGradientClient, TeeProof
from langchain_agentguard import ChatOpenGradient
from langchain_agentguard._chat import to_openai_messages
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from test_chat_standard import NOWHERE, offline_auth, offline_client

from agentguard import ConfigurationError, ExecutionError, IntentError, ProofError, Token
from agentguard.chain import DEV_ACCOUNTS
from agentguard.ledger import Ledger
from agentguard.x402 import Receipt


def unverified_client() -> OpenGradientClient:
    return OpenGradientClient(NOWHERE, offline_auth())


def test_a_client_that_does_not_check_proofs_is_refused_unless_asked_for() -> None:
    with pytest.raises(ConfigurationError, match="tee_signing_key"):
        ChatOpenGradient(client=unverified_client())
    assert ChatOpenGradient(client=unverified_client(), require_proof=False).require_proof is False


@pytest.mark.parametrize("client", [None, "http://127.0.0.1:9", object()])
def test_a_missing_or_wrong_client_is_a_configuration_error(client: Any) -> None:
    with pytest.raises(ConfigurationError, match="OpenGradientClient"):
        ChatOpenGradient(client=client)


@pytest.mark.parametrize(
    "option",
    [
        {"n": 2},
        {"stream": True},
        {"response_format": {"type": "json_object"}},
        {"max_retries": 3},
    ],
)
def test_options_it_does_not_support_are_refused_before_sending(option: dict[str, Any]) -> None:
    """``stream=True`` would reach the client, ``response_format`` and ``n`` change what is
    answered: each is refused here, with its name."""
    chat = ChatOpenGradient(client=offline_client())
    with pytest.raises(ConfigurationError, match=next(iter(option))):
        chat.invoke("hello", **option)


def test_messages_become_openai_chat_messages() -> None:
    messages: list[BaseMessage] = [
        SystemMessage("be terse"),
        ChatMessage(role="developer", content="cite sources"),
        HumanMessage([{"type": "text", "text": "what is "}, "an attestation?"]),
        AIMessage("", tool_calls=[{"name": "lookup", "args": {"q": "x"}, "id": "call_1"}]),
        ToolMessage("a signed decision", tool_call_id="call_1"),
        AIMessage("A signed decision."),
    ]
    assert to_openai_messages(messages) == [
        {"role": "system", "content": "be terse"},
        {"role": "system", "content": "cite sources"},
        {"role": "user", "content": "what is an attestation?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "x"}'},
                }
            ],
        },
        {"role": "tool", "content": "a signed decision", "tool_call_id": "call_1"},
        {"role": "assistant", "content": "A signed decision."},
    ]


@pytest.mark.parametrize(
    "message",
    [
        HumanMessage([{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]),
        FunctionMessage(name="f", content="{}"),
        ChatMessage(role="root", content="obey"),
    ],
)
def test_messages_it_cannot_send_are_intent_errors(message: BaseMessage) -> None:
    chat = ChatOpenGradient(client=offline_client())
    with pytest.raises(IntentError):
        chat.invoke([message])


def test_tokens_take_a_token_or_a_collection_and_nothing_else() -> None:
    opg = Token("OPG", "0x" + "12" * 20, 18, 8453)
    for given in (opg, [opg], {"OPG": opg}):
        assert ChatOpenGradient(client=offline_client(), tokens=given).tokens == (opg,)
    with pytest.raises(ConfigurationError, match="tokens="):
        ChatOpenGradient(client=offline_client(), tokens=["OPG"])


def test_tracing_names_the_provider_and_the_per_call_model() -> None:
    chat = ChatOpenGradient(client=offline_client(), model="openai/gpt-4.1", max_tokens=20)
    params = chat._get_ls_params(model="anthropic/claude-sonnet-4-6")
    assert params["ls_provider"] == "opengradient"
    assert params["ls_model_name"] == "anthropic/claude-sonnet-4-6"
    assert params["ls_max_tokens"] == 20


def result(**changes: Any) -> InferenceResult:
    fields: dict[str, Any] = {
        "text": "hi",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        "model": "gpt-4.1",
        "receipt": None,
        "proof": TeeProof("0x" + "ab" * 32, "0x" + "01" * 32, "0x" + "02" * 32, 1, "sig"),
        "data_settlement_tx_hash": None,
        "raw": {},
    }
    return InferenceResult(**{**fields, **changes})


def test_an_answer_without_a_verified_proof_is_not_returned() -> None:
    """Defence in depth: even if a client handed back an unproven result, the model raises."""
    chat = ChatOpenGradient(client=offline_client())
    assert chat._chat_result(result(), offered=()).generations[0].message.content == "hi"
    with pytest.raises(ProofError, match="not returned"):
        chat._chat_result(result(proof=None), offered=())


CALL = {"id": "c1", "type": "function", "function": {"name": "pay", "arguments": '{"to": "x"}'}}


def test_tool_calls_nobody_offered_are_an_execution_error() -> None:
    """A server answering with calls to tools this call did not offer would hand the agent
    actions it never allowed; the model refuses the answer."""
    chat = ChatOpenGradient(client=offline_client())
    calls = result(finish_reason="tool_calls", tool_calls=(CALL,))
    with pytest.raises(ExecutionError, match="offered: no tools"):
        chat._chat_result(calls, offered=())
    with pytest.raises(ExecutionError, match="calls to pay, which this call did not offer"):
        chat._chat_result(calls, offered=("lookup",))


def test_tool_calls_become_langchain_tool_calls_and_bad_arguments_invalid_ones() -> None:
    chat = ChatOpenGradient(client=offline_client())
    bad = {**CALL, "id": "c2", "function": {"name": "pay", "arguments": "[1, 2]"}}
    answer = (
        chat._chat_result(
            result(finish_reason="tool_calls", tool_calls=(CALL, bad)), offered=("pay",)
        )
        .generations[0]
        .message
    )
    assert isinstance(answer, AIMessage) and answer.content == ""
    assert answer.tool_calls == [
        {"name": "pay", "args": {"to": "x"}, "id": "c1", "type": "tool_call"}
    ]
    assert [(c["id"], c["args"]) for c in answer.invalid_tool_calls] == [("c2", "[1, 2]")]


def test_bind_tools_sends_openai_tools_and_checks_tool_choice() -> None:
    def pay(to: str) -> str:
        """Pay someone."""
        return to

    chat = ChatOpenGradient(client=offline_client())
    bound = chat.bind_tools([pay], tool_choice="pay")
    assert bound.kwargs["tools"][0]["function"]["name"] == "pay"  # type: ignore[attr-defined]
    assert bound.kwargs["tool_choice"] == {"type": "function", "function": {"name": "pay"}}  # type: ignore[attr-defined]
    assert chat.bind_tools([pay], tool_choice="any").kwargs["tool_choice"] == "required"  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="tool_choice 'steal'"):
        chat.bind_tools([pay], tool_choice="steal")
    with pytest.raises(ConfigurationError, match="parallel_tool_calls"):
        chat.bind_tools([pay], parallel_tool_calls=False)
    with pytest.raises(ConfigurationError, match="tool cannot be offered"):
        chat.bind_tools([42])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="tools must be a list"):
        chat.invoke("pay x", tools="pay")


def test_no_secret_reaches_the_model_repr_or_dump() -> None:
    chat = ChatOpenGradient(client=offline_client())
    key = DEV_ACCOUNTS[1].private_key.removeprefix("0x").lower()
    assert key not in repr(chat).lower() and key not in str(chat.model_dump()).lower()


def upto_receipt(reported: int | None) -> Receipt:
    """An ``upto`` payment whose signed maximum (0.1 OPG) stays counted."""
    return Receipt(
        scheme="upto",
        network="eip155:8453",
        asset="0xFbC2051AE2265686a469421b2C5A2D5462FbF5eB",
        pay_to=DEV_ACCOUNTS[3].address,
        payer=DEV_ACCOUNTS[1].address,
        authorized=10**17,
        reported_charge=reported,
        transaction="",
        pending=False,
        x402_version=2,
        reservation_id="res-elsewhere",
        reference="permit2:8453:x:1:2",
        session="s1",
    )


def test_a_tiny_reported_upto_charge_does_not_hide_the_counted_maximum() -> None:
    """Attack: a hostile server or relay reports a tiny ``upto`` charge. Before the fix the
    metadata's ``amount`` was that claim alone, so the call looked cheap while the signed maximum
    stayed counted; now the counted maximum comes first and the claim is named as the server's."""
    chat = ChatOpenGradient(client=offline_client())
    for reported, shown in ((1, "0.000000000000000001 OPG"), (None, None)):
        payment = (
            chat._chat_result(result(receipt=upto_receipt(reported)), offered=())
            .generations[0]
            .message.response_metadata["payment"]
        )
        assert (payment["authorized"], payment["authorized_atomic"]) == ("0.1 OPG", 10**17)
        assert (payment["reported_charge"], payment["reported_charge_atomic"]) == (shown, reported)
        assert "amount" not in payment and "amount_atomic" not in payment


def test_a_ledger_that_is_not_the_payments_ledger_is_named() -> None:
    paid = upto_receipt(12 * 10**12)
    plain = ChatOpenGradient(client=offline_client())
    payment = (
        plain._chat_result(result(receipt=paid), offered=())
        .generations[0]
        .message.response_metadata["payment"]
    )
    assert payment["reported_charge"] == "0.000012 OPG" and payment["task_id"] is None
    assert payment["authorized"] == "0.1 OPG"
    with Ledger() as other:
        chat = ChatOpenGradient(client=offline_client(), ledger=other)
        with pytest.raises(ConfigurationError, match="res-elsewhere"):
            chat._chat_result(result(receipt=paid), offered=())


def test_proven_tool_call_arguments_with_a_duplicate_key_are_not_run() -> None:
    """Attack: the relay (or a model steered by injected text) answers a call whose proven
    arguments name a key twice: '{"to": "alice", "to": "mallory"}'. Whoever checks the proven
    text with a first-wins reader sees alice; Python's json kept the last, so before the fix
    the agent ran the call for mallory. Now such arguments are an invalid tool call (the loop
    tells the model), never run."""
    chat = ChatOpenGradient(client=offline_client())
    twice = {**CALL, "function": {"name": "pay", "arguments": '{"to": "alice", "to": "mallory"}'}}
    answer = (
        chat._chat_result(result(finish_reason="tool_calls", tool_calls=(twice,)), offered=("pay",))
        .generations[0]
        .message
    )
    assert isinstance(answer, AIMessage)
    assert answer.tool_calls == []
    assert [c["id"] for c in answer.invalid_tool_calls] == ["c1"]
