"""LangChain integration for agentguard: guarded tools, a wallet toolkit, a paid chat model."""

from langchain_agentguard._chat import ChatOpenGradient

__all__: list[str] = ["ChatOpenGradient"]
