"""LangChain's own agent loop (``create_agent``) with a scripted tool-calling model, against the
real chain and the real reference network: a transfer within the cap lands, one over the cap is
refused, the model's next turn reads why, and the loop finishes.
"""

# ruff: noqa: F811 - the fixtures imported from lc_stack are parameters here

from __future__ import annotations

from typing import Any

from langchain.agents import create_agent
from langchain_agentguard import AgentGuardToolkit, guard_tool
from langchain_agentguard.testing import ScriptedChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from lc_stack import (  # noqa: F401 - fixtures are parameters here
    AGENT,
    AGENT_USDC,
    PAYEE,
    Chain,
    asked,
    calls_guard,
    chain,
    network,
    snapshot,
    wallet,
    wallet_guard,
)

from agentguard import Guard
from agentguard.wallet import GuardedWallet


def transfer(amount: str, id_: str) -> AIMessage:
    return AIMessage(
        "", tool_calls=[{"name": "transfer", "args": {"to": PAYEE, "amount": amount}, "id": id_}]
    )


def read_refusal(messages: list[BaseMessage]) -> AIMessage:
    last = messages[-1]
    assert isinstance(last, ToolMessage)
    return AIMessage(f"I could not send it. The wallet said: {last.content}")


def script() -> ScriptedChatModel:
    return ScriptedChatModel(
        turns=[transfer("3 USDC", "t1"), transfer("7 USDC", "t2"), read_refusal]
    )


def check(model: ScriptedChatModel, result: dict[str, Any], chain: Chain) -> None:
    assert chain.balance(PAYEE) == 3_000_000  # the first transfer landed, the second did not
    assert chain.balance(AGENT.address) == AGENT_USDC - 3_000_000
    assert len(model.seen) == 3 and model.bound == ["wallet_balance", "transfer", "contract_call"]
    landed, refused = model.seen[1][-1], model.seen[2][-1]
    assert isinstance(landed, ToolMessage) and landed.status == "success"
    assert landed.content.startswith(f"Sent 3 USDC to {PAYEE}")
    assert isinstance(refused, ToolMessage) and refused.status == "error"
    assert refused.tool_call_id == "t2"
    assert "5 USDC" in refused.content or "5000000" in refused.content  # names the cap
    final = result["messages"][-1]
    assert isinstance(final, AIMessage) and not final.tool_calls
    assert final.content == f"I could not send it. The wallet said: {refused.content}"


def test_create_agent_transfer_then_over_cap(
    wallet_guard: Guard, wallet: GuardedWallet, snapshot: Chain
) -> None:
    model = script()
    tools = AgentGuardToolkit(guard=wallet_guard, wallet=wallet, tokens=snapshot.usdc).get_tools()
    agent = create_agent(model, tools)
    result = agent.invoke({"messages": [HumanMessage("Pay 3 USDC, then 7 USDC, to the payee.")]})
    check(model, result, snapshot)


async def test_create_agent_async(
    wallet_guard: Guard, wallet: GuardedWallet, snapshot: Chain
) -> None:
    model = script()
    tools = AgentGuardToolkit(guard=wallet_guard, wallet=wallet, tokens=snapshot.usdc).get_tools()
    result = await create_agent(model, tools).ainvoke({"messages": [HumanMessage("Pay twice.")]})
    check(model, result, snapshot)


def test_create_agent_with_guarded_custom_tools(calls_guard: Guard) -> None:
    sent: list[str] = []

    @tool
    def send_email(to: str, body: str) -> str:
        """Send an email."""
        sent.append(to)
        return "sent"

    @tool
    def wire_money(iban: str, amount: str) -> str:
        """Wire money to a bank account."""
        sent.append(iban)
        return "wired"

    model = ScriptedChatModel(
        turns=[
            AIMessage(
                "",
                tool_calls=[
                    {
                        "name": "send_email",
                        "args": {"to": "bob@example.com", "body": "hi"},
                        "id": "e1",
                    },
                    {
                        "name": "wire_money",
                        "args": {"iban": "DE00", "amount": "1000 EUR"},
                        "id": "w1",
                    },
                ],
            ),
            lambda messages: AIMessage(" | ".join(str(m.content) for m in messages[-2:])),
        ]
    )
    agent = create_agent(
        model, [guard_tool(send_email, calls_guard), guard_tool(wire_money, calls_guard)]
    )
    result = agent.invoke({"messages": [HumanMessage("email bob and wire the money")]})
    assert sent == ["bob@example.com"]  # the refused tool never ran
    email, wire = model.seen[1][-2:]
    assert isinstance(email, ToolMessage) and (email.content, email.status) == ("sent", "success")
    assert isinstance(wire, ToolMessage) and wire.status == "error"
    assert "wire_money(string)" in wire.content
    assert result["messages"][-1].content == f"sent | {wire.content}"
