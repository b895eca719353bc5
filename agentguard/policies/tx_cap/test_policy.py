"""tx_cap through the real engine, including amounts far past what a double or int64 holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import regopy

from agentguard.policies import Policy
from agentguard.policies._engine import PolicyEngine
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
EXAMPLE = {"max_per_tx": {USDC: "5000000", ETH: "10000000000000000"}}
U256_MAX = (1 << 256) - 1


def test_example_params_match_the_schema() -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(EXAMPLE)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"max_per_tx": {}},
        {"max_per_tx": {USDC: "0100"}},  # leading zero: would break the length comparison
        {"max_per_tx": {USDC: "-1"}},
        {"max_per_tx": {USDC: 100}},  # a number, not a decimal string
        {"max_per_tx": {USDC.upper().replace("0X", "0x"): "1"}},  # keys must be lowercase
        {"max_per_tx": {USDC: "1" * 79}},  # longer than any uint256
        {"max_per_tx": {USDC: "1"}, "other": 1},
    ],
)
def test_schema_refuses_bad_params(params: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate(params)


def test_allows_up_to_the_cap() -> None:
    assert evaluate("tx_cap", erc20(5_000_000), EXAMPLE).decision == "allow"


def test_denies_above_the_cap_naming_amount_and_cap() -> None:
    result = evaluate("tx_cap", erc20(5_000_001), EXAMPLE)
    assert result.decision == "deny"
    assert result.reasons == (
        f"amount 5000001 of asset {USDC} is above the per-transaction cap max_per_tx = 5000000",
    )


def test_eth_uses_the_zero_address_entry() -> None:
    assert evaluate("tx_cap", eth(10**16), EXAMPLE).decision == "allow"
    assert evaluate("tx_cap", eth(10**16 + 1), EXAMPLE).decision == "deny"


def test_unlisted_asset_is_denied() -> None:
    other = "0x4444444444444444444444444444444444444444"
    result = evaluate("tx_cap", erc20(1, token=other), EXAMPLE)
    assert result.decision == "deny"
    assert result.reasons == (
        f"asset {other} has no entry in max_per_tx (and max_per_tx has no * entry); denied",
    )


def test_star_entry_covers_unlisted_assets() -> None:
    other = "0x4444444444444444444444444444444444444444"
    params = {"max_per_tx": {USDC: "5", "*": "7"}}
    assert evaluate("tx_cap", erc20(7, token=other), params).decision == "allow"
    assert evaluate("tx_cap", erc20(8, token=other), params).reasons == (
        f"amount 8 of asset {other} is above the per-transaction cap max_per_tx = 7",
    )


def test_moving_nothing_passes_even_for_an_unlisted_asset() -> None:
    assert evaluate("tx_cap", eth(0), {"max_per_tx": {USDC: "1"}}).decision == "allow"


def test_missing_spend_data_is_denied() -> None:
    wasm = wasm_for(erc20(1))
    del wasm["spend"]
    result = evaluate("tx_cap", erc20(1), EXAMPLE, wasm)
    assert result.decision == "deny"
    assert result.reasons == ("the gateway sent no valid spend data (data.wasm.spend); denied",)


def test_without_max_per_tx_nothing_is_allowed() -> None:
    result = evaluate("tx_cap", erc20(1), {}, check_schema=False)
    assert result.decision == "deny"
    assert result.reasons == ("tx_cap: params has no max_per_tx, so nothing is allowed",)


# -- exactness past 2^64 -------------------------------------------------------------------

BOUNDARIES = [1 << 64, 1 << 128, U256_MAX - 1]


@pytest.mark.parametrize("cap", BOUNDARIES)
@pytest.mark.parametrize(("delta", "decision"), [(-1, "allow"), (0, "allow"), (1, "deny")])
def test_exact_at_and_across_huge_caps(cap: int, delta: int, decision: str) -> None:
    amount = cap + delta
    result = evaluate("tx_cap", erc20(amount), {"max_per_tx": {USDC: str(cap)}})
    assert result.decision == decision, (cap, delta, result.reasons)


def test_exact_at_uint256_max() -> None:
    params = {"max_per_tx": {USDC: str(U256_MAX - 1)}}
    assert evaluate("tx_cap", erc20(U256_MAX), params).decision == "deny"
    params = {"max_per_tx": {USDC: str(U256_MAX)}}
    assert evaluate("tx_cap", erc20(U256_MAX), params).decision == "allow"


def test_shorter_amount_is_smaller_even_when_it_sorts_after() -> None:
    # "9" > "10000000000000000000" as text; the length rule must win.
    assert evaluate("tx_cap", erc20(9), {"max_per_tx": {USDC: str(10**19)}}).decision == "allow"
    assert evaluate("tx_cap", erc20(10**19), {"max_per_tx": {USDC: "9"}}).decision == "deny"


def test_to_number_would_get_it_wrong() -> None:
    """Why amounts are compared as strings: to_number depends on the engine.

    rego-cpp's compiled bundles (what PolicyEngine runs) keep big integers, but the same
    library's query path rounds to a double, as OPA does (and regorus uses i64/f64): there
    ``to_number("18446744073709551617") <= to_number("18446744073709551616")`` holds. A policy
    that must mean the same on every Newton operator cannot rely on it; amount_lte can.
    """
    over = 1 << 64
    rule = f'to_number("{over + 1}") <= to_number("{over}")'
    assert str(regopy.Interpreter().query(f"x := {rule}")) == (
        '{"expressions":[true], "bindings":{"x":true}}'  # wrong: 2^64 + 1 > 2^64
    )
    probe = Policy(
        name="to_number_probe",
        entrypoint="probe.allow",
        modules={
            "probe.rego": (
                "package probe\nimport rego.v1\n"
                "allow if to_number(data.wasm.spend.amount) <= to_number(data.params.cap)\n"
            )
        },
    )
    wasm = wasm_for(erc20(over + 1))
    compiled = PolicyEngine().evaluate(probe, input={}, params={"cap": str(over)}, wasm=wasm)
    assert compiled.decision == "deny"  # exact here, but only in this engine's bundle mode
    exact = evaluate("tx_cap", erc20(over + 1), {"max_per_tx": {USDC: str(over)}}, wasm)
    assert exact.decision == "deny"


def test_a_function_it_cannot_value_is_denied_unless_listed() -> None:
    """Before issue 7 ``deposit()`` (or any unknown call) counted as 0 ETH and passed."""
    result = evaluate("tx_cap", swap(), EXAMPLE)
    assert (result.decision, result.reasons) == ("deny", (unvalued(swap()),))
    listed = {**EXAMPLE, "allowed_functions": ["deposit()"]}
    assert evaluate("tx_cap", swap(), listed).decision == "allow"


def test_a_token_action_of_zero_on_an_uncapped_asset_is_denied() -> None:
    """An ERC-721 ``transferFrom(…, id 0)`` reads as amount 0; it passed before issue 7."""
    other = "0x4444444444444444444444444444444444444444"
    assert evaluate("tx_cap", erc20(0, token=other), EXAMPLE).decision == "deny"


def test_a_spend_without_kind_is_denied() -> None:
    wasm = wasm_for(erc20(1))
    del wasm["spend"]["kind"]
    result = evaluate("tx_cap", erc20(1), EXAMPLE, wasm)
    assert result.reasons == ("the gateway sent no valid spend data (data.wasm.spend); denied",)
