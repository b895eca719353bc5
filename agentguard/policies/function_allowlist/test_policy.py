"""function_allowlist through the real engine: signatures the operator decoded itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agentguard.policies._testkit import PAYEE, ROUTER, USDC, erc20, eth, evaluate, swap

SCHEMA = json.loads((Path(__file__).parent / "params_schema.json").read_text())
EXAMPLE = {"allowed_functions": ["transfer(address,uint256)"], "allow_plain_transfers": True}


def test_example_params_match_the_schema() -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(EXAMPLE)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"allowed_functions": ["transfer(address, uint256)"]},  # not canonical
        {"allowed_functions": ["function transfer(address,uint256)"]},
        {"allowed_functions": ["0xa9059cbb"]},
        {"allow_plain_transfers": "yes"},
    ],
)
def test_schema_refuses_bad_params(params: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate(params)


def test_allows_a_listed_function_and_plain_transfers() -> None:
    assert evaluate("function_allowlist", erc20(1), EXAMPLE).decision == "allow"
    assert evaluate("function_allowlist", eth(1), EXAMPLE).decision == "allow"


def test_denies_an_unlisted_function() -> None:
    result = evaluate("function_allowlist", swap(), EXAMPLE)
    assert result.decision == "deny"
    assert result.reasons == (f"function deposit() on {ROUTER} is not in allowed_functions",)


def test_plain_transfers_need_the_flag() -> None:
    params = {"allowed_functions": ["transfer(address,uint256)"]}
    result = evaluate("function_allowlist", eth(1), params)
    assert result.decision == "deny"
    assert result.reasons == (
        f"plain transfer to {PAYEE} is not allowed (allow_plain_transfers is not true)",
    )


def test_plain_transfers_only_blocks_every_call() -> None:
    params = {"allow_plain_transfers": True}
    assert evaluate("function_allowlist", eth(1), params).decision == "allow"
    checksummed = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
    assert checksummed.lower() == USDC
    assert evaluate("function_allowlist", erc20(1), params).reasons == (
        f"function transfer(address,uint256) on {checksummed} is not in allowed_functions",
    )


def test_without_params_nothing_is_allowed() -> None:
    assert evaluate("function_allowlist", eth(1), {}, check_schema=False).reasons == (
        "function_allowlist: params has no allowed_functions, allow_plain_transfers or "
        "offchain_calls, "
        "so nothing is allowed",
    )
