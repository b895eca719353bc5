"""window_cap through the real engine: caps read the gateway's precomputed projected totals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agentguard.policies._testkit import (
    USDC,
    erc20,
    eth,
    evaluate,
    swap,
    unvalued,
    wasm_for,
)

SCHEMA = json.loads((Path(__file__).parent / "params_schema.json").read_text())
EXAMPLE = {
    "window_caps": [
        {"asset": USDC, "window_seconds": 86400, "max_amount": "50000000"},
        {"asset": USDC, "window_seconds": 3600, "max_amount": "10000000"},
    ]
}


def history(day_total: str, hour_total: str) -> dict[str, Any]:
    return {
        "86400": {"count": 1, "spent": {}, "projected": {USDC: day_total}},
        "3600": {"count": 1, "spent": {}, "projected": {USDC: hour_total}},
    }


def test_example_params_match_the_schema() -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(EXAMPLE)


@pytest.mark.parametrize(
    "params",
    [
        {"window_caps": []},
        {"window_caps": [{"asset": USDC, "window_seconds": 0, "max_amount": "1"}]},
        {"window_caps": [{"asset": USDC, "window_seconds": 60, "max_amount": "01"}]},
        {"window_caps": [{"asset": "usdc", "window_seconds": 60, "max_amount": "1"}]},
        {"window_caps": [{"asset": USDC, "window_seconds": 60}]},
    ],
)
def test_schema_refuses_bad_params(params: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate(params)


def test_allows_when_every_projected_total_is_within_its_cap() -> None:
    intent = erc20(1_000_000)
    wasm = wasm_for(intent, history=history("50000000", "10000000"))
    assert evaluate("window_cap", intent, EXAMPLE, wasm).decision == "allow"


def test_denies_when_a_projected_total_passes_its_cap() -> None:
    intent = erc20(1_000_000)
    wasm = wasm_for(intent, history=history("50000001", "10000000"))
    result = evaluate("window_cap", intent, EXAMPLE, wasm)
    assert result.decision == "deny"
    assert result.reasons == (
        f"spending 1000000 of asset {USDC} would bring the 86400 s total to 50000001, "
        "above the window cap max_amount = 50000000",
    )


def test_every_exceeded_window_is_named() -> None:
    intent = erc20(1_000_000)
    wasm = wasm_for(intent, history=history("60000000", "20000000"))
    reasons = evaluate("window_cap", intent, EXAMPLE, wasm).reasons
    assert [r.split(" would bring the ")[1].split(" s total")[0] for r in reasons] == [
        "3600",
        "86400",
    ]


def test_an_asset_no_window_cap_names_is_denied() -> None:
    """Red team: before, a window cap on USDC alone let the vault's ETH leave without limit."""
    result = evaluate("window_cap", eth(10**18), EXAMPLE)
    assert result.reasons == (
        "asset 0x0000000000000000000000000000000000000000 has no entry in window_caps "
        "(and no max_per_tx caps it); denied",
    )


def test_an_asset_no_window_cap_names_is_left_to_max_per_tx() -> None:
    """With max_per_tx configured, tx_cap judges the asset (and denies it without an entry)."""
    params = {**EXAMPLE, "max_per_tx": {"*": "1"}}
    assert evaluate("window_cap", eth(10**18), params, check_schema=False).decision == "allow"
    assert evaluate("agent_spend", eth(10**18), params).decision == "deny"


def test_a_token_action_of_zero_on_an_unnamed_asset_is_denied() -> None:
    """ERC-721 ``transferFrom``/``approve`` share ERC-20's selectors: id 0 reads as amount 0,
    and any id as a small amount; an unnamed collection must not pass a window-caps-only policy."""
    nft = "0x" + "ab" * 20
    for amount in (0, 7):
        result = evaluate("window_cap", erc20(amount, token=nft), EXAMPLE)
        assert result.decision == "deny"
        assert "no entry in window_caps" in result.reasons[0]


def test_moving_nothing_of_an_unnamed_asset_is_no_spend() -> None:
    assert evaluate("window_cap", eth(0), EXAMPLE).decision == "allow"


def test_missing_history_for_a_window_is_denied() -> None:
    intent = erc20(1)
    wasm = wasm_for(intent, history={"86400": {"count": 0, "spent": {}, "projected": {USDC: "1"}}})
    result = evaluate("window_cap", intent, EXAMPLE, wasm)
    assert result.decision == "deny"
    assert result.reasons == ("the gateway sent no spend history for the 3600 s window; denied",)


def test_missing_spend_data_is_denied() -> None:
    wasm = wasm_for(erc20(1))
    wasm["spend"] = None
    result = evaluate("window_cap", erc20(1), EXAMPLE, wasm)
    assert result.reasons == ("the gateway sent no valid spend data (data.wasm.spend); denied",)


def test_without_window_caps_nothing_is_allowed() -> None:
    assert evaluate("window_cap", erc20(1), {}, check_schema=False).reasons == (
        "window_cap: params has no window_caps, so nothing is allowed",
    )


@pytest.mark.parametrize("cap", [1 << 64, 1 << 128, (1 << 256) - 2])
def test_exact_across_huge_totals(cap: int) -> None:
    params = {"window_caps": [{"asset": USDC, "window_seconds": 86400, "max_amount": str(cap)}]}
    intent = erc20(5)
    for total, decision in [(cap, "allow"), (cap + 1, "deny"), (cap - 1, "allow")]:
        wasm = wasm_for(intent, history=history(str(total), "5"))
        assert evaluate("window_cap", intent, params, wasm).decision == decision, (cap, total)


def test_a_function_it_cannot_value_is_denied_unless_listed() -> None:
    """Before issue 7 an unknown call counted as 0 and never touched the window total."""
    result = evaluate("window_cap", swap(), EXAMPLE)
    assert (result.decision, result.reasons) == ("deny", (unvalued(swap()),))
    listed = {**EXAMPLE, "allowed_functions": ["deposit()"]}
    assert evaluate("window_cap", swap(), listed).decision == "allow"
