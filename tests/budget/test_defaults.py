"""``Guard.connect(signer=, web3=, ledger=, budget=, ...)`` fills ``guard.defaults``;
``guard.wallet()`` / ``guard.x402()`` take what they are not given from it, an explicit
argument wins, and a missing one names the keyword and the variable that would set it."""

from __future__ import annotations

import pytest
from web3 import Web3

from agentguard import AsyncGuard, Budget, ConfigurationError, Guard, Signer
from agentguard.audit import AuditLog
from agentguard.ledger import Ledger, Limits, WindowCap
from agentguard.policies import load, policy_id
from agentguard.x402 import Allowances

CLIENT = "0x00000000000000000000000000000000000c0dE1"
OPS = ["0x" + "11" * 20, "0x" + "22" * 20, "0x" + "33" * 20]
PID = "0x" + "ab" * 32
USDC = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
ETH = "0x" + "00" * 20
SIGNER = Signer.from_key("0x" + "a1" * 32)
OTHER = Signer.from_key("0x" + "b2" * 32)
W3 = Web3(Web3.HTTPProvider("http://127.0.0.1:9"))  # never called: nothing is sent here


def connect(cls: type[Guard] | type[AsyncGuard] = Guard, **kw: object) -> Guard:
    options: dict[str, object] = {"policy_id": PID, **kw}
    return cls.connect(  # type: ignore[return-value]
        "http://127.0.0.1:9", policy_client=CLIENT, operators=OPS, **options
    )


def test_connect_fills_the_defaults(tmp_path) -> None:
    ledger, audit = Ledger(), AuditLog(tmp_path / "a.jsonl")
    budget = Budget("5 USDC per call", chain_id=84532)
    guard = connect(signer=SIGNER, web3=W3, ledger=ledger, budget=budget, audit=audit)
    d = guard.defaults
    assert (d.signer, d.web3, d.ledger, d.audit) == (SIGNER, W3, ledger, audit)
    assert d.budget == budget and d.limits == budget.limits() and d.chain_id == 84532
    assert d.agent == SIGNER.address
    limits = Limits(windows=[WindowCap(USDC, 60, 1)])
    assert connect(budget=limits).defaults.limits is limits
    assert connect(budget=limits).defaults.budget is None
    assert connect().defaults.limits is None


def test_a_wallet_from_the_defaults_and_explicit_arguments_win() -> None:
    budget = Budget("5 USDC per call")
    ledger = Ledger()
    for cls in (Guard, AsyncGuard):
        guard = connect(cls, signer=SIGNER, web3=W3, ledger=ledger, budget=budget)
        account = guard.wallet()._account
        assert account.signer is SIGNER and account.w3 is W3 and account.ledger is ledger
        assert account.limits == budget.limits() and account.vault is None
        other_limits, other_ledger = Limits(), Ledger()
        explicit = guard.wallet(signer=OTHER, ledger=other_ledger, limits=other_limits)._account
        assert explicit.signer is OTHER and explicit.ledger is other_ledger
        assert explicit.limits is other_limits and explicit.w3 is W3
        vaulted = connect(
            cls, signer=SIGNER, web3=W3, ledger=ledger, budget=budget, vault="0x" + "77" * 20
        ).wallet()
        assert vaulted.account == "0x" + "77" * 20


@pytest.mark.parametrize(
    ("given", "missing", "variable"),
    [
        ({}, "signer=", "AGENTGUARD_PRIVATE_KEY_FILE"),
        ({"signer": SIGNER}, "ledger=", "AGENTGUARD_LEDGER"),
        ({"signer": SIGNER, "ledger": Ledger()}, "web3=", "AGENTGUARD_RPC_URL"),
        ({"signer": SIGNER, "ledger": Ledger(), "web3": W3}, "limits=", "AGENTGUARD_BUDGET"),
    ],
)
def test_a_missing_wallet_argument_names_keyword_and_variable(
    given: dict[str, object], missing: str, variable: str
) -> None:
    for cls in (Guard, AsyncGuard):
        with pytest.raises(ConfigurationError) as info:
            connect(cls, **given).wallet()
        assert f"guard.wallet() needs {missing}" in str(info.value)
        assert variable in str(info.value)


def test_x402_from_the_defaults() -> None:
    budget = Budget("5 USDC per call", "12 USDC per day", "0.001 ETH per hour")
    ledger = Ledger()
    guard = connect(signer=SIGNER, ledger=ledger, budget=budget)
    auth = guard.x402()
    assert auth._signer is SIGNER and auth._ledger is ledger and auth._limits == budget.limits()
    # allowances: what one call may spend, per budgeted token (ETH is never an x402 asset)
    assert auth._allowances == Allowances(assets={USDC: 5_000_000}, chain_ids=(8453,))
    window_only = connect(signer=SIGNER, ledger=ledger, budget=Budget("12 USDC per day"))
    assert window_only.x402()._allowances == Allowances(assets={USDC: 12_000_000})
    mine = Allowances(assets={USDC: 1})
    assert guard.x402(allowances=mine)._allowances is mine
    # explicit limits without allowances: allowances from those limits' per-call caps
    narrow = Limits(per_tx={USDC: 7})
    assert guard.x402(limits=narrow)._allowances == Allowances(assets={USDC: 7})


def test_x402_without_anything_to_pay_with_says_so() -> None:
    with pytest.raises(ConfigurationError, match=r"x402\(\) needs signer="):
        connect().x402()
    with pytest.raises(ConfigurationError, match=r"x402\(\) needs allowances=.*AGENTGUARD_BUDGET"):
        connect(signer=SIGNER, ledger=Ledger()).x402()
    # a budget of call counts alone (or of 0 caps) allows no payment at all
    for budget in (
        Budget("10 calls per minute"),
        Budget("0 USDC per call"),
        Budget("0.01 ETH per call"),
    ):
        with pytest.raises(ConfigurationError, match="allowances="):
            connect(signer=SIGNER, ledger=Ledger(), budget=budget).x402()


def test_connect_checks_what_it_is_given() -> None:
    with pytest.raises(ConfigurationError, match=r"budget= takes an agentguard\.Budget"):
        connect(budget={"per_day": "20 USDC"})
    with pytest.raises(ConfigurationError, match="budget is for chain 8453 but chain_id=84532"):
        connect(budget=Budget("5 USDC per call"), chain_id=84532)
    with pytest.raises(ConfigurationError, match="chain_id must be a positive int"):
        connect(chain_id="8453")
    with pytest.raises(ConfigurationError, match="vault"):
        connect(vault="0x1234")
    with pytest.raises(ConfigurationError, match="ledger= takes"):
        connect(ledger="spend.db")


def test_a_raw_key_passed_as_signer_is_refused_and_not_echoed() -> None:
    """Before: ``connect(signer="0x…key")`` stored the string in ``guard.defaults``, whose repr
    (and any error quoting it) then carried the key."""
    key = "0x" + "e3" * 32
    for raw in (key, bytes.fromhex(key[2:])):
        with pytest.raises(ConfigurationError) as info:
            connect(signer=raw)
        assert "Signer.from_key" in str(info.value)
        assert "e3e3e3e3" not in str(info.value).lower()


def test_the_policy_id_from_a_budget() -> None:
    """``policy=`` with a ``Budget`` and no ``params=`` pins the id of ``budget.params()``; an
    explicit ``params=`` still wins (a registration with more keys than the budget)."""
    budget = Budget("20 USDC per day", "5 USDC per call")
    guard = connect(policy_id=None, policy="agent_spend", budget=budget)
    assert guard.verifier.policy_id == policy_id(CLIENT, load("agent_spend"), budget.params(), 300)
    more = {**budget.params(), "allowed_recipients": ["0x" + "99" * 20]}
    guard = connect(policy_id=None, policy="agent_spend", params=more, budget=budget)
    assert guard.verifier.policy_id == policy_id(CLIENT, load("agent_spend"), more, 300)
    with pytest.raises(ConfigurationError, match="needs the params="):
        connect(policy_id=None, policy="agent_spend", budget=budget.limits())
