"""How an agentguard refusal reaches the model: as the tool's result text, never as a crash.

LangChain's convention for "the tool could not do this, tell the model" is a ``ToolException``
that the tool's ``handle_tool_error`` turns into the ``ToolMessage`` content (with
``status="error"``). Every refusal (any ``AgentGuardError``) becomes a ``GuardRefused`` whose
text is ``agentguard.explain(exc)``: what was refused, why, what is allowed. Any other exception
of the wrapped tool keeps the wrapped tool's own handling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from langchain_core.tools import ToolException

import agentguard

__all__ = ["GuardRefused", "ToolErrorHandler", "explain", "handler", "refusals"]

ToolErrorHandler = bool | str | Callable[[ToolException], Any] | None


def explain(exc: BaseException, **units: Any) -> str:
    """``agentguard.explain``: text an LLM can act on; ``units`` (``chain_id``, ``tokens``)
    let it write amounts of a token it would not know otherwise in human units."""
    return str(agentguard.explain(exc, **units))


class GuardRefused(ToolException):
    """agentguard refused the call; ``error`` is the refusal, ``str()`` what the model reads."""

    def __init__(self, error: agentguard.AgentGuardError, **units: Any) -> None:
        self.error = error
        super().__init__(explain(error, **units))


class InnerError(ToolException):
    """The wrapped tool handled its own ``ToolException``: its content, passed on as is."""

    def __init__(self, content: Any) -> None:
        self.content = content
        super().__init__(content if isinstance(content, str) else str(content))


@contextmanager
def refusals(**units: Any) -> Iterator[None]:
    """Turns any agentguard refusal raised inside into a ``GuardRefused``."""
    try:
        yield
    except agentguard.AgentGuardError as exc:
        raise GuardRefused(exc, **units) from exc


def handler(inner: ToolErrorHandler = False) -> Callable[[ToolException], Any]:
    """A ``handle_tool_error`` that shows refusals to the model and treats every other
    ``ToolException`` as ``inner`` (the wrapped tool's own setting) would."""

    def handle(exc: ToolException) -> Any:
        if isinstance(exc, GuardRefused):
            return str(exc)
        if isinstance(exc, InnerError):
            return exc.content
        if not inner:
            raise exc
        if isinstance(inner, str):
            return inner
        if callable(inner):
            return inner(exc)
        return exc.args[0] if exc.args else "Tool execution error"

    return handle
