"""``guard_tool``: any LangChain tool, each call authorized by agentguard before it runs.

    guarded = guard_tool(send_email, guard)      # same name, description and args schema
    agent = create_agent(model, [guarded])

A call is validated by the tool's own args schema first. Every argument the tool would receive
except the injected ones (``InjectedToolArg``, ``InjectedToolCallId``, ``ToolRuntime``: supplied
by LangChain, not the model) is frozen into plain JSON; that exact JSON is what the policy sees
(``guard.run_call(name, arguments, fn)``) and a fresh decode of it is what the wrapped tool is
invoked with (a schema that would not read that JSON back unchanged, e.g. by alias, is
refused). A refusal is the tool's result text (``agentguard.explain``), never a crash.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.messages import ToolCall, ToolMessage
from langchain_core.messages.tool import ToolOutputMixin
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import patch_config
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

from agentguard import AsyncGuard, ConfigurationError, Guard, IntentError
from langchain_agentguard._refusal import InnerError, handler, refusals

__all__ = ["GuardedTool", "guard_tool"]

_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]{0,127}\Z")
_CALL_ID = "__agentguard_tool_call_id__"
"""Where ``_to_args_and_kwargs`` hands ``_run`` the tool call's id (set after validation, so a
model cannot supply it)."""


def _visible_fields(tool: BaseTool) -> frozenset[str]:
    """The argument names the model supplies (``tool_call_schema`` leaves out injected ones)."""
    schema = tool.tool_call_schema
    if isinstance(schema, dict):
        return frozenset(schema.get("properties", {}))
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return frozenset(schema.model_fields)
    return frozenset(getattr(schema, "__fields__", {}))  # a pydantic.v1 model


class GuardedTool(BaseTool):
    """A tool whose every call goes through ``guard.run_call`` first.

    ``action`` is the name the policy sees (listed in its params' ``offchain_calls``);
    it defaults to the tool's name. ``shadow=True`` evaluates and records but never blocks.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: BaseTool = Field(exclude=True)
    guard: Guard | AsyncGuard = Field(exclude=True, repr=False)
    action: str
    shadow: bool = False
    approval_timeout: float | None = None

    @functools.cached_property
    def _injected_args_keys(self) -> frozenset[str]:
        # the wrapped tool's injected parameters (e.g. ``runtime: ToolRuntime``) pass through
        return frozenset(getattr(self.inner, "_injected_args_keys", frozenset()))

    def _to_args_and_kwargs(
        self, tool_input: str | dict[str, Any], tool_call_id: str | None
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args, kwargs = super()._to_args_and_kwargs(tool_input, tool_call_id)
        return args, {**kwargs, _CALL_ID: tool_call_id}

    # -- the call -----------------------------------------------------------------------------

    def _split(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], call_id: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        """``(frozen JSON of the model's arguments, injected arguments)``."""
        fields = self._schema_fields()
        if args:  # a string input (``tool.invoke("text")``) is the schema's first field
            if len(args) != 1 or not fields:
                raise IntentError(f"{self.name} takes named arguments")
            parsed = self._parse_input({fields[0]: args[0]}, None)  # defaults filled in
            kwargs = {**(parsed if isinstance(parsed, dict) else {}), **kwargs}
        # injected: what LangChain (not the model) supplies; everything else the tool gets,
        # declared or not (an ``extra="allow"`` schema, a JSON schema), is in the intent
        injected_names = self._injected_args_keys | (set(fields) - _visible_fields(self.inner))
        model = {k: v for k, v in kwargs.items() if k not in injected_names}
        injected = {k: v for k, v in kwargs.items() if k in injected_names}
        frozen = self._freeze(model)
        # the wrapped tool validates the frozen JSON again: it must read back the very same
        # arguments (an alias, or a validator that is not idempotent, would not)
        again = self.inner._parse_input({**json.loads(frozen), **injected}, call_id)
        if not isinstance(again, dict) or frozen != self._freeze(
            {k: v for k, v in again.items() if k not in injected_names}
        ):
            raise IntentError(
                f"the args schema of {self.name} does not read its own validated arguments back "
                "unchanged (a field alias or a validator that changes its output), so the tool "
                "would run with other arguments than the policy saw; fix the tool's schema"
            )
        return frozen, injected

    def _freeze(self, model: Mapping[str, Any]) -> str:
        try:
            return json.dumps(to_jsonable_python(model), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise IntentError(f"the arguments of {self.name} are not plain JSON: {exc}") from None

    def _schema_fields(self) -> list[str]:
        """The args schema's fields in order (injected ones included)."""
        schema = self.args_schema
        if isinstance(schema, dict):
            return list(schema.get("properties", {}))
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            return list(schema.model_fields)
        return list(getattr(schema, "__fields__", {}))  # a pydantic.v1 model

    def _call(
        self, frozen: str, injected: Mapping[str, Any], call_id: str | None
    ) -> ToolCall | dict[str, Any]:
        """What the wrapped tool is invoked with: a fresh decode of the authorized JSON; as a
        tool call when there is one (so its artifact and error status come back in a
        ``ToolMessage``), else as plain arguments (so it returns what it would unwrapped)."""
        args = {**json.loads(frozen), **injected}
        if call_id is None:
            return args
        return ToolCall(name=self.inner.name, args=args, id=call_id, type="tool_call")

    def _options(self) -> dict[str, Any]:
        return {"shadow": self.shadow, "approval_timeout": self.approval_timeout}

    def _result(self, output: Any) -> Any:
        """The wrapped tool's ``ToolMessage`` back into what this tool's ``_run`` returns."""
        if isinstance(output, ToolMessage):
            if output.status == "error":
                raise InnerError(output.content)
            if self.response_format == "content_and_artifact":
                return output.content, output.artifact
            return output.content
        if self.response_format == "content_and_artifact" and not isinstance(
            output, ToolOutputMixin
        ):  # no tool call: the wrapped tool returned its content only (LangChain drops the
            return output, None  # artifact then), and so does this tool's ``run``
        return output  # e.g. a langgraph Command: passed on as is

    def _prepare(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        config: RunnableConfig,
        run_manager: CallbackManagerForToolRun | AsyncCallbackManagerForToolRun | None,
    ) -> tuple[dict[str, Any], Callable[[], ToolCall | dict[str, Any]], RunnableConfig]:
        """``(arguments to authorize, the wrapped tool's input, its config)``."""
        call_id = kwargs.pop(_CALL_ID, None)
        frozen, injected = self._split(args, kwargs, call_id)
        return (
            json.loads(frozen),
            lambda: self._call(frozen, injected, call_id),
            _child(config, run_manager),
        )

    def _run(
        self,
        *args: Any,
        config: RunnableConfig,
        run_manager: CallbackManagerForToolRun | None = None,
        **kwargs: Any,
    ) -> Any:
        with refusals():
            if not isinstance(self.guard, Guard):
                raise ConfigurationError(
                    f"{self.name} is guarded by an AsyncGuard; invoke it with ainvoke"
                )
            arguments, tool_input, child = self._prepare(args, kwargs, config, run_manager)
            output = self.guard.run_call(
                self.action,
                arguments,
                lambda: self.inner.invoke(tool_input(), child),
                **self._options(),
            )
        return self._result(output)

    async def _arun(
        self,
        *args: Any,
        config: RunnableConfig,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
        **kwargs: Any,
    ) -> Any:
        with refusals():
            arguments, tool_input, child = self._prepare(args, kwargs, config, run_manager)
            guard = self.guard
            if isinstance(guard, AsyncGuard):

                async def call() -> Any:  # a coroutine function: run_call awaits it in the loop
                    return await self.inner.ainvoke(tool_input(), child)

                output = await guard.run_call(self.action, arguments, call, **self._options())
            else:  # a blocking Guard: authorize and run the tool's sync path in a worker thread
                sync_guard = guard
                output = await asyncio.to_thread(
                    lambda: sync_guard.run_call(
                        self.action,
                        arguments,
                        lambda: self.inner.invoke(tool_input(), child),
                        **self._options(),
                    )
                )
        return self._result(output)


def _child(
    config: RunnableConfig,
    run_manager: CallbackManagerForToolRun | AsyncCallbackManagerForToolRun | None,
) -> RunnableConfig:
    """The wrapped tool runs as a child of this tool's run (its callbacks, not a new trace)."""
    if run_manager is None:
        return config
    return patch_config(config, callbacks=run_manager.get_child())


def guard_tool(
    tool: BaseTool,
    guard: Guard | AsyncGuard,
    *,
    shadow: bool = False,
    approval_timeout: float | None = None,
    name: str | None = None,
) -> GuardedTool:
    """``tool`` with every call authorized by ``guard`` first (same name, description, schema).

    ``name``: the action name the policy sees, when the tool's own name is not a Solidity
    identifier (``"web-search"`` → ``name="web_search"``); the bundled policies allow it when
    their params' ``offchain_calls`` lists that name.
    """
    if not isinstance(tool, BaseTool):
        raise ConfigurationError(f"guard_tool wraps a LangChain BaseTool, got {type(tool)!r}")
    if isinstance(tool, GuardedTool):
        raise ConfigurationError(f"{tool.name} is already guarded")
    if not isinstance(guard, Guard | AsyncGuard):
        raise ConfigurationError("guard_tool needs an agentguard Guard or AsyncGuard")
    defaults = guard.defaults
    missing = [
        what
        for what, value in (
            ("signer= or vault= (whose call it is)", defaults.agent),
            ("ledger=", defaults.ledger),
            ("budget= (or limits)", defaults.limits),
        )
        if value is None
    ]
    if missing:  # else every call would be refused at run time, and only the model would know
        raise ConfigurationError(
            f"guard_tool needs a guard whose defaults have {', '.join(missing)}: "
            "Guard.connect(..., signer=, ledger=, budget=) or Guard.from_env()"
        )
    action = tool.name if name is None else name
    if not isinstance(action, str) or not _IDENTIFIER.match(action):
        raise ConfigurationError(
            f"name={action!r:.80} is not a Solidity identifier (letters, digits, _ and $); "
            "pass name= with the action name policies list as 'name(string)'"
        )
    return GuardedTool(
        name=tool.name,
        description=tool.description,
        args_schema=tool.args_schema or tool.get_input_schema(),
        return_direct=tool.return_direct,
        response_format=tool.response_format,
        tags=tool.tags,
        metadata=tool.metadata,
        handle_tool_error=handler(tool.handle_tool_error),
        handle_validation_error=tool.handle_validation_error,
        inner=tool,
        guard=guard,
        action=action,
        shadow=shadow,
        approval_timeout=approval_timeout,
    )
