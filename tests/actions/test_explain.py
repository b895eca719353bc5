"""``explain(exc)``: what was refused, why, and what to do, for every refusal an agent can meet."""

from __future__ import annotations

import time

import pytest

from agentguard import (
    AgentGuardError,
    ApprovalRequired,
    AttestationReplayed,
    BudgetExceeded,
    ConfigurationError,
    GatewayUnavailable,
    IntentError,
    IntentMismatch,
    OutcomeUnknown,
    PaymentRejected,
    PaymentRequiredError,
    PolicyDenied,
    QuorumNotReached,
    Spend,
    TransactionReverted,
    explain,
)
from agentguard._redact import register_secret
from agentguard.ledger import Ledger, Limits, RateCap, WindowCap

from .conftest import Stack

USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
KEY = "0x" + "5e" * 32


def test_a_real_policy_deny_names_the_reasons(stack: Stack) -> None:
    guard = stack.guard()
    with pytest.raises(PolicyDenied) as caught:
        guard.run_call("delete_account", {"id": 1}, lambda: None)
    text = explain(caught.value)
    assert text.startswith("REFUSED by policy")
    assert "delete_account(string)" in text and "Do not retry the same call" in text


def test_a_real_budget_refusal_is_in_human_units() -> None:
    ledger = Ledger()
    limits = Limits(windows=[WindowCap(USDC, 86400, 5_000_000)])
    spend = Spend(asset=USDC, amount=3_000_000, recipient=USDC, kind="transfer")
    ledger.reserve("0x" + "11" * 20, spend, key="a", expires_at=time.time() + 60, limits=limits)
    with pytest.raises(BudgetExceeded) as caught:
        ledger.reserve("0x" + "11" * 20, spend, key="b", expires_at=time.time() + 60, limits=limits)
    text = explain(caught.value)
    assert "Cap: 5 USDC per day; already used: 3 USDC; this call needs: 3 USDC." in text
    assert "fits again at" in text


def test_a_per_call_refusal_never_advises_splitting() -> None:
    """A per-call cap is not a window: nothing is "used", and the model must not be told to
    split the payment into pieces under the cap (that is how a per-call cap is evaded)."""
    ledger, limits = Ledger(), Limits(per_tx={USDC: 5_000_000})
    spend = Spend(asset=USDC, amount=8_000_000, recipient=USDC, kind="transfer")
    with pytest.raises(BudgetExceeded) as caught:
        ledger.reserve("0x" + "11" * 20, spend, key="a", expires_at=time.time() + 60, limits=limits)
    text = explain(caught.value)
    assert "Cap per call: 5 USDC; this call needs: 8 USDC." in text
    assert "already used" not in text
    assert "do not split it" in text and "(or split it)" not in text


def test_a_rate_cap_refusal_counts_actions() -> None:
    ledger, limits = Ledger(), Limits(rate=[RateCap(60, 1)])
    spend = Spend(asset="0x" + "00" * 20, amount=0, recipient=USDC, kind="unknown_call")
    ledger.reserve("0x" + "11" * 20, spend, key="a", expires_at=time.time() + 60, limits=limits)
    with pytest.raises(BudgetExceeded) as caught:
        ledger.reserve("0x" + "11" * 20, spend, key="b", expires_at=time.time() + 60, limits=limits)
    assert "local actions budget" in explain(caught.value)
    assert "Cap: 1 per minute; already used: 1; this call needs: 1." in explain(caught.value)


def test_a_cap_that_never_fits_says_so() -> None:
    exc = BudgetExceeded("too big", cap=5, used=0, requested=9, retry_at=None, asset=USDC)
    assert "never fit" in explain(exc) and "0.000009 USDC" in explain(exc)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            ApprovalRequired("needs a human", reasons=["above 100 USDC"], intent_hash="0xabc"),
            ["WAITING FOR A HUMAN", "above 100 USDC", "0xabc", "retry the very same call"],
        ),
        (GatewayUnavailable("timed out"), ["temporary", "Retry later"]),
        (QuorumNotReached("1 of 3 answered"), ["Retry later"]),
        (IntentMismatch("another intent"), ["could not be verified", "Do not retry"]),
        (AttestationReplayed("used once"), ["Do not retry"]),
        (IntentError("to is not an address"), ["malformed", "Fix the arguments"]),
        (ConfigurationError("no ledger"), ["A human must fix", "do not retry"]),
        (OutcomeUnknown("no answer"), ["Do NOT repeat"]),
        (PaymentRejected("402 again", reason="expired"), ["No second payment"]),
        (PaymentRequiredError("nothing payable"), ["Nothing was paid"]),
        (TransactionReverted("reverted", reason="paused"), ["contract refused", "paused"]),
        (AgentGuardError("something else"), ["NOT DONE: something else"]),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else "",
)
def test_every_refusal_says_what_to_do(exc: AgentGuardError, expected: list[str]) -> None:
    text = explain(exc)
    for part in expected:
        assert part in text, (part, text)


def test_a_foreign_exception_is_described_by_its_type_only() -> None:
    text = explain(ValueError(f"private key {KEY} rejected"))
    assert "ValueError" in text and KEY not in text and "5e5e" not in text


def test_secrets_are_masked_and_never_echoed_more_than_the_message_does() -> None:
    register_secret("sk-live-agentguard-test-9f8e7d")
    exc = IntentError("header Bearer abc.def.ghi and key sk-live-agentguard-test-9f8e7d refused")
    text = explain(exc)
    assert "abc.def.ghi" not in text and "sk-live-agentguard-test-9f8e7d" not in text
    with_key = PolicyDenied("denied", reasons=[f"raw {KEY}"])
    assert explain(with_key).count(KEY) <= with_key.message.count(KEY)
