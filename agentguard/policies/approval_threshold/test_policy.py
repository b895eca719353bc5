"""approval_threshold through the real engine: above the threshold a human must approve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agentguard.policies._testkit import ETH, ROUTER, USDC, erc20, eth, evaluate, swap, wasm_for

SCHEMA = json.loads((Path(__file__).parent / "params_schema.json").read_text())
EXAMPLE = {"approval_above": {USDC: "100000000", ETH: "50000000000000000"}}


def test_example_params_match_the_schema() -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(EXAMPLE)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"approval_above": {}},
        {"approval_above": {USDC: "1.5"}},
        {"approval_above": {"eth": "1"}},
    ],
)
def test_schema_refuses_bad_params(params: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate(params)


def test_at_the_threshold_no_human_is_needed() -> None:
    assert evaluate("approval_threshold", erc20(100_000_000), EXAMPLE).decision == "allow"


def test_above_the_threshold_a_human_must_approve() -> None:
    result = evaluate("approval_threshold", erc20(100_000_001), EXAMPLE)
    assert result.decision == "approval_required"
    assert result.reasons == (
        f"amount 100000001 of asset {USDC} is above the approval threshold "
        "approval_above = 100000000; a human must approve this exact intent",
    )


def test_an_approved_intent_is_allowed() -> None:
    intent = erc20(100_000_001)
    wasm = wasm_for(intent, approved=True)
    assert evaluate("approval_threshold", intent, EXAMPLE, wasm).decision == "allow"


def test_assets_without_a_threshold_need_no_human_unless_star() -> None:
    other = "0x4444444444444444444444444444444444444444"
    assert evaluate("approval_threshold", erc20(10**30, token=other), EXAMPLE).decision == "allow"
    params = {"approval_above": {"*": "10"}}
    assert evaluate("approval_threshold", erc20(11, token=other), params).decision == (
        "approval_required"
    )


def test_eth_threshold_across_2_pow_64() -> None:
    params = {"approval_above": {ETH: str(1 << 64)}}
    assert evaluate("approval_threshold", eth(1 << 64), params).decision == "allow"
    assert evaluate("approval_threshold", eth((1 << 64) + 1), params).decision == (
        "approval_required"
    )


def test_missing_spend_data_is_denied() -> None:
    wasm = wasm_for(erc20(1))
    del wasm["spend"]
    result = evaluate("approval_threshold", erc20(1), EXAMPLE, wasm)
    assert result.decision == "deny"
    assert result.reasons == ("the gateway sent no valid spend data (data.wasm.spend); denied",)


def test_without_approval_above_nothing_is_allowed() -> None:
    assert evaluate("approval_threshold", erc20(1), {}, check_schema=False).reasons == (
        "approval_threshold: params has no approval_above, so nothing is allowed",
    )


def test_an_unvalued_call_needs_a_human_unless_listed() -> None:
    result = evaluate("approval_threshold", swap(), EXAMPLE)
    assert result.decision == "approval_required"
    assert result.reasons == (
        f"function deposit() on {ROUTER} is not one agentguard can value (it may move tokens "
        "no cap sees); a human must approve this exact intent unless allowed_functions lists it "
        "(an offchain call: unless offchain_calls names it)",
    )
    assert (
        evaluate("approval_threshold", swap(), EXAMPLE, wasm_for(swap(), approved=True)).decision
        == "allow"
    )
    listed = {**EXAMPLE, "allowed_functions": ["deposit()"]}
    assert evaluate("approval_threshold", swap(), listed).decision == "allow"
