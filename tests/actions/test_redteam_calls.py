"""Attacks on how a call is switched and shaped (shadow flag, generator functions). Each test names
what the attack did before the defence it checks."""

from __future__ import annotations

from typing import Any

import pytest

from agentguard import ConfigurationError, PolicyDenied

from .conftest import Stack


@pytest.mark.parametrize("flag", ["false", "0", "no", 1, [False]])
def test_a_truthy_non_bool_shadow_flag_is_refused_not_obeyed(stack: Stack, flag: Any) -> None:
    """``shadow=`` read from a config file or an environment variable arrives as the text
    "false" (or "0"). Before the fix any truthy value switched shadow mode on, so the denied
    ``delete_account`` call ran with nothing enforced and nothing held."""
    guard = stack.guard()
    ran: list[bool] = []
    with pytest.raises(ConfigurationError, match="shadow"):
        guard.run_call("delete_account", {"id": 7}, lambda: ran.append(True), shadow=flag)
    with pytest.raises(ConfigurationError, match="shadow"):
        guard.action(shadow=flag)  # refused when decorating, before any call

    assert ran == [] and stack.asked == []
    with pytest.raises(PolicyDenied):  # shadow=False is the enforced call
        guard.run_call("delete_account", {"id": 7}, lambda: ran.append(True), shadow=False)
    assert ran == []


def test_a_generator_function_cannot_be_authorized_now_and_run_later(stack: Stack) -> None:
    """A decorated generator (or async generator) function: calling it only builds the
    generator, so the pipeline authorized, used up the attestation and committed
    ``outcome: returned`` while the body had not run; the body then ran whenever the
    generator was iterated (after the attestation expired, outside a time-window policy's
    hours, with no audit record of how it ended). Before the fix decorating it was accepted;
    now it is a ConfigurationError when decorating."""
    guard = stack.guard()

    def send_email(to: str) -> Any:
        yield to

    async def send_emails(to: str) -> Any:
        yield to

    for fn in (send_email, send_emails):
        with pytest.raises(ConfigurationError, match="generator"):
            guard.action(fn)
    assert stack.asked == []


def test_run_call_can_hand_the_function_what_was_authorized(stack: Stack) -> None:
    """``guard.run_call("send_email", message, lambda: smtp.send(message))``: the closure
    reads the caller's dict, which another thread edits right after the attestation came back.
    Before the fix run_call had no way to give ``fn`` the frozen copy that was hashed (the docs
    said it did), so the mail went to eve under ann's attestation. Now a function taking one
    argument receives that copy; a zero-argument ``fn`` still works and is told apart by its
    signature."""
    guard = stack.guard()
    message: dict[str, Any] = {"to": "ann@example.com"}
    original = guard.authorizer.authorize

    def authorize_then_edit(intent: Any, **kw: Any) -> Any:
        attestation = original(intent, **kw)
        message["to"] = "eve@evil.example"
        return attestation

    guard.authorizer.authorize = authorize_then_edit
    got: list[Any] = []
    guard.run_call("send_email", message, lambda authorized: got.append(authorized["to"]))
    assert got == ["ann@example.com"] and message["to"] == "eve@evil.example"
    assert guard.run_call("send_email", {"to": "bob@example.com"}, lambda: "old form") == (
        "old form"
    )


async def test_async_run_call_hands_the_frozen_copy_too(stack: Stack) -> None:
    from agentguard import AsyncGuard

    guard = stack.guard(cls=AsyncGuard)
    got: list[Any] = []

    async def send(authorized: dict[str, Any]) -> str:
        got.append(authorized)
        return "sent"

    assert await guard.run_call("send_email", {"to": "ann@example.com"}, send) == "sent"
    assert got == [{"to": "ann@example.com"}]
