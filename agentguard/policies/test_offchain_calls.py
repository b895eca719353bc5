"""offchain_calls: the only way a bundled policy allows an offchain call, and only that.

An offchain call (``agentguard.call_intent``) is ``name(string)`` to ``OFFCHAIN_TARGET`` with
value 0, an ``unknown_call``. Before ``offchain_calls`` existed it was allowed by listing
``name(string)`` in ``allowed_functions``, which does not look at the target: listing
``withdraw(string)`` for a tool also allowed ``withdraw(string)``, with ETH, on any contract.
"""

from __future__ import annotations

from typing import Any

import pytest

from agentguard import OFFCHAIN_TARGET, TransactionIntent, call_intent
from agentguard._eip712 import keccak
from agentguard.policies._engine import PolicyEngineError
from agentguard.policies._testkit import (
    AGENT,
    ETH,
    PAYEE,
    ROUTER,
    USDC,
    erc20,
    evaluate,
    unvalued,
    wasm_for,
)

TOOLS = ["withdraw", "send_email"]

# Every bundled policy that judges which unknown_call may run, configured to allow the tools.
POLICIES: dict[str, dict[str, Any]] = {
    "function_allowlist": {"offchain_calls": TOOLS},
    "tx_cap": {"max_per_tx": {USDC: "5", ETH: "10"}, "offchain_calls": TOOLS},
    "window_cap": {
        "window_caps": [{"asset": ETH, "window_seconds": 86400, "max_amount": "10"}],
        "offchain_calls": TOOLS,
    },
    "approval_threshold": {"approval_above": {"*": "0"}, "offchain_calls": TOOLS},
    "asset_chain_allowlist": {"allowed_assets": [USDC], "offchain_calls": TOOLS},
    "recipient_list": {
        "allowed_recipients": [PAYEE],
        "allowed_contracts": [USDC],
        "offchain_calls": TOOLS,
    },
    "agent_spend": {
        "max_per_tx": {USDC: "5", ETH: "10"},
        "allowed_recipients": [PAYEE],
        "allowed_contracts": [USDC],
        "allowed_assets": [USDC],
        "allowed_functions": ["transfer(address,uint256)"],
        "approval_above": {"*": "0"},
        "offchain_calls": TOOLS,
    },
}


def offchain(name: str) -> TransactionIntent:
    return call_intent(AGENT, name, {"amount": "all"}, chain_id=8453)


def hand_built(name: str, *, to: str, value: int) -> TransactionIntent:
    """``name(string)`` with the calldata call_intent would build, to any address, any value."""
    real = offchain(name)
    return TransactionIntent.model_validate(
        {
            "from": AGENT,
            "to": to,
            "value": value,
            "data": real.data,
            "chain_id": 8453,
            "function_signature": real.function_signature,
        }
    )


def decision(policy: str, intent: TransactionIntent, params: dict[str, Any]) -> str:
    result = evaluate(policy, intent, params)
    if policy == "approval_threshold" and result.decision == "approval_required":
        return "deny"  # the attacker wanted it to pass without a human
    return result.decision


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_a_named_offchain_call_passes_every_list_and_cap(policy: str) -> None:
    """Recipient, contract and asset lists, caps and approvals let it pass: it moves nothing."""
    assert evaluate(policy, offchain("send_email"), POLICIES[policy]).decision == "allow"


@pytest.mark.parametrize("value", [0, 1])
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_a_listed_name_called_onchain_is_denied(policy: str, value: int) -> None:
    """Attack: the tool's signature on a contract, with or without ETH, through the wallet. It
    succeeded when a tool was allowed by allowed_functions: ["withdraw(string)"] (that entry,
    which does not look at the target, still allows it: it is a contract function's entry);
    offchain_calls: ["withdraw"] allows only the call to OFFCHAIN_TARGET."""
    intent = hand_built("withdraw", to=ROUTER, value=value)
    assert intent.spend.kind == "unknown_call"
    assert decision(policy, intent, POLICIES[policy]) == "deny"


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_an_unlisted_name_offchain_is_denied(policy: str) -> None:
    assert decision(policy, offchain("delete_account"), POLICIES[policy]) == "deny"


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_a_listed_name_offchain_with_value_is_denied(policy: str) -> None:
    """call_intent cannot build one (value is always 0); a hand-built intent can, and is denied:
    ETH sent to OFFCHAIN_TARGET (no key) would be burnt under a name the policy trusts."""
    assert offchain("withdraw").value == 0
    intent = hand_built("withdraw", to=OFFCHAIN_TARGET, value=1)
    assert decision(policy, intent, POLICIES[policy]) == "deny"


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_allowed_functions_no_longer_allows_an_offchain_call(policy: str) -> None:
    """Attack (succeeded before): allowed_functions listed name(string) for an offchain tool;
    that entry now allows the function on contracts only, never on OFFCHAIN_TARGET."""
    params = {k: v for k, v in POLICIES[policy].items() if k != "offchain_calls"}
    params["allowed_functions"] = ["send_email(string)", "transfer(address,uint256)"]
    assert decision(policy, offchain("send_email"), params) == "deny"


def test_allowed_functions_still_allows_the_same_signature_on_a_contract() -> None:
    params = {"allowed_functions": ["send_email(string)"], "max_per_tx": {ETH: "10"}}
    intent = hand_built("send_email", to=ROUTER, value=1)
    assert evaluate("agent_spend", intent, params).decision == "allow"


def test_offchain_calls_never_allows_a_transfer_to_offchain_target() -> None:
    """Attack: ERC-20 transfer calldata addressed to OFFCHAIN_TARGET, with offchain_calls naming
    "transfer": it is a transfer (valued from calldata), judged by the ordinary rules."""
    params = {"max_per_tx": {"*": "5"}, "offchain_calls": ["transfer"]}
    over = erc20(6, token=OFFCHAIN_TARGET)
    assert over.spend.kind == "transfer"
    assert evaluate("tx_cap", over, params).reasons == (
        f"amount 6 of asset {OFFCHAIN_TARGET.lower()} is above the per-transaction cap "
        "max_per_tx = 5",
    )
    other = "0x5555555555555555555555555555555555555555"
    lists = {"allowed_recipients": [PAYEE], "offchain_calls": ["transfer"]}
    assert evaluate(
        "recipient_list", erc20(1, recipient=other, token=OFFCHAIN_TARGET), lists
    ).reasons == (f"recipient {other} is not in allowed_recipients",)
    # The tool named transfer is transfer(string): a different function, allowed by its entry.
    assert evaluate("tx_cap", offchain("transfer"), params).decision == "allow"


def test_allowed_functions_does_not_open_offchain_target_to_other_calls() -> None:
    """With the function allowlist active, any call to OFFCHAIN_TARGET but a named offchain call
    is denied, even a listed function: allowed_functions never allows a call to it."""
    params = {"allowed_functions": ["transfer(address,uint256)"], "offchain_calls": ["transfer"]}
    intent = erc20(1, token=OFFCHAIN_TARGET)
    assert evaluate("function_allowlist", intent, params).reasons == (
        f"function transfer(address,uint256) with value 0 on {OFFCHAIN_TARGET} (OFFCHAIN_TARGET) "
        "is not an offchain call offchain_calls names (name(string), value 0); "
        "allowed_functions does not allow calls to OFFCHAIN_TARGET",
    )
    assert evaluate("agent_spend", intent, params).decision == "deny"


def test_an_offchain_call_still_counts_for_rate_limits_and_time_windows() -> None:
    intent = offchain("send_email")
    limited = {
        "offchain_calls": ["send_email"],
        "rate_limits": [{"window_seconds": 3600, "max_count": 1}],
    }
    busy = {"count": 1, "spent": {}, "projected": {ETH: "0"}}
    wasm = wasm_for(intent, history={"3600": busy, "86400": busy})
    assert evaluate("agent_spend", intent, limited).decision == "allow"
    assert evaluate("agent_spend", intent, limited, wasm).reasons == (
        "1 actions in the last 3600 s already; rate limit max_count = 1",
    )
    night = {
        "offchain_calls": ["send_email"],
        "time_windows": [{"days": ["sun"], "start": "00:00", "end": "01:00"}],
    }
    assert evaluate("agent_spend", intent, night).decision == "deny"


def test_the_unvalued_reason_names_offchain_calls() -> None:
    intent = offchain("delete_account")
    assert evaluate("tx_cap", intent, POLICIES["tx_cap"]).reasons == (unvalued(intent),)


@pytest.mark.parametrize("entry", ["send_email(string)", "send email", "1mail", "", "a" * 129])
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_offchain_calls_takes_tool_names_only(policy: str, entry: str) -> None:
    """A signature where a name belongs would never match; the schema says so up front."""
    params = {**POLICIES[policy], "offchain_calls": [entry]}
    with pytest.raises(PolicyEngineError, match="offchain_calls"):
        evaluate(policy, offchain("send_email"), params)


def test_offchain_target_is_the_policies_constant() -> None:
    assert OFFCHAIN_TARGET.lower() == "0x" + keccak(b"agentguard.offchain-call")[12:].hex()
    from agentguard.policies import load

    assert (
        f'offchain_target := "{OFFCHAIN_TARGET.lower()}"'
        in load("function_allowlist").modules["policy.rego"]
    )
