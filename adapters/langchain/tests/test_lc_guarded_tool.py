"""``guard_tool`` against the real reference network: what the policy sees is exactly what the
wrapped tool receives, and a refusal is the tool's result text, never an exception.
"""

# ruff: noqa: F811 - the fixtures imported from lc_stack are parameters here

from __future__ import annotations

import json
from typing import Annotated, Any

import pytest
from eth_abi.abi import decode as abi_decode
from langchain_agentguard import GuardedTool, guard_tool
from langchain_core.messages import ToolMessage
from langchain_core.tools import (
    BaseTool,
    InjectedToolArg,
    InjectedToolCallId,
    StructuredTool,
    ToolException,
    tool,
)
from lc_stack import (  # noqa: F401 - fixtures are parameters here
    AGENT,
    ALLOWED_CALLS,
    asked,
    calls_guard,
    chain,
    connect,
    network,
    snapshot,
    wallet,
    wallet_guard,
)
from pydantic import BaseModel, Field

from agentguard import AsyncGuard, ConfigurationError, Guard
from agentguard.network.launcher import ReferenceNetwork

OUTBOX: list[dict[str, Any]] = []


@tool
def send_email(to: str, subject: str, cc: list[str] | None = None) -> str:
    """Send an email."""
    OUTBOX.append({"to": to, "subject": subject, "cc": cc})
    return f"sent to {to}"


@tool
def delete_everything(confirm: bool) -> str:
    """Deletes all files."""
    OUTBOX.append({"deleted": confirm})
    return "deleted"


@pytest.fixture(autouse=True)
def _empty_outbox() -> None:
    OUTBOX.clear()


def call(name: str, args: dict[str, Any], id_: str = "call-1") -> dict[str, Any]:
    return {"type": "tool_call", "name": name, "args": args, "id": id_}


def decoded(intent: Any) -> tuple[str, dict[str, Any]]:
    """The function signature and the JSON arguments a policy sees in an offchain-call intent."""
    (text,) = abi_decode(["string"], bytes(intent.data)[4:])
    return intent.function_signature, json.loads(text)


def test_keeps_what_the_model_sees(calls_guard: Guard) -> None:
    guarded = guard_tool(send_email, calls_guard)
    assert isinstance(guarded, GuardedTool)
    assert (guarded.name, guarded.description) == (send_email.name, send_email.description)
    assert (
        guarded.tool_call_schema.model_json_schema()
        == send_email.tool_call_schema.model_json_schema()
    )
    assert guarded.args == send_email.args


def test_allowed_call_runs_with_exactly_the_authorized_arguments(
    calls_guard: Guard, asked: Any
) -> None:
    seen = asked(calls_guard)
    guarded = guard_tool(send_email, calls_guard)
    out = guarded.invoke(call("send_email", {"to": "bob@example.com", "subject": "hi"}))
    assert isinstance(out, ToolMessage)
    assert (out.content, out.status, out.tool_call_id) == (
        "sent to bob@example.com",
        "success",
        "call-1",
    )
    (intent,) = seen
    signature, arguments = decoded(intent)
    assert signature == "send_email(string)"
    assert intent.value == 0 and intent.from_ == AGENT.address
    # defaults are filled in by the schema before the intent: the policy sees what the tool gets
    assert arguments == {"to": "bob@example.com", "subject": "hi", "cc": None}
    assert OUTBOX == [{"to": "bob@example.com", "subject": "hi", "cc": None}]


def test_refusal_is_the_tool_result_and_the_tool_never_runs(calls_guard: Guard) -> None:
    guarded = guard_tool(delete_everything, calls_guard)
    out = guarded.invoke(call("delete_everything", {"confirm": True}))
    assert isinstance(out, ToolMessage) and out.status == "error"
    assert "delete_everything(string)" in str(out.content)  # the policy's reason, named
    assert OUTBOX == []
    # without a tool call id (plain invoke) the refusal text is the return value
    text = guarded.invoke({"confirm": True})
    assert isinstance(text, str) and "delete_everything(string)" in text
    assert OUTBOX == []


async def test_async_with_a_blocking_guard(calls_guard: Guard) -> None:
    guarded = guard_tool(send_email, calls_guard)
    out = await guarded.ainvoke(call("send_email", {"to": "a@b.c", "subject": "s"}))
    assert out.content == "sent to a@b.c"
    refused = await guard_tool(delete_everything, calls_guard).ainvoke(
        call("delete_everything", {"confirm": True})
    )
    assert refused.status == "error" and OUTBOX == [{"to": "a@b.c", "subject": "s", "cc": None}]


async def test_async_guard(network: ReferenceNetwork) -> None:
    guard = connect(network, {"offchain_calls": ALLOWED_CALLS}, AsyncGuard)
    async with guard:
        calls: list[str] = []

        async def lookup(query: str) -> str:
            calls.append(query)
            return f"found {query}"

        guarded = guard_tool(
            StructuredTool.from_function(coroutine=lookup, name="lookup", description="Look up."),
            guard,
        )
        out = await guarded.ainvoke(call("lookup", {"query": "x"}))
        assert out.content == "found x" and calls == ["x"]
        # a sync invoke cannot block on an AsyncGuard: a refusal text, not a crash
        text = guarded.invoke({"query": "y"})
        assert "ainvoke" in text and calls == ["x"]


def test_shadow_runs_a_refused_call(calls_guard: Guard) -> None:
    guarded = guard_tool(delete_everything, calls_guard, shadow=True)
    assert guarded.invoke({"confirm": True}) == "deleted"
    assert OUTBOX == [{"deleted": True}]


def test_name_must_be_an_identifier(calls_guard: Guard) -> None:
    web = StructuredTool.from_function(func=lambda q: q, name="web-search", description="Search.")
    with pytest.raises(ConfigurationError, match="name="):
        guard_tool(web, calls_guard)
    guarded = guard_tool(web, calls_guard, name="lookup")
    assert guarded.name == "web-search"  # the model still sees the tool's own name
    assert guarded.invoke({"q": "cats"}) == "cats"


def test_wrapping_twice_or_a_non_tool_is_refused(calls_guard: Guard) -> None:
    with pytest.raises(ConfigurationError):
        guard_tool(guard_tool(send_email, calls_guard), calls_guard)
    with pytest.raises(ConfigurationError):
        guard_tool(lambda: None, calls_guard)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        guard_tool(send_email, object())  # type: ignore[arg-type]


# -- schemas, injected arguments, artifacts ----------------------------------------------------


class LookupArgs(BaseModel):
    query: str = Field(description="what to look up")
    limit: int = 3


class Lookup(BaseTool):
    """A custom BaseTool subclass with an args_schema and an artifact."""

    name: str = "lookup"
    description: str = "Look something up."
    args_schema: type[BaseModel] = LookupArgs
    response_format: str = "content_and_artifact"  # type: ignore[assignment]
    received: list[dict[str, Any]] = Field(default_factory=list)

    def _run(self, query: str, limit: int = 3, **_: Any) -> tuple[str, dict[str, Any]]:
        self.received.append({"query": query, "limit": limit})
        return f"{limit} results for {query}", {"hits": list(range(limit))}


def test_custom_tool_with_artifact_and_defaults(calls_guard: Guard, asked: Any) -> None:
    seen = asked(calls_guard)
    inner = Lookup()
    guarded = guard_tool(inner, calls_guard)
    assert guarded.response_format == "content_and_artifact"
    out = guarded.invoke(call("lookup", {"query": "cats", "limit": "2"}))
    assert (out.content, out.artifact) == ("2 results for cats", {"hits": [0, 1]})
    # pydantic coerced "2" to 2 before the intent was built; the tool got what was authorized
    assert decoded(seen[0])[1] == {"query": "cats", "limit": 2}
    assert inner.received == [{"query": "cats", "limit": 2}]


def test_a_string_input_names_the_first_field(calls_guard: Guard, asked: Any) -> None:
    seen = asked(calls_guard)
    inner = Lookup(response_format="content")
    # without a tool call the guarded tool returns what the tool returns unwrapped
    assert guard_tool(inner, calls_guard).invoke("dogs") == inner.invoke("dogs")
    assert decoded(seen[0])[1] == {"query": "dogs", "limit": 3}
    assert inner.received == [{"query": "dogs", "limit": 3}] * 2
    # an artifact tool invoked without a tool call: content only, as LangChain does
    assert guard_tool(Lookup(), calls_guard).invoke({"query": "x"}) == Lookup().invoke(
        {"query": "x"}
    )


def test_injected_arguments_reach_the_tool_but_not_the_intent(
    calls_guard: Guard, asked: Any
) -> None:
    seen = asked(calls_guard)
    got: list[tuple[str, str, str]] = []

    @tool
    def lookup(
        query: str,
        user: Annotated[str, InjectedToolArg],
        call_id: Annotated[str, InjectedToolCallId],
    ) -> str:
        """Look up for a user."""
        got.append((query, user, call_id))
        return "ok"

    guarded = guard_tool(lookup, calls_guard)
    assert set(guarded.tool_call_schema.model_fields) == {"query"}
    out = guarded.invoke(call("lookup", {"query": "q", "user": "alice"}, id_="call-7"))
    assert out.content == "ok" and out.tool_call_id == "call-7"
    assert got == [("q", "alice", "call-7")]
    assert decoded(seen[0])[1] == {"query": "q"}


# -- the wrapped tool failing --------------------------------------------------------------------


def test_inner_tool_exception_follows_its_own_handle_tool_error(calls_guard: Guard) -> None:
    def failing(query: str) -> str:
        raise ToolException(f"no results for {query}")

    handled = StructuredTool.from_function(
        func=failing, name="lookup", description="d", handle_tool_error=True
    )
    out = guard_tool(handled, calls_guard).invoke(call("lookup", {"query": "x"}))
    assert (out.content, out.status) == ("no results for x", "error")

    unhandled = StructuredTool.from_function(func=failing, name="lookup", description="d")
    with pytest.raises(ToolException, match="no results for y"):
        guard_tool(unhandled, calls_guard).invoke(call("lookup", {"query": "y"}))


def test_inner_tool_crash_is_not_turned_into_a_refusal(calls_guard: Guard, asked: Any) -> None:
    """The call was authorized and started: its exception is the tool's, shown as LangChain
    shows any tool crash (the real ``run_call`` also keeps it counted, never released)."""
    seen = asked(calls_guard)

    def crash(query: str) -> str:
        raise RuntimeError("backend down")

    with pytest.raises(RuntimeError, match="backend down"):
        guard_tool(
            StructuredTool.from_function(func=crash, name="lookup", description="d"), calls_guard
        ).invoke({"query": "x"})
    assert len(seen) == 1  # authorized exactly once, not retried


def test_shadow_and_approval_timeout_are_passed_to_run_call(
    calls_guard: Guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``shadow`` and ``approval_timeout`` reach ``run_call`` as given."""
    got: list[dict[str, Any]] = []

    def spy(self: Guard, name: str, arguments: Any, fn: Any, **options: Any) -> Any:
        got.append({"name": name, **options})
        return fn()

    monkeypatch.setattr(Guard, "run_call", spy, raising=False)
    guard_tool(send_email, calls_guard, approval_timeout=7.5).invoke({"to": "a", "subject": "s"})
    guard_tool(send_email, calls_guard, shadow=True).invoke({"to": "a", "subject": "s"})
    assert got == [
        {"name": "send_email", "shadow": False, "approval_timeout": 7.5},
        {"name": "send_email", "shadow": True, "approval_timeout": None},
    ]


def test_a_tool_without_arguments(calls_guard: Guard, asked: Any) -> None:
    seen = asked(calls_guard)

    @tool
    def lookup() -> str:
        """Look up the time."""
        return "noon"

    guarded = guard_tool(lookup, calls_guard)
    assert guarded.invoke({}) == "noon"
    assert (
        guarded.invoke({"type": "tool_call", "name": "lookup", "id": "1", "args": {}}).content
        == "noon"
    )
    assert [decoded(i) for i in seen] == [("lookup(string)", {})] * 2


def test_a_guard_without_defaults_is_refused_when_wrapping(calls_guard: Guard) -> None:
    """Without an agent, ledger and limits every call would be refused at run time, where only
    the model reads it; the developer hears it at once instead."""
    from dataclasses import replace

    calls_guard.defaults = replace(calls_guard.defaults, ledger=None, limits=None)
    with pytest.raises(ConfigurationError, match=r"ledger=.*budget="):
        guard_tool(send_email, calls_guard)
