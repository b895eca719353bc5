"""LangChain integration for agentguard: guarded tools, a wallet toolkit, a paid chat model.

    from langchain_agentguard import guard_tool
    tools = [guard_tool(t, guard) for t in tools]   # each call authorized first
    agent = create_agent(model, tools)

A refusal becomes the tool's result (``agentguard.explain``): the model reads what was refused,
why and what is allowed, and the agent loop goes on.
"""

from langchain_agentguard._chat import ChatOpenGradient
from langchain_agentguard._refusal import GuardRefused
from langchain_agentguard._tool import GuardedTool, guard_tool
from langchain_agentguard._toolkit import (
    AgentGuardToolkit,
    ContractCallTool,
    PaidFetchTool,
    TransferTool,
    WalletBalanceTool,
)

__all__ = [
    "AgentGuardToolkit",
    "ChatOpenGradient",
    "ContractCallTool",
    "GuardRefused",
    "GuardedTool",
    "PaidFetchTool",
    "TransferTool",
    "WalletBalanceTool",
    "guard_tool",
]
