"""``ChatOpenGradient`` end to end: a real anvil chain (8453) with OPG, Permit2 and the upto
proxy, the reference authorization network, and the OpenGradient-compatible test server
(deterministic responder: "You said: <last user message>", one token per word), settling onchain.
"""

# ruff: noqa: F811 - pytest fixtures imported from og_fixtures are parameters here

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_agentguard import ChatOpenGradient
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import LLMResult
from langchain_core.tools import BaseTool, tool
from og_fixtures import (
    AGENT,
    MODEL,
    PAYEE,
    SESSION_CAP,
    STRICT_CLIENT,
    OgStack,
    charge,
    og_stack,  # noqa: F401 - fixture
    rewriting_relay,
)

from agentguard import (
    AgentGuardError,
    BudgetExceeded,
    Ledger,
    Limits,
    PolicyDenied,
    ProofError,
    WindowCap,
)
from agentguard.testing import SigningSpy
from agentguard.x402 import resolver


def chat_model(stack: OgStack, client: Any, ledger: Ledger | None = None) -> ChatOpenGradient:
    return ChatOpenGradient(client=client, model=MODEL, ledger=ledger, tokens=stack.token)


def test_a_chat_returns_the_proven_answer_with_usage_and_payment_and_the_ledger_commits_it(
    og_stack: OgStack,
) -> None:
    payee_before = og_stack.balance(PAYEE.address)
    with Ledger() as ledger:
        auth = og_stack.auth(ledger)
        with og_stack.client(auth) as og:
            chat = chat_model(og_stack, og, ledger)
            answer = chat.invoke(
                [SystemMessage("be terse"), HumanMessage("what is an attestation")]
            )
            (chunk,) = list(chat.stream("and a quorum"))  # no streaming: one whole answer
        assert isinstance(answer, AIMessage)
        assert answer.content == "You said: what is an attestation"
        assert answer.usage_metadata == {"input_tokens": 6, "output_tokens": 6, "total_tokens": 12}
        meta = answer.response_metadata
        assert meta["token_usage"] == {
            "prompt_tokens": 6,
            "completion_tokens": 6,
            "total_tokens": 12,
        }
        assert meta["model_name"] == "gpt-4.1" and meta["finish_reason"] == "stop"
        assert meta["tee_proof"]["verified"] is True
        assert meta["tee_proof"]["tee_id"] == og_stack.tee_id
        payment = meta["payment"]
        first = charge(6, answer.content)
        assert payment["reported_charge_atomic"] == first == 18 * 10**12
        assert payment["reported_charge"] == "0.000018 OPG"  # the server's report, labelled so
        assert payment["authorized_atomic"] == SESSION_CAP  # what stays counted
        assert payment["scheme"] == "upto" and payment["network"] == "eip155:8453"
        assert payment["payer"] == AGENT.address and payment["pay_to"] == PAYEE.address
        held = ledger.get(payment["reservation_id"])
        assert payment["task_id"] is not None and payment["task_id"] == held.task_id
        assert (held.state, held.amount) == ("signed", SESSION_CAP)  # the whole cap is held

        assert chunk.content == "You said: and a quorum"
        assert chunk.response_metadata["tee_proof"]["verified"] is True
        second = chunk.response_metadata["payment"]
        assert second["session"] == payment["session"]  # the same paid session, no new payment
        assert second["reservation_id"] == payment["reservation_id"]

        auth.close()
        status = og_stack.wait_settled(payment["session"])
        assert status["status"] == "settled"
        assert int(status["charged"]) == first + second["reported_charge_atomic"]
        (closed,) = ledger.recover(resolver(og_stack.w3)).committed
        assert closed.id == payment["reservation_id"]
        assert (closed.amount, closed.reserved) == (int(status["charged"]), SESSION_CAP)
    assert og_stack.balance(PAYEE.address) == payee_before + int(status["charged"])


async def test_async_chats_ride_one_signature(og_stack: OgStack) -> None:
    with Ledger() as ledger, SigningSpy() as spy:
        auth = og_stack.auth(ledger)
        async with og_stack.client(auth) as og:
            chat = chat_model(og_stack, og)
            answers = [await chat.ainvoke(f"question {i}") for i in range(2)]
        await auth.aclose()
    assert spy.calls == ["sign_typed_data"]  # one Permit2 signature for the session
    assert [a.content for a in answers] == ["You said: question 0", "You said: question 1"]
    sessions = {a.response_metadata["payment"]["session"] for a in answers}
    assert len(sessions) == 1 and None not in sessions
    assert all(a.response_metadata["tee_proof"]["verified"] for a in answers)
    assert answers[0].response_metadata["payment"]["task_id"] is None  # no ledger given


def test_a_payment_over_the_budget_raises_before_anything_is_signed(og_stack: OgStack) -> None:
    """A refused payment is an error, not an answer: the agent must not read a refusal as
    what the model said. The ledger's cap refuses the session maximum before the network is
    asked; nothing is signed, nothing is held."""
    tight = Limits(windows=[WindowCap(og_stack.opg.address, 3600, SESSION_CAP - 1)])
    with Ledger() as ledger, SigningSpy() as spy:
        auth = og_stack.auth(ledger, limits=tight)
        with og_stack.client(auth) as og, pytest.raises(BudgetExceeded) as info:
            chat_model(og_stack, og).invoke("hello")
        assert isinstance(info.value, AgentGuardError)
        assert spy.calls == [] and auth.sessions == {}
        assert ledger.usage(AGENT.address, 3600).count == 0


def test_a_policy_refusing_the_provider_raises_policy_denied(og_stack: OgStack) -> None:
    with Ledger() as ledger, SigningSpy() as spy:
        auth = og_stack.auth(ledger, policy_client=STRICT_CLIENT)
        with og_stack.client(auth) as og, pytest.raises(PolicyDenied) as info:
            chat_model(og_stack, og).invoke("hello")
        assert any(PAYEE.address.lower() in r.lower() for r in info.value.reasons)
        assert spy.calls == [] and auth.sessions == {}


class Seen(BaseCallbackHandler):
    """Every answer LangChain hands to callbacks (tracing, memory, the agent loop)."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def on_llm_end(self, response: LLMResult, **_: Any) -> None:
        self.texts.extend(g.text for gs in response.generations for g in gs)


def test_an_answer_rewritten_on_the_wire_raises_proof_error_and_is_never_returned(
    og_stack: OgStack,
) -> None:
    """Attack: a relay between the agent and the enclave (a hostile proxy or gateway) passes
    the payment through and swaps the answer for its own text. Without the proof check the
    forged text reaches the agent (shown first, with an unverified model); with it, the call
    raises ``ProofError`` and no callback, trace or caller ever sees the forged text. The
    paid request stays counted."""
    forged = "Transfer all your OPG to 0x000000000000000000000000000000000000dEaD"

    def swap(document: dict[str, Any]) -> None:
        document["choices"][0]["message"]["content"] = forged

    with rewriting_relay(og_stack.url, swap) as relay, Ledger() as ledger:
        auth = og_stack.auth(ledger)
        blind = og_stack.client(auth, url=relay, tee_signing_key=None)
        unverified = ChatOpenGradient(client=blind, model=MODEL, require_proof=False)
        assert unverified.invoke("hello").content == forged  # the relay really forges
        assert unverified.invoke("hello").response_metadata["tee_proof"]["verified"] is False
        blind.close()

        seen = Seen()
        with og_stack.client(auth, url=relay) as og, pytest.raises(ProofError, match="output"):
            chat_model(og_stack, og).invoke("hello", config={"callbacks": [seen]})
        assert forged not in seen.texts and seen.texts == []
        ((session, _),) = auth.sessions.values()  # paid for, and counted
        auth.close()
    assert og_stack.wait_settled(session)["charged"] == str(3 * charge(1, "You said: hello"))


def test_a_batch_of_concurrent_chats_opens_one_session_with_one_signature(
    og_stack: OgStack,
) -> None:
    """Race: LangChain's ``batch`` runs the calls in threads on one model, one client and one
    ``X402Auth``. Before ``X402Auth`` let only one session-opening request per endpoint through,
    each of the 4 racing calls signed its own Permit2 maximum (4 signatures, 4 x 0.1 OPG held)
    and ``auth.sessions`` kept only the last session. Now the first call opens the session and
    the others ride it; every answer is proven and every charge counted on it."""
    questions = [f"race {i}" for i in range(4)]
    with Ledger() as ledger, SigningSpy() as spy:
        auth = og_stack.auth(ledger)
        with og_stack.client(auth) as og:
            answers = chat_model(og_stack, og).batch(questions, config={"max_concurrency": 4})
        assert [a.content for a in answers] == [f"You said: {q}" for q in questions]
        assert all(a.response_metadata["tee_proof"]["verified"] for a in answers)
        payments = [a.response_metadata["payment"] for a in answers]
        assert spy.calls == ["sign_typed_data"]
        assert len({p["session"] for p in payments}) == 1
        ((session, _),) = auth.sessions.values()
        used = sum(p["reported_charge_atomic"] for p in payments)  # the body's cost reports
        auth.close()
    assert og_stack.wait_settled(session)["charged"] == str(used)


async def test_concurrent_async_chats_open_one_session(og_stack: OgStack) -> None:
    """The same race on the async path (``asyncio.gather`` of ``ainvoke``)."""
    with Ledger() as ledger, SigningSpy() as spy:
        auth = og_stack.auth(ledger)
        async with og_stack.client(auth) as og:
            chat = chat_model(og_stack, og)
            answers = await asyncio.gather(*(chat.ainvoke(f"async race {i}") for i in range(4)))
        assert spy.calls == ["sign_typed_data"]
        assert len({a.response_metadata["payment"]["session"] for a in answers}) == 1
        await auth.aclose()


def test_a_history_with_tool_calls_is_sent_and_proven(og_stack: OgStack) -> None:
    """Earlier tool calls and their results (from an agent loop) travel in OpenAI form, and
    the enclave's proof covers them."""
    history = [
        HumanMessage("pay the shop"),
        AIMessage("", tool_calls=[{"name": "pay", "args": {"amount": "1 OPG"}, "id": "c1"}]),
        ToolMessage("paid", tool_call_id="c1"),
        HumanMessage("thanks"),
    ]
    with Ledger() as ledger:
        auth = og_stack.auth(ledger)
        with og_stack.client(auth) as og:
            answer = chat_model(og_stack, og).invoke(history)
        auth.close()
    assert answer.content == "You said: thanks"
    assert answer.response_metadata["tee_proof"]["verified"] is True


class Ledgerbook:
    """A tool with a side effect the tests can watch (stands in for a payment tool)."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def tool(self) -> BaseTool:
        @tool
        def record(to: str, amount: str) -> str:
            """Record a payment of ``amount`` to ``to``."""
            self.entries.append({"to": to, "amount": amount})
            return f"recorded {amount} to {to}"

        return record


def test_bound_tools_are_offered_and_the_proven_call_comes_back(og_stack: OgStack) -> None:
    book = Ledgerbook()
    with Ledger() as ledger:
        auth = og_stack.auth(ledger)
        with og_stack.client(auth) as og:
            chat = chat_model(og_stack, og).bind_tools([book.tool()])
            answer = chat.invoke('record {"to": "shop", "amount": "1 OPG"}')
        auth.close()
    assert isinstance(answer, AIMessage) and answer.content == ""
    (call,) = answer.tool_calls
    assert (call["name"], call["args"]) == ("record", {"to": "shop", "amount": "1 OPG"})
    assert answer.response_metadata["finish_reason"] == "tool_calls"
    assert answer.response_metadata["tee_proof"]["verified"] is True
    assert answer.response_metadata["payment"]["reported_charge_atomic"] > 0
    assert book.entries == []  # the model only asks; the agent loop runs tools


def test_in_langchains_agent_loop_every_model_call_is_paid_and_proven(og_stack: OgStack) -> None:
    book = Ledgerbook()
    with Ledger() as ledger, SigningSpy() as spy:
        auth = og_stack.auth(ledger)
        with og_stack.client(auth) as og:
            agent = create_agent(model=chat_model(og_stack, og), tools=[book.tool()])
            state = agent.invoke(
                {"messages": [HumanMessage('record {"to": "shop", "amount": "1 OPG"}')]}
            )
        auth.close()
    messages = state["messages"]
    assert [m.type for m in messages] == ["human", "ai", "tool", "ai"]
    assert messages[2].content == "recorded 1 OPG to shop"
    assert messages[3].content == 'You said: record {"to": "shop", "amount": "1 OPG"}'
    assert book.entries == [{"to": "shop", "amount": "1 OPG"}]
    assert spy.calls == ["sign_typed_data"]  # both model calls ride one paid session
    for answer in (messages[1], messages[3]):
        assert answer.response_metadata["tee_proof"]["verified"] is True


def test_a_tool_call_rewritten_on_the_wire_never_runs(og_stack: OgStack) -> None:
    """Attack: a relay swaps the arguments of the model's tool call (a payment to the shop
    becomes one to the attacker). The enclave signed the original calls, so the proof fails:
    the agent loop stops with ``ProofError`` and the tool is never run with the forged
    arguments (nor with any). Without the check (shown first) the forged payment runs."""

    def redirect(document: dict[str, Any]) -> None:
        calls = document["choices"][0]["message"].get("tool_calls") or []
        for call in calls:
            call["function"]["arguments"] = json.dumps({"to": "attacker", "amount": "5 OPG"})

    book = Ledgerbook()
    ask = {"messages": [HumanMessage('record {"to": "shop", "amount": "1 OPG"}')]}
    with rewriting_relay(og_stack.url, redirect) as relay, Ledger() as ledger:
        auth = og_stack.auth(ledger)
        with og_stack.client(auth, url=relay, tee_signing_key=None) as blind:  # no proof check
            unverified = ChatOpenGradient(client=blind, model=MODEL, require_proof=False)
            create_agent(model=unverified, tools=[book.tool()]).invoke(ask)
        assert book.entries == [{"to": "attacker", "amount": "5 OPG"}]  # the relay really forges
        book.entries.clear()
        with og_stack.client(auth, url=relay) as og:
            agent = create_agent(model=chat_model(og_stack, og), tools=[book.tool()])
            with pytest.raises(ProofError, match="output"):
                agent.invoke(ask)
        auth.close()
    assert book.entries == []
