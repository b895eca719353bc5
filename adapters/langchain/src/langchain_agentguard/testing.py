"""A scripted tool-calling chat model, so an agent with guarded tools runs without an LLM.

    model = ScriptedChatModel(turns=[
        AIMessage("", tool_calls=[{"name": "transfer", "args": {...}, "id": "1"}]),
        lambda messages: AIMessage(f"I could not: {messages[-1].content}"),
    ])
    agent = create_agent(model, tools)

Each turn is an ``AIMessage`` or a function of the conversation so far that returns one (that
is how a scripted model "reads" a tool result). ``seen`` records what each turn was given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field, SkipValidation

__all__ = ["ScriptedChatModel", "Turn"]

Turn = AIMessage | Callable[[list[BaseMessage]], AIMessage]


class ScriptedChatModel(BaseChatModel):
    """Plays ``turns`` in order; binding tools records their names and changes nothing."""

    turns: Annotated[list[Turn], SkipValidation()]
    seen: list[list[BaseMessage]] = Field(default_factory=list)
    bound: list[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        step = len(self.seen)
        self.seen.append(list(messages))
        if step >= len(self.turns):
            raise IndexError(f"the script has {len(self.turns)} turns; turn {step + 1} was asked")
        turn = self.turns[step]
        message = turn if isinstance(turn, AIMessage) else turn(list(messages))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        self.bound = [t.name if hasattr(t, "name") else str(t) for t in tools]
        return self
