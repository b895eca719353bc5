"""Offchain calls against the real local stack: the function runs once, only when allowed."""

from __future__ import annotations

import asyncio
import inspect
import threading

import pytest

from agentguard import (
    OFFCHAIN_TARGET,
    AsyncGuard,
    BudgetExceeded,
    ConfigurationError,
    IntentError,
    PolicyDenied,
    call_intent,
)
from agentguard.ledger import Limits, RateCap
from tests.integration.pipeline_trace import PipelineTrace

from .conftest import EMAIL, MAIL_DOMAIN, Stack


def test_an_allowed_call_runs_once_and_is_audited(stack: Stack) -> None:
    guard = stack.guard()
    sent: list[str] = []
    result = guard.run_call(
        "send_email", {"to": "ann@example.com"}, lambda: sent.append("ann") or "queued"
    )
    assert (result, sent) == ("queued", ["ann"])
    assert stack.kinds() == ["authorized", "signed", "committed"]
    authorized = stack.last("authorized")
    intent = call_intent(stack.agent, "send_email", {"to": "ann@example.com"}, chain_id=8453)
    assert authorized["rail"] == "call"
    assert authorized["intent_hash"] == "0x" + intent.intent_hash.hex()
    assert stack.last("committed")["outcome"] == "returned"
    assert stack.ledger.usage(stack.agent, 3600).count == 1
    assert stack.audit.verify().ok


def test_a_call_walks_the_pipeline_and_signs_nothing(stack: Stack) -> None:
    guard = stack.guard()
    with PipelineTrace() as trace:
        guard.run_call("send_email", {"to": "ann@example.com"}, lambda: None)
    assert trace.spy.calls == []
    steps = ["Reserve", "Authorize", "Bind", "Prepare", "Sign", "MarkSigned", "Send", "Commit"]
    assert [s for s in trace.timeline if s in steps] == steps


def test_a_denied_call_never_runs(stack: Stack) -> None:
    guard = stack.guard()
    ran: list[bool] = []
    with pytest.raises(PolicyDenied) as caught:
        guard.run_call("delete_account", {"id": 7}, lambda: ran.append(True))
    assert ran == []
    assert any("delete_account(string)" in r for r in caught.value.reasons)
    assert stack.kinds() == ["denied"]
    assert stack.ledger.usage(stack.agent, 3600).count == 0  # the hold was given back


def test_the_local_cap_refuses_before_the_network_is_asked(stack: Stack) -> None:
    guard = stack.guard(limits=Limits(rate=[RateCap(3600, 1)]))
    ran: list[int] = []
    guard.run_call("send_email", {"to": "a@example.com"}, lambda: ran.append(1))
    with pytest.raises(BudgetExceeded):
        guard.run_call("send_email", {"to": "b@example.com"}, lambda: ran.append(2))
    assert ran == [1] and len(stack.asked) == 1
    assert stack.kinds()[-1] == "refused"


def test_an_exception_from_the_function_is_raised_and_stays_counted(stack: Stack) -> None:
    """The call happened, or partly, or we cannot know: it counts against the rate caps (value
    0), is committed with the exception's type (never its text) and re-raised unchanged."""
    guard = stack.guard()

    def boom() -> None:
        raise RuntimeError("smtp said no, password=hunter2")

    with pytest.raises(RuntimeError, match="smtp said no"):
        guard.run_call("send_email", {"to": "a@example.com"}, boom)
    committed = stack.last("committed")
    assert committed["outcome"] == "raised" and committed["error"] == "RuntimeError"
    assert "hunter2" not in stack.audit.path.read_text()
    assert stack.ledger.usage(stack.agent, 3600).count == 1


def test_the_policy_reads_the_arguments(stack: Stack) -> None:
    """A policy caps an argument: json.unmarshal(input.decoded_function_arguments[0])."""
    guard = stack.guard({"domain": "example.com"}, policy=MAIL_DOMAIN)
    assert guard.run_call("send_email", {"to": "ann@example.com"}, lambda: "ok") == "ok"
    with pytest.raises(PolicyDenied, match=r"recipients must be at example\.com"):
        guard.run_call("send_email", {"to": "ann@evil.example"}, lambda: "sent")


def test_configuration_and_arguments_are_checked_before_anything_is_asked(stack: Stack) -> None:
    guard = stack.guard()
    with pytest.raises(ConfigurationError, match="name="):
        guard.run_call("send email", {}, lambda: None)
    with pytest.raises(IntentError, match="plain JSON"):
        guard.run_call("send_email", {"when": object()}, lambda: None)
    guard.defaults = type(guard.defaults)()  # nothing set
    with pytest.raises(ConfigurationError, match="agent="):
        guard.run_call("send_email", {}, lambda: None)
    with pytest.raises(ConfigurationError, match="ledger="):
        guard.run_call("send_email", {}, lambda: None, agent=stack.agent)
    assert stack.asked == []


def test_decorated_sync_function(stack: Stack) -> None:
    guard = stack.guard()

    @guard.action
    def send_email(to: str, subject: str = "hello") -> str:
        """Send one email."""
        return f"{to}:{subject}"

    assert send_email.__name__ == "send_email" and send_email.__doc__ == "Send one email."
    assert list(inspect.signature(send_email).parameters) == ["to", "subject"]
    assert send_email("a@example.com") == "a@example.com:hello"
    assert send_email(to="a@example.com", subject="hello") == "a@example.com:hello"
    first, second = (e for e in stack.audit.entries() if e.kind == "authorized")
    assert first.record["intent_hash"] == second.record["intent_hash"]  # same intent, both ways

    @guard.action("send_email")
    def other_name(to: str) -> str:
        return to

    assert other_name("b@example.com") == "b@example.com"
    with pytest.raises(ConfigurationError, match="name="):
        guard.action(lambda to: to)  # "<lambda>" is no identifier: refused when decorated


async def test_decorated_async_function_and_async_guard(stack: Stack) -> None:
    guard = stack.guard(cls=AsyncGuard)
    threads: list[int] = []

    @guard.action
    async def send_email(to: str) -> str:
        await asyncio.sleep(0)
        return to

    @guard.action(name="send_email")
    def blocking(to: str) -> str:
        threads.append(threading.get_ident())
        return to.upper()

    assert await send_email("a@example.com") == "a@example.com"
    assert await blocking("b@example.com") == "B@EXAMPLE.COM"
    assert threads and threads[0] != threading.get_ident()  # a sync function runs in a thread
    with pytest.raises(PolicyDenied):
        await guard.run_call("wipe_disk", {}, lambda: None)
    assert await guard.run_call("send_email", {"to": "c@example.com"}, lambda: 3) == 3
    assert stack.kinds().count("committed") == 3
    await guard.aclose()


async def test_an_async_function_on_a_blocking_guard(stack: Stack) -> None:
    guard = stack.guard()

    @guard.action
    async def send_email(to: str) -> str:
        return to

    assert await send_email("a@example.com") == "a@example.com"
    assert stack.kinds() == ["authorized", "signed", "committed"]


def test_a_named_offchain_call_passes_a_recipient_allowlist(stack: Stack) -> None:
    """An offchain call moves nothing and reaches no contract: under offchain_calls it passes
    recipient and contract allowlists that do not list OFFCHAIN_TARGET. The old way (its
    signature in allowed_functions, OFFCHAIN_TARGET in allowed_recipients) no longer allows it:
    allowed_functions does not look at the target, so it would also allow the signature, with
    ETH, on any contract."""
    payee = "0x3333333333333333333333333333333333333333"
    lists = {"allowed_recipients": [payee], "allowed_contracts": [payee]}
    named = stack.guard({"offchain_calls": EMAIL, **lists})
    assert named.run_call("send_email", {"to": "a@example.com"}, lambda: 1) == 1
    old = stack.guard(
        {"allowed_functions": ["send_email(string)"], "allowed_recipients": [OFFCHAIN_TARGET]}
    )
    with pytest.raises(PolicyDenied, match="offchain_calls"):
        old.run_call("send_email", {"to": "a@example.com"}, lambda: None)
