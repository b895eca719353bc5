"""rate_limit through the real engine: earlier attested actions + this one ≤ max_count."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agentguard.policies._testkit import erc20, evaluate, wasm_for

SCHEMA = json.loads((Path(__file__).parent / "params_schema.json").read_text())
EXAMPLE = {
    "rate_limits": [
        {"window_seconds": 3600, "max_count": 10},
        {"window_seconds": 86400, "max_count": 50},
    ]
}


def counts(hour: int, day: int) -> dict[str, Any]:
    return {
        "3600": {"count": hour, "spent": {}, "projected": {}},
        "86400": {"count": day, "spent": {}, "projected": {}},
    }


def test_example_params_match_the_schema() -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(EXAMPLE)


@pytest.mark.parametrize(
    "params",
    [
        {"rate_limits": []},
        {"rate_limits": [{"window_seconds": 3600, "max_count": -1}]},
        {"rate_limits": [{"window_seconds": "3600", "max_count": 1}]},
        {"rate_limits": [{"window_seconds": 3600}]},
    ],
)
def test_schema_refuses_bad_params(params: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate(params)


def test_allows_the_last_action_within_the_limit() -> None:
    intent = erc20(1)
    wasm = wasm_for(intent, history=counts(9, 49))
    assert evaluate("rate_limit", intent, EXAMPLE, wasm).decision == "allow"


def test_denies_once_the_window_is_full() -> None:
    intent = erc20(1)
    result = evaluate("rate_limit", intent, EXAMPLE, wasm_for(intent, history=counts(10, 10)))
    assert result.decision == "deny"
    assert result.reasons == ("10 actions in the last 3600 s already; rate limit max_count = 10",)


def test_max_count_zero_blocks_everything() -> None:
    params = {"rate_limits": [{"window_seconds": 3600, "max_count": 0}]}
    assert evaluate("rate_limit", erc20(1), params).reasons == (
        "0 actions in the last 3600 s already; rate limit max_count = 0",
    )


def test_missing_count_for_a_window_is_denied() -> None:
    intent = erc20(1)
    wasm = wasm_for(intent, history={"3600": {"count": 0, "spent": {}, "projected": {}}})
    assert evaluate("rate_limit", intent, EXAMPLE, wasm).reasons == (
        "the gateway sent no action count for the 86400 s window; denied",
    )


def test_without_rate_limits_nothing_is_allowed() -> None:
    assert evaluate("rate_limit", erc20(1), {}, check_schema=False).reasons == (
        "rate_limit: params has no rate_limits, so nothing is allowed",
    )
