"""Human units: exact in both directions, refusals typed."""

from decimal import Decimal

import pytest

from agentguard import ConfigurationError, Token, format_amount, parse_amount

USDC_BASE = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"


def test_known_tokens_resolve_per_chain() -> None:
    assert parse_amount("5 USDC", 8453).atomic == 5_000_000
    assert parse_amount("5 usdc", 8453).token.address == USDC_BASE
    assert parse_amount("0.1 OPG", 8453).atomic == 10**17
    assert parse_amount("0.002 ETH", 84532).atomic == 2 * 10**15
    assert parse_amount("1_000.5 USDC", 8453).atomic == 1_000_500_000
    assert parse_amount("5 USDC", 84532).token.address != USDC_BASE


def test_exact_never_rounded() -> None:
    with pytest.raises(ConfigurationError, match="6 decimals"):
        parse_amount("0.0000001 USDC", 8453)
    big = "115792089237316195423570985008687907853269984665640564039457.584007913129639935 ETH"
    assert parse_amount(big, 8453).atomic == 2**256 - 1
    with pytest.raises(ConfigurationError, match="uint256"):
        parse_amount("115792089237316195423570985008687907853269984665640564039458 ETH", 8453)


@pytest.mark.parametrize(
    "bad", ["USDC", "5", "-5 USDC", "5 USDC USDC", "1e3 USDC", "nan USDC", "", "1,5 USDC"]
)
def test_malformed_amounts_are_configuration_errors(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_amount(bad, 8453)


def test_unknown_symbol_names_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match="ETH, OPG, USDC"):
        parse_amount("5 DAI", 8453)
    with pytest.raises(ConfigurationError, match="none"):
        parse_amount("5 USDC", 31337)


def test_extra_tokens_come_first_and_format_back() -> None:
    local = Token("USDC", "0x" + "11" * 20, 6, 8453)
    assert parse_amount("2.5 USDC", 8453, tokens=local).token == local
    assert format_amount(2_500_000, "0x" + "11" * 20, 8453, tokens={"USDC": local}) == "2.5 USDC"
    assert format_amount(10**17, "0xFbC2051AE2265686a469421b2C5A2D5462FbF5eB", 8453) == "0.1 OPG"
    assert format_amount(7, "0x" + "22" * 20, 8453) == f"7 atomic units of 0x{'22' * 20}"


def test_token_atomic_refuses_floats_and_bools() -> None:
    usdc = Token("USDC", USDC_BASE, 6, 8453)
    assert usdc.atomic(Decimal("1.5")) == 1_500_000
    for bad in (1.5, True, Decimal("Infinity")):
        with pytest.raises(ConfigurationError):
            usdc.atomic(bad)  # type: ignore[arg-type]
