"""A LangChain agent whose wallet is guarded by agentguard, on this machine, without an LLM.

A local Base chain (anvil, chain id 8453) with a USD Coin token, a reference authorization
network (gateway + three operators, 2-of-3) whose policy caps each transfer at 5 USDC and allows
only the shop as a recipient, and LangChain's agent loop (``create_agent``) with the
``AgentGuardToolkit`` tools. A scripted model stands in for the LLM: it checks the balance,
pays the shop 3 USDC (lands onchain), then tries 8 USDC (refused: nothing is signed) and reads
the refusal as the tool's result, like any tool output, and answers with it.

    uv run --no-sync python examples/langchain_agent.py
"""

from __future__ import annotations

from typing import Any

from langchain.agents import create_agent
from langchain_agentguard import AgentGuardToolkit
from langchain_agentguard.testing import ScriptedChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from web3 import Web3

from agentguard import Guard, GuardedWallet, Ledger, Limits, Signer, Token
from agentguard.chain import DEV_ACCOUNTS, Anvil, deploy, transact
from agentguard.network.launcher import ReferenceNetwork

OWNER, AGENT, SHOP = DEV_ACCOUNTS[0], DEV_ACCOUNTS[1], DEV_ACCOUNTS[3]
POLICY_CLIENT = "0x00000000000000000000000000000000000A6E17"


def call(name: str, **args: Any) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": f"{name}-{len(args)}"}])


def answer(messages: list[BaseMessage]) -> AIMessage:
    """The model's last turn: it read the refusal as the tool's result."""
    refusal = messages[-1]
    return AIMessage(f"I paid 3 USDC. I could not pay 8 USDC more: {refusal.content}")


def show(message: BaseMessage) -> None:
    if isinstance(message, HumanMessage):
        print(f"user:  {message.content}")
    elif isinstance(message, ToolMessage):
        print(f"tool:  {message.name} [{message.status}] {message.content}")
    elif isinstance(message, AIMessage) and message.tool_calls:
        for tc in message.tool_calls:
            print(f"model: calls {tc['name']}({tc['args']})")
    else:
        print(f"model: {message.content}")


def main() -> None:
    with Anvil() as anvil, ReferenceNetwork(operators=3, threshold_percentage=66) as net:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        contract = deploy(w3, "UsdCoin", sender=OWNER.address)
        transact(w3, contract.functions.mint(AGENT.address, 100 * 10**6), sender=OWNER.address)
        usdc = Token("USDC", contract.address, 6, 8453)  # this chain's USDC, by symbol
        policy_id = net.register_policy_client(
            POLICY_CLIENT,
            "agent_spend",
            {
                "max_per_tx": {usdc.address: str(usdc.atomic("5"))},
                "allowed_recipients": [SHOP.address],
            },
        )
        guard = Guard.connect(
            net.url,
            policy_client=POLICY_CLIENT,
            operators=net.operator_addresses,
            api_key=net.api_key,
            policy_id=policy_id,
        )
        wallet = GuardedWallet(
            signer=Signer.from_key(AGENT.private_key),
            guard=guard,
            web3=w3,
            ledger=Ledger(),
            limits=Limits(),
        )
        tools = AgentGuardToolkit(guard=guard, wallet=wallet, web3=w3, tokens=usdc).get_tools()

        model = ScriptedChatModel(
            turns=[
                call("wallet_balance", symbol="USDC"),
                call("transfer", to=SHOP.address, amount="3 USDC"),
                call("transfer", to=SHOP.address, amount="8 USDC"),
                answer,
            ]
        )
        agent = create_agent(model, tools, system_prompt="You pay the shop for the user.")
        result = agent.invoke({"messages": [HumanMessage("Pay the shop 3 USDC, then 8 more.")]})
        for message in result["messages"]:
            show(message)
        shop = usdc.human(contract.functions.balanceOf(SHOP.address).call())
        print(f"onchain: the shop holds {shop}")


if __name__ == "__main__":
    main()
