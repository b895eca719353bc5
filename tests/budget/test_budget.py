"""``Budget``: human rules in, exact caps out, the same budget however it is written; every
contradiction or nonsense is a ``ConfigurationError`` that says what to write instead."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

import agentguard
from agentguard import Budget, ConfigurationError, Token
from agentguard.ledger import Limits, RateCap, WindowCap
from agentguard.policies import load

USDC = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
OPG = "0xfbc2051ae2265686a469421b2c5a2d5462fbf5eb"
ETH = "0x0000000000000000000000000000000000000000"
SEPOLIA_USDC = "0x036cbd53842c5426634e7929541ec2318f3dcf7e"
MAX = 2**256 - 1
MAX_ETH = f"{MAX // 10**18}.{MAX % 10**18:018d}"  # the largest uint256 of wei, in ETH
SCHEMA = json.loads(
    (
        Path(agentguard.__file__).parent / "policies" / "agent_spend" / "params_schema.json"
    ).read_text()
)


def schema_errors(params: object) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return [e.message for e in validator.iter_errors(params)]


def test_rules_and_keywords_are_the_same_budget() -> None:
    a = Budget("20 USDC per day", "5 USDC per call")
    b = Budget(per_day="20 USDC", per_call="5 USDC")
    c = Budget("5 USDC per call; 20 USDC per day")  # order and form do not matter
    assert a == b == c and hash(a) == hash(b) == hash(c)
    assert len({a, b, c}) == 1
    assert Budget("20 USDC per day") != a


def test_limits_are_exact_atomic_caps() -> None:
    budget = Budget(
        "20 USDC per day",
        "5 USDC per call",
        "0.01 ETH per 6 hours",
        "10 calls per minute",
        "100 calls per day",
    )
    assert budget.limits() == Limits(
        per_tx={USDC: 5_000_000},
        windows=[WindowCap(ETH, 21_600, 10**16), WindowCap(USDC, 86_400, 20_000_000)],
        rate=[RateCap(60, 10), RateCap(86_400, 100)],
    )


def test_describe_and_repr_are_the_human_rules() -> None:
    budget = Budget(per_week="100 USDC", per_call=["5 USDC", "0.5 OPG"], calls_per_hour=30)
    assert budget.describe() == [
        "at most 0.5 OPG per call",
        "at most 5 USDC per call",
        "at most 100 USDC per 7 days",
        "at most 30 calls per hour",
    ]
    assert repr(budget) == (
        "Budget('0.5 OPG per call', '5 USDC per call', '100 USDC per 7 days', "
        "'30 calls per hour', chain_id=8453)"
    )
    assert Budget("20 USDC per day").describe() == ["at most 20 USDC per 24 hours"]
    assert Budget(*budget.rules()) == budget  # the canonical text parses back to it


def test_the_window_words() -> None:
    seconds = {
        "second": 1, "30 seconds": 30, "minute": 60, "90 minutes": 5400, "hour": 3600,
        "6 hours": 21_600, "day": 86_400, "2 days": 172_800, "week": 604_800, "52 weeks": 31_449_600,
        "365 days": 31_536_000, "6 HOURS": 21_600, "1 hr": 3600, "5 min": 300,
    }  # fmt: skip
    for text, expected in seconds.items():
        (cap,) = Budget(f"1 USDC per {text}").limits().windows
        assert cap.window_seconds == expected, text


def test_params_follow_the_agent_spend_schema() -> None:
    budgets = [
        Budget("20 USDC per day", "5 USDC per call", "10 calls per minute"),
        Budget("0.01 ETH per 6 hours"),
        Budget("10 calls per minute"),
        Budget(per_call=["5 USDC", "1 OPG"], per_week=["50 USDC", "0.1 ETH"]),
        Budget("0 USDC per call"),
        Budget(f"{MAX_ETH} ETH per call"),
    ]
    for budget in budgets:
        params = budget.params()
        assert schema_errors(params) == [], (budget, params)
        assert params == json.loads(json.dumps(params))  # plain JSON
    assert budgets[0].params() == {
        "max_per_tx": {USDC: "5000000"},
        "window_caps": [{"asset": USDC, "window_seconds": 86400, "max_amount": "20000000"}],
        "rate_limits": [{"window_seconds": 60, "max_count": 10}],
    }


def test_every_budgeted_asset_has_a_per_call_entry_and_others_none() -> None:
    """``tx_cap`` denies an asset ``max_per_tx`` has no entry for: so a USDC budget lets no ETH or
    other token move, and an asset capped only per window is not denied by ``max_per_tx``."""
    params = Budget("5 USDC per call", "0.01 ETH per day", "0.02 ETH per week").params()
    assert params["max_per_tx"] == {ETH: str(10**16), USDC: "5000000"}
    assert Budget("12 USDC per day").params()["max_per_tx"] == {USDC: "12000000"}
    # a budget that names no token lets nothing move (calls that move nothing still pass)
    assert Budget("10 calls per minute").params()["max_per_tx"] == {ETH: "0"}


def test_the_policy_engine_accepts_the_params() -> None:
    """The schema check the operators run (``agentguard.policies``) accepts every budget's params."""
    from agentguard.policies._engine import _check_params

    policy = load("agent_spend")
    for budget in (Budget("10 calls per minute"), Budget("1 USDC per call", "1 OPG per hour")):
        _check_params(policy, budget.params())


def test_a_token_added_with_tokens_wins_over_the_known_one() -> None:
    local = Token("USDC", "0x" + "ab" * 20, 6, 8453)
    budget = Budget("5 USDC per call", tokens=local)
    assert budget.limits().per_tx == {"0x" + "ab" * 20: 5_000_000}
    assert budget != Budget("5 USDC per call")


def test_the_chain_decides_what_a_symbol_means() -> None:
    sepolia = Budget("5 USDC per call", chain_id=84532)
    assert sepolia.limits().per_tx == {SEPOLIA_USDC: 5_000_000}
    assert sepolia != Budget("5 USDC per call")


@pytest.mark.parametrize(
    ("args", "kwargs", "says"),
    [
        ((), {}, "at least one rule"),
        (("5 USDC per fortnight",), {}, "per 14 days"),
        (("5 USDC per month",), {}, "per 30 days"),
        (("5 USDC per year",), {}, "per 365 days"),
        (("5 USDC per eon",), {}, "call, second, minute, hour, day or week"),
        (("-5 USDC per day",), {}, "never negative"),
        (("5 USDC per 0 hours",), {}, "never holds anything"),
        (("5 USDC per -1 hours",), {}, "whole positive number"),
        (("5 USDC per 1.5 hours",), {}, "per 90 minutes"),
        (("5 USDC per 366 days",), {}, "longer than 365 days"),
        (("5 USDC per call", "3 USDC per call"), {}, "two per-call caps for USDC"),
        (("5 USDC per call",), {"per_call": "3 USDC"}, "two per-call caps for USDC"),
        (("5 USDC per day", "6 USDC per 24 hours"), {}, "two caps for USDC per 24 hours"),
        (("5 calls per minute", "6 calls per 60 seconds"), {}, "two call counts per minute"),
        (("6 USDC per call", "5 USDC per day"), {}, "write at most 5 USDC per call"),
        (("10 USDC per hour", "5 USDC per day"), {}, "can never bind"),
        (("10 calls per minute", "10 calls per hour"), {}, "can never bind"),
        (("2.5 calls per minute",), {}, "whole number"),
        (("5 DOGE per day",), {}, "no token 'DOGE' on chain 8453; known there: ETH, OPG, USDC"),
        (("5 USDC per day",), {"chain_id": 1}, "no token 'USDC' on chain 1"),
        (("5 OPG per day",), {"chain_id": 10}, "add one with tokens="),
        (("5 USDC",), {}, "is not a budget rule"),
        (("USDC per day",), {}, "is not an amount"),
        (("5,5 USDC per day",), {}, "is not an amount"),
        (("1e3 USDC per day",), {}, "is not an amount"),
        (("0.0000001 USDC per call",), {}, "USDC has 6 decimals"),
        ((f"{2**256} ETH per call",), {}, "does not fit in a uint256"),
        ((5,), {}, "a budget rule is text"),
        ((), {"per_day": 20.0}, "takes text like '5 USDC'"),
        ((), {"per_day": 20}, "takes text like '5 USDC'"),
        ((), {"per_day": "20"}, "is not an amount"),
        ((), {"per_day": "20 USDC per day"}, "is not an amount"),
        ((), {"calls_per_minute": 10.0}, "whole number of calls"),
        ((), {"calls_per_minute": True}, "whole number of calls"),
        ((), {"calls_per_minute": -1}, "whole number of calls"),
        ((), {"calls_per_minute": 10**10}, "whole number of calls"),
        (("5 USDC per day",), {"chain_id": 0}, "positive int"),
        (("5 USDC per day",), {"chain_id": True}, "positive int"),
        (("5 USDC per day",), {"chain_id": 8453.0}, "positive int"),
        (("5 calls per call",), {}, "count calls per window"),
    ],
)
def test_nonsense_is_refused_with_what_to_write(
    args: tuple[object, ...], kwargs: dict[str, object], says: str
) -> None:
    with pytest.raises(ConfigurationError, match=None) as info:
        Budget(*args, **kwargs)  # type: ignore[arg-type]
    assert says in str(info.value)


def test_float_rounding_never_creeps_in() -> None:
    """0.1 + 0.2 as a float is 0.30000000000000004: amounts are parsed from text as Decimals,
    exactly, or refused; a float amount is refused outright."""
    assert Budget("0.3 USDC per call").limits().per_tx[USDC] == 300_000
    assert Budget("0.000001 USDC per call").limits().per_tx[USDC] == 1
    assert Budget("0.000000000000000001 ETH per call").limits().per_tx[ETH] == 1
    assert Budget(f"{MAX_ETH} ETH per call").limits().per_tx[ETH] == MAX
    assert Budget(f"{MAX_ETH} ETH per call").params()["max_per_tx"][ETH] == str(MAX)
    with pytest.raises(ConfigurationError, match="uint256"):  # one wei more overflows
        Budget(f"{MAX_ETH[:-1]}6 ETH per call")


def test_frozen() -> None:
    budget = Budget("5 USDC per call")
    with pytest.raises(AttributeError):
        budget.chain_id = 1  # type: ignore[misc]


def test_refusals_of_budget_limits_are_in_human_units() -> None:
    """A ``Budget`` hands its tokens (of its own chain) to the limits, so the ledger words its
    refusals in them; limits written by hand stay in atomic units (the ledger never guesses
    which token an address is)."""
    from agentguard import BudgetExceeded, Spend
    from agentguard.ledger import Ledger

    ledger, agent = Ledger(), "0x" + "11" * 20
    limits = Budget("5 USDC per call", "12 USDC per day", "0.001 ETH per hour").limits()

    def reserve(asset: str, amount: int, lim: Limits = limits) -> None:
        ledger.reserve(
            agent, Spend(asset=asset, amount=amount), key=f"{asset}{amount}",
            expires_at=ledger.now() + 60, limits=lim,
        )  # fmt: skip

    with pytest.raises(BudgetExceeded) as info:
        reserve(USDC, 6_000_000)
    assert "is 5 USDC, this action spends 6 USDC" in str(info.value)
    assert (info.value.asset, info.value.window_seconds, info.value.cap) == (USDC, None, 5_000_000)
    reserve(USDC, 5_000_000)
    reserve(USDC.upper().replace("0X", "0x"), 5_000_000)  # case does not matter
    with pytest.raises(BudgetExceeded) as info:
        reserve(USDC, 2_500_000)
    assert "is 12 USDC; 10 USDC already reserved or spent + 2.5 USDC requested" in str(info.value)
    assert (info.value.asset, info.value.window_seconds) == (USDC, 86_400)
    with pytest.raises(BudgetExceeded, match=r"is 0\.001 ETH; 0 ETH already .* \+ 0\.0011 ETH"):
        reserve(ETH, 1_100_000_000_000_000)
    by_hand = Limits(per_tx={USDC: 5_000_000})
    assert by_hand == Limits(per_tx={USDC: 5_000_000}, units=limits.units)  # units: wording only
    with pytest.raises(BudgetExceeded, match="is 5000000, this action spends 6000000"):
        reserve(USDC, 6_000_000, by_hand)
    with pytest.raises(ConfigurationError, match="units must map"):
        Limits(units={ETH: Token("USDC", USDC, 6, 8453)})


@pytest.mark.parametrize(
    "rule",
    [
        "5 USDC per ² hours",
        "² calls per minute",
        "\uff15 calls per minute",
        "5 USDC per \uff15 days",
    ],
)
def test_digits_python_reads_but_int_does_not_are_refused(rule: str) -> None:
    """Before: ``str.isdigit()`` accepted "²" and ``int()`` then raised a bare ValueError (not an
    agentguard error) out of ``Budget``; fullwidth digits were silently read as ASCII ones."""
    with pytest.raises(ConfigurationError, match="whole"):
        Budget(rule)


def test_schema_bounds_are_refused_before_params_exist() -> None:
    """Params the schema refuses would fail registration at the gateway (or, in a policy that
    skipped the schema, reach Rego with types it does not expect): refused at construction."""
    with pytest.raises(ConfigurationError, match="365 days"):
        Budget("1 USDC per 53 weeks")
    with pytest.raises(ConfigurationError, match="whole number of calls"):
        Budget(calls_per_day=1_000_000_001)
    with pytest.raises(ConfigurationError, match="at most 1000000000 calls"):
        Budget("1000000001 calls per day")
    edge = Budget("1000000000 calls per 365 days", "0 USDC per 365 days")
    assert schema_errors(edge.params()) == []
