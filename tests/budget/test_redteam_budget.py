"""Attacks on budgets in human units: each test names the attack and what it did before the
defence it checks."""

from __future__ import annotations

import pytest

from agentguard import Budget, ConfigurationError, Token
from agentguard._units import format_amount, parse_amount

USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
OPG = "0xFbC2051AE2265686a469421b2C5A2D5462FbF5eB"


@pytest.mark.parametrize(
    "spoof",
    [
        Token("USDC", USDC, 18, 8453),  # Base's USDC with 18 decimals instead of 6
        Token("OPG", USDC, 18, 8453),  # Base's USDC under OPG's symbol
        {"USDC": Token("USDC", USDC, 18, 8453)},
    ],
)
def test_tokens_cannot_redefine_a_known_tokens_decimals_or_symbol(spoof: object) -> None:
    """A ``tokens=`` entry for Base's real USDC address with 18 decimals (a config typo, or a
    token list an attacker supplied). Before the fix ``Budget("5 USDC per call", tokens=...)``
    read and printed as "5 USDC per call" but capped 5 * 10**18 atomic USDC (five trillion
    dollars), locally and in the registered params; "5 OPG per call" with OPG's symbol on
    USDC's address capped USDC at 5 * 10**18 too."""
    with pytest.raises(ConfigurationError, match="known token"):
        Budget("5 USDC per call", "5 OPG per hour", tokens=spoof)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="known token"):
        parse_amount("5 USDC", 8453, spoof)  # type: ignore[arg-type]


def test_two_tokens_entries_cannot_disagree_about_one_address() -> None:
    """Two ``tokens=`` entries for one local address with different decimals: before the fix
    the first one silently won for one spelling (symbol) and the other for another, so a
    budget and a refusal could read one amount in two scales."""
    a, b = Token("TT", "0x" + "ab" * 20, 6, 31337), Token("TT", "0x" + "ab" * 20, 18, 31337)
    with pytest.raises(ConfigurationError, match="named twice"):
        Budget("5 TT per call", chain_id=31337, tokens=[a, b])


def test_a_token_that_agrees_with_the_known_one_is_fine() -> None:
    """Repeating a known token exactly (same symbol, decimals) is allowed and changes nothing."""
    same = Token("USDC", USDC, 6, 8453)
    assert Budget("5 USDC per call", tokens=same) == Budget("5 USDC per call")
    assert format_amount(5_000_000, USDC, 8453, same) == "5 USDC"


@pytest.mark.parametrize("flag", ["false", "0", "no", 1])
def test_a_truthy_non_bool_any_policy_is_refused_not_obeyed(flag: object) -> None:
    """``Guard.connect(..., any_policy=settings["any_policy"])`` with the text "false" from a
    config file and no pin (the owner meant "pin it", and forgot policy_id=). Before the fix any
    truthy value connected unpinned (one warning logged): the verifier accepted attestations
    under any policy the gateway chose, an ``allow := true`` one; ``False`` says what to pin."""
    from agentguard import Guard

    with pytest.raises(ConfigurationError, match="any_policy"):
        Guard.connect(
            "http://127.0.0.1:1",
            policy_client="0x" + "11" * 20,
            operators=["0x" + "22" * 20],
            any_policy=flag,  # type: ignore[arg-type]
        )
