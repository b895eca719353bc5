"""asset_chain_allowlist through the real engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agentguard.policies._testkit import (
    ETH,
    USDC,
    erc20,
    eth,
    evaluate,
    swap,
    unvalued,
    wasm_for,
)

SCHEMA = json.loads((Path(__file__).parent / "params_schema.json").read_text())
EXAMPLE = {"allowed_assets": [USDC, ETH], "allowed_chains": ["8453"]}
OTHER_ASSET = "0x4444444444444444444444444444444444444444"


def test_example_params_match_the_schema() -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(EXAMPLE)


@pytest.mark.parametrize(
    "params",
    [{}, {"allowed_chains": [8453]}, {"allowed_chains": ["0x2105"]}, {"allowed_assets": ["usdc"]}],
)
def test_schema_refuses_bad_params(params: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate(params)


def test_allows_listed_assets_on_listed_chains() -> None:
    assert evaluate("asset_chain_allowlist", erc20(1), EXAMPLE).decision == "allow"
    assert evaluate("asset_chain_allowlist", eth(1), EXAMPLE).decision == "allow"


def test_asset_addresses_compare_case_insensitively() -> None:
    params = {"allowed_assets": [USDC.upper().replace("0X", "0x")]}
    assert evaluate("asset_chain_allowlist", erc20(1), params).decision == "allow"


def test_denies_an_unlisted_asset() -> None:
    result = evaluate("asset_chain_allowlist", erc20(1, token=OTHER_ASSET), EXAMPLE)
    assert result.decision == "deny"
    assert result.reasons == (f"asset {OTHER_ASSET} is not in allowed_assets",)


def test_denies_an_unlisted_chain() -> None:
    result = evaluate("asset_chain_allowlist", eth(1, chain_id=1), EXAMPLE)
    assert result.reasons == ("chain 1 is not in allowed_chains",)


def test_missing_spend_data_is_denied() -> None:
    wasm = wasm_for(erc20(1))
    del wasm["spend"]
    assert evaluate("asset_chain_allowlist", erc20(1), EXAMPLE, wasm).reasons == (
        "the gateway sent no valid spend data (data.wasm.spend); denied",
    )


def test_without_params_nothing_is_allowed() -> None:
    assert evaluate("asset_chain_allowlist", erc20(1), {}, check_schema=False).reasons == (
        "asset_chain_allowlist: params has no allowed_assets or allowed_chains, "
        "so nothing is allowed",
    )


def test_an_unvalued_call_moves_an_unknown_asset_and_is_denied_unless_listed() -> None:
    """Before issue 7 an unknown call counted as ETH, which EXAMPLE allows."""
    result = evaluate("asset_chain_allowlist", swap(), EXAMPLE)
    assert (result.decision, result.reasons) == ("deny", (unvalued(swap()),))
    listed = {**EXAMPLE, "allowed_functions": ["deposit()"]}
    assert evaluate("asset_chain_allowlist", swap(), listed).decision == "allow"
