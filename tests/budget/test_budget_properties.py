"""Any budget that constructs gives params the agent_spend schema accepts, limits that say the
same caps in the same atomic units, and rule text that parses back to the same budget."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard import Budget, ConfigurationError

from .test_budget import schema_errors

SYMBOLS = st.sampled_from(["USDC", "OPG", "ETH"])
DECIMALS = {"USDC": 6, "OPG": 18, "ETH": 18}
WINDOWS = st.sampled_from(["second", "minute", "hour", "day", "week", "6 hours", "90 minutes"])


@st.composite
def amounts(draw: st.DrawFn) -> str:
    symbol = draw(SYMBOLS)
    atomic = draw(st.integers(min_value=0, max_value=2**256 - 1))
    whole, frac = divmod(atomic, 10 ** DECIMALS[symbol])
    text = f"{whole}.{frac:0{DECIMALS[symbol]}d}".rstrip("0").rstrip(".")
    return f"{text} {symbol}"


rules = st.lists(
    st.one_of(
        st.builds(lambda a: f"{a} per call", amounts()),
        st.builds(lambda a, w: f"{a} per {w}", amounts(), WINDOWS),
        st.builds(lambda n, w: f"{n} calls per {w}", st.integers(0, 10**9), WINDOWS),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(rules)
def test_every_budget_that_builds_is_consistent(texts: list[str]) -> None:
    try:
        budget = Budget(*texts)
    except ConfigurationError:
        return  # a contradiction; refusing is the point (tested by name elsewhere)
    params, limits = budget.params(), budget.limits()
    assert schema_errors(params) == []
    assert Budget(*budget.rules()) == budget
    assert {k: int(v) for k, v in params.get("max_per_tx", {}).items()} | {
        a: c for a, c in limits.per_tx.items()
    } == {k: int(v) for k, v in params["max_per_tx"].items()}
    assert [(w.asset, w.window_seconds, w.max_amount) for w in limits.windows] == [
        (c["asset"], c["window_seconds"], int(c["max_amount"]))
        for c in params.get("window_caps", [])
    ]
    assert [(r.window_seconds, r.max_count) for r in limits.rate] == [
        (r["window_seconds"], r["max_count"]) for r in params.get("rate_limits", [])
    ]
    # every token the local limits cap has its per-call entry at the network
    capped = set(limits.per_tx) | {w.asset for w in limits.windows}
    assert capped <= set(params["max_per_tx"])
