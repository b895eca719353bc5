"""LangChain integration for agentguard: guarded tools, a wallet toolkit, a paid chat model."""

__all__: list[str] = []
