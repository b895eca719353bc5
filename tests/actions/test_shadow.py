"""Shadow mode: evaluate, record and log the would-be decision, never block."""

from __future__ import annotations

import logging

import pytest

from agentguard import AsyncGuard, ConfigurationError, IntentError, call_intent

from .conftest import Stack, dead_guard

DECISION_FIELDS = {"decision", "reasons", "intent", "intent_hash", "policy"}


def test_shadow_lets_a_denied_call_run_and_records_the_deny(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    guard = stack.guard()
    ran: list[bool] = []
    with caplog.at_level(logging.INFO, logger="agentguard.actions"):
        guard.run_call("delete_account", {"id": 7}, lambda: ran.append(True), shadow=True)
    assert ran == [True]
    assert stack.kinds() == ["shadow"]  # nothing held, authorized or committed
    record = stack.last("shadow")
    assert set(record) >= DECISION_FIELDS
    intent = call_intent(stack.agent, "delete_account", {"id": 7}, chain_id=8453)
    assert record["decision"] == "deny" and record["intent"] == intent.wire()
    assert record["intent_hash"] == "0x" + intent.intent_hash.hex()
    assert any("delete_account(string)" in r for r in record["reasons"])
    assert record["policy"] == stack.network.policy_clients[guard.verifier.policy_client]
    assert stack.ledger.usage(stack.agent, 3600).count == 0
    assert "shadow decision" in caplog.text and "deny" in caplog.text


def test_shadow_records_an_allow(stack: Stack) -> None:
    guard = stack.guard()

    @guard.action(shadow=True)
    def send_email(to: str) -> str:
        return to

    assert send_email("a@example.com") == "a@example.com"
    assert stack.last("shadow")["decision"] == "allow"
    assert stack.asked == []  # simulated only: no task, no attestation


def test_a_gateway_failure_in_shadow_mode_is_recorded_and_never_blocks(stack: Stack) -> None:
    guard = dead_guard(stack)
    assert guard.run_call("send_email", {"to": "a"}, lambda: "sent", shadow=True) == "sent"
    record = stack.last("shadow")
    assert record["decision"] == "unknown" and record["error"] == "GatewayUnavailable"


def test_shadow_still_refuses_arguments_that_have_no_intent(stack: Stack) -> None:
    guard = stack.guard()
    with pytest.raises(IntentError):
        guard.run_call("send_email", {"x": {1, 2}}, lambda: None, shadow=True)


async def test_async_shadow(stack: Stack) -> None:
    guard = stack.guard(cls=AsyncGuard)

    @guard.action(shadow=True)
    async def wipe_disk() -> str:
        return "wiped"

    assert await wipe_disk() == "wiped"
    assert stack.last("shadow")["decision"] == "deny"
    await guard.aclose()


def test_shadow_is_refused_for_anything_that_would_be_signed(stack: Stack) -> None:
    """Shadow on the intent form would sign and send a transaction no policy allowed."""
    guard = stack.guard()
    with pytest.raises(ConfigurationError, match="never signs anything without an attestation"):
        guard.action(wallet=object(), shadow=True)  # type: ignore[arg-type]
