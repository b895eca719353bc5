"""Red team of the operator engine's decided-output cache (keyed by entrypoint and the exact
query output) and its inline input walker: one engine serving several policies and params,
interleaved and seeded, must answer each exactly as a fresh engine (no cache) answers; a
remembered answer cannot be changed by whoever received it."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from agentguard.policies import load
from agentguard.policies._engine import PolicyEngine
from agentguard.policies._testkit import PAYEE, USDC, erc20, wasm_for

OTHER = "0x" + "5a" * 20
CASES: list[tuple[str, dict[str, Any]]] = [
    ("tx_cap", {"max_per_tx": {USDC.lower(): "1000"}}),
    ("tx_cap", {"max_per_tx": {USDC.lower(): "10"}}),
    ("recipient_list", {"allowed_recipients": [PAYEE]}),
    ("recipient_list", {"denied_recipients": [PAYEE]}),
    ("approval_threshold", {"approval_above": {USDC.lower(): "100"}}),
    ("agent_spend", {"max_per_tx": {USDC.lower(): "1000"}, "allowed_recipients": [PAYEE]}),
    ("agent_spend", {"approval_above": {USDC.lower(): "100"}}),
]


def test_one_engine_for_many_policies_answers_as_fresh_engines() -> None:
    rng = random.Random(9)
    policies = {name: load(name) for name, _ in CASES}
    warm = PolicyEngine()
    seen: set[str] = set()
    for step in range(160):
        name, params = rng.choice(CASES)
        amount = rng.choice([1, 10, 11, 100, 101, 1000, 1001])
        intent = erc20(amount, recipient=rng.choice([PAYEE, OTHER]))
        document, wasm = intent.parsed(), wasm_for(intent)
        policy = policies[name]
        got = warm.evaluate(policy, input=document, params=params, wasm=wasm)
        fresh = PolicyEngine().evaluate(policy, input=document, params=params, wasm=wasm)
        assert got == fresh, (step, name, params, amount)
        seen.add(got.decision)
    assert seen == {"allow", "deny", "approval_required"}
    assert len(warm._decided) >= 2


def test_a_remembered_evaluation_cannot_be_changed_by_its_receiver() -> None:
    engine = PolicyEngine()
    policy, params = load("tx_cap"), {"max_per_tx": {USDC.lower(): "1000"}}
    intent = erc20(5)
    first = engine.evaluate(policy, input=intent.parsed(), params=params, wasm=wasm_for(intent))
    assert first.decision == "allow"
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.decision = "deny"  # type: ignore[misc]
    assert isinstance(first.reasons, tuple)
    big = erc20(5000)
    denied = engine.evaluate(policy, input=big.parsed(), params=params, wasm=wasm_for(big))
    assert denied.decision == "deny"
    again = engine.evaluate(policy, input=intent.parsed(), params=params, wasm=wasm_for(intent))
    assert again == first and again.decision == "allow"
