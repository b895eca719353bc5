"""Builders shared by the bundled policies' tests: real intents, the gateway's ``data.wasm``.

``wasm_for`` builds what the reference gateway hands operators for one intent (see
``docs/architecture.md``), so each test states only what it changes.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from agentguard._eip712 import keccak
from agentguard._intent import TransactionIntent
from agentguard.policies import load
from agentguard.policies._engine import Evaluation, PolicyEngine

__all__ = [
    "AGENT",
    "ETH",
    "MONDAY_NOON",
    "PAYEE",
    "ROUTER",
    "USDC",
    "erc20",
    "eth",
    "evaluate",
    "swap",
    "unvalued",
    "wasm_for",
]

USDC = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"  # Base USDC, lowercase as in data.wasm
ETH = "0x0000000000000000000000000000000000000000"
AGENT = "0x1111111111111111111111111111111111111111"
PAYEE = "0x2222222222222222222222222222222222222222"
ROUTER = "0x3333333333333333333333333333333333333333"
MONDAY_NOON = 1763985600  # 2025-11-24 12:00:00 UTC, a Monday

_ENGINE = PolicyEngine()


def erc20(amount: int, *, recipient: str = PAYEE, token: str = USDC) -> TransactionIntent:
    return TransactionIntent.erc20_transfer(
        sender=AGENT, token=token, recipient=recipient, amount=amount, chain_id=8453
    )


def eth(value: int, *, to: str = PAYEE, chain_id: int = 8453) -> TransactionIntent:
    return TransactionIntent.model_validate(
        {"from": AGENT, "to": to, "value": value, "chain_id": chain_id}
    )


def swap(*, to: str = ROUTER) -> TransactionIntent:
    """A contract call that is not a transfer: ``deposit()`` with no value."""
    return TransactionIntent.model_validate(
        {
            "from": AGENT,
            "to": to,
            "data": keccak(b"deposit()")[:4],
            "chain_id": 8453,
            "function_signature": "deposit()",
        }
    )


def unvalued(intent: TransactionIntent) -> str:
    """The reason the value-judging checks give for a function agentguard cannot value."""
    return (
        f"function {intent.function_signature} on {intent.to} is not one agentguard can value "
        "(it may move tokens no cap sees); denied unless allowed_functions lists it "
        "(an offchain call: unless offchain_calls names it)"
    )


def wasm_for(
    intent: TransactionIntent,
    *,
    now: int = MONDAY_NOON,
    approved: bool = False,
    history: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``data.wasm`` as the gateway sends it; ``history`` defaults to no earlier actions."""
    spend = intent.spend.wasm()
    asset, amount = spend["asset"], spend["amount"]
    fresh = {"count": 0, "spent": {}, "projected": {asset: amount}}
    return {
        "now": now,
        "intent_hash": "0x" + intent.intent_hash.hex(),
        "approved": approved,
        "spend": spend,
        "history": copy.deepcopy(history)
        if history is not None
        else {"3600": fresh, "86400": copy.deepcopy(fresh)},
    }


def evaluate(
    name: str,
    intent: TransactionIntent,
    params: dict[str, Any],
    wasm: dict[str, Any] | None = None,
    *,
    check_schema: bool = True,
) -> Evaluation:
    """Evaluate a bundled policy through the real engine (one engine per test session).

    ``check_schema=False`` hands the Rego params its schema would refuse, to test the
    policy's own fail-closed rules behind the engine's schema check.
    """
    policy = load(name)
    if not check_schema:
        policy = dataclasses.replace(policy, params_schema={})
    return _ENGINE.evaluate(
        policy,
        input=intent.parsed(),
        params=params,
        wasm=wasm if wasm is not None else wasm_for(intent),
    )
