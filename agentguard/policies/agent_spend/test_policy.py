"""agent_spend: every bundled check, each active only when its params key is present."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agentguard.policies import bundled, load
from agentguard.policies._engine import PolicyEngine, PolicyEngineError
from agentguard.policies._testkit import (
    ETH,
    MONDAY_NOON,
    PAYEE,
    ROUTER,
    USDC,
    erc20,
    eth,
    evaluate,
    swap,
    unvalued,
    wasm_for,
)

SCHEMA = json.loads((Path(__file__).parent / "params_schema.json").read_text())
EXAMPLE: dict[str, Any] = {
    "max_per_tx": {USDC: "100000000", ETH: "50000000000000000"},
    "window_caps": [{"asset": USDC, "window_seconds": 86400, "max_amount": "500000000"}],
    "rate_limits": [{"window_seconds": 3600, "max_count": 20}],
    "allowed_recipients": [PAYEE],
    "allowed_functions": ["transfer(address,uint256)"],
    "allow_plain_transfers": True,
    "allowed_assets": [USDC, ETH],
    "allowed_chains": ["8453"],
    "time_windows": [
        {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "20:00"}
    ],
    "approval_above": {USDC: "25000000"},
}
PARTS = [n for n in bundled() if n != "agent_spend"]


def test_example_params_match_the_schema() -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(EXAMPLE)


def test_schema_is_the_union_of_the_parts() -> None:
    """The composite's schema is written out; this keeps it from drifting from the parts.
    Its one key of its own, ``tiers``, states a trust tier and is not a check."""
    union: dict[str, Any] = {}
    for name in PARTS:
        union |= load(name).params_schema["properties"]
    assert SCHEMA["properties"] == union | {"tiers": SCHEMA["properties"]["tiers"]}
    # who may approve is not a check: params with only approvers configure nothing
    assert sorted(r["required"][0] for r in SCHEMA["anyOf"]) == sorted(set(union) - {"approvers"})
    assert SCHEMA["additionalProperties"] is False


def test_is_one_module_with_the_amount_helpers_and_hashes_their_code() -> None:
    """agent_spend writes the other policies' checks out in its own module (including their
    modules cost rego-cpp time on every query); tests/policies/test_golden.py holds it to
    their answers. Its code hash still covers every line that runs."""
    policy = load("agent_spend")
    assert sorted(policy.modules) == ["lib/amounts/amounts.rego", "policy.rego"]
    source = policy.modules["policy.rego"]
    assert "data.agentguard." not in source.replace("data.agentguard.lib.amounts", "")
    tampered = dict(policy.modules)
    tampered["lib/amounts/amounts.rego"] += "\n# changed\n"
    assert type(policy)(policy.name, policy.entrypoint, tampered).code_hash != policy.code_hash


def test_empty_params_are_refused_by_the_schema_and_by_the_rego() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate({})
    with pytest.raises(PolicyEngineError, match="do not match its schema"):
        PolicyEngine().evaluate(
            load("agent_spend"), input=erc20(1).parsed(), params={}, wasm=wasm_for(erc20(1))
        )
    result = evaluate("agent_spend", erc20(1), {}, check_schema=False)
    assert result.reasons == ("agent_spend: params configures no check, so nothing is allowed",)


def test_a_normal_payment_is_allowed() -> None:
    assert evaluate("agent_spend", erc20(10_000_000), EXAMPLE).decision == "allow"
    assert evaluate("agent_spend", eth(10**15), EXAMPLE).decision == "allow"


def test_only_configured_checks_run() -> None:
    # Only a cap: any recipient, contract, chain and time is fine.
    params = {"max_per_tx": {"*": "10"}}
    saturday_night = MONDAY_NOON + 5 * 86400 + 11 * 3600
    intent = erc20(10, recipient=ROUTER, token=ROUTER)
    wasm = wasm_for(intent, now=saturday_night)
    assert evaluate("agent_spend", intent, params, wasm).decision == "allow"


UNVALUED = unvalued(swap())


@pytest.mark.parametrize(
    "params",
    [
        {"max_per_tx": {"*": "10"}},
        {"window_caps": [{"asset": USDC, "window_seconds": 3600, "max_amount": "5"}]},
        {"allowed_contracts": [ROUTER]},
        {"rate_limits": [{"window_seconds": 3600, "max_count": 5}]},
    ],
)
def test_a_function_agentguard_cannot_value_is_denied_unless_listed(params: dict[str, Any]) -> None:
    """Before issue 7 a cap-only policy saw any unknown call as moving 0 and allowed it; the
    call could move tokens under another name. Now it must be listed in allowed_functions."""
    result = evaluate("agent_spend", swap(), params)
    assert (result.decision, result.reasons) == ("deny", (UNVALUED,))
    listed = {**params, "allowed_functions": ["deposit()", "transfer(address,uint256)"]}
    assert evaluate("agent_spend", swap(), listed).decision == "allow"


def test_reasons_from_every_failing_check_are_aggregated() -> None:
    stranger = "0x5555555555555555555555555555555555555555"
    intent = erc20(200_000_000, recipient=stranger)
    history = {
        "86400": {"count": 3, "spent": {USDC: "400000000"}, "projected": {USDC: "600000000"}},
        "3600": {"count": 20, "spent": {}, "projected": {USDC: "200000000"}},
    }
    wasm = wasm_for(intent, now=MONDAY_NOON + 5 * 86400, history=history)
    result = evaluate("agent_spend", intent, EXAMPLE, wasm)
    assert result.decision == "deny"
    assert result.reasons == tuple(
        sorted(
            [
                "20 actions in the last 3600 s already; rate limit max_count = 20",
                "Saturday 12:00 UTC is outside the allowed time_windows",
                f"amount 200000000 of asset {USDC} is above the per-transaction cap "
                "max_per_tx = 100000000",
                f"recipient {stranger} is not in allowed_recipients",
                f"spending 200000000 of asset {USDC} would bring the 86400 s total to "
                "600000000, above the window cap max_amount = 500000000",
            ]
        )
    )


def test_contract_function_and_asset_checks() -> None:
    params = {"allowed_functions": ["transfer(address,uint256)"], "allowed_chains": ["1"]}
    result = evaluate("agent_spend", swap(), params)
    assert result.reasons == (
        "chain 8453 is not in allowed_chains",
        f"function deposit() on {ROUTER} is not in allowed_functions",
        UNVALUED,
    )


def test_a_clean_large_payment_needs_a_human() -> None:
    intent = erc20(30_000_000)
    result = evaluate("agent_spend", intent, EXAMPLE)
    assert result.decision == "approval_required"
    assert result.reasons == (
        f"amount 30000000 of asset {USDC} is above the approval threshold approval_above = "
        "25000000; a human must approve this exact intent",
    )
    approved = wasm_for(intent, approved=True)
    assert evaluate("agent_spend", intent, EXAMPLE, approved).decision == "allow"


def test_a_hard_violation_denies_even_above_the_approval_threshold() -> None:
    """Never ask a human to approve what would be denied anyway."""
    stranger = "0x5555555555555555555555555555555555555555"
    result = evaluate("agent_spend", erc20(30_000_000, recipient=stranger), EXAMPLE)
    assert result.decision == "deny"
    assert result.reasons == (f"recipient {stranger} is not in allowed_recipients",)


def test_allow_plain_transfers_false_alone_blocks_plain_eth() -> None:
    result = evaluate("agent_spend", eth(1), {"allow_plain_transfers": False})
    assert result.decision == "deny"
    assert result.reasons == (
        f"plain transfer to {PAYEE} is not allowed (allow_plain_transfers is not true)",
    )


def test_tiers_state_the_trust_tier_per_amount_and_allow_nothing_alone() -> None:
    """``tiers`` (docs/trust-tiers.md): the highest level whose amount the spend exceeds, plus
    the vault-only bit; a per-asset entry beats ``"*"``; without ``tiers`` the tier is 0."""
    params = {
        "max_per_tx": {USDC: "1000000000", ETH: "1000000000000000000"},
        "tiers": {
            "high": {USDC: "10000000", "*": "1"},
            "all": {USDC: "50000000"},
            "human": {USDC: "200000000"},
            "vault": {USDC: "100000000"},
        },
    }
    got = [
        (r.decision, r.tier)
        for r in (evaluate("agent_spend", erc20(a), params) for a in
                  (10_000_000, 10_000_001, 50_000_001, 100_000_001, 200_000_001))
    ]  # fmt: skip
    assert got == [("allow", 0), ("allow", 1), ("allow", 2), ("allow", 6), ("allow", 7)]
    assert evaluate("agent_spend", eth(2), params).tier == 1  # "*" for ETH
    assert evaluate("agent_spend", erc20(10**9), {"max_per_tx": {USDC: "1"}}).tier == 0
    with pytest.raises(PolicyEngineError, match="schema"):  # a tier is not a check
        evaluate("agent_spend", erc20(1), {"tiers": params["tiers"]})
