"""Fuzz: policy params, as a registration carries them to the gateway and the operators.

Params are the owner's, but they travel as JSON, are hashed into the policy id, checked
against the policy's JSON schema (gateway) and compiled into Rego (operators). Every form must
end as a refusal the network reports (``RPCError`` at the gateway, ``PolicyEngineError`` in the
engine) or as a decision; params the schema accepts must evaluate to a decision (never a Rego
error at the operators for a registration the gateway took).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given

from agentguard.network._rpc import RPCError
from agentguard.network.gateway._registry import validated_params as _validated_params
from agentguard.policies import load, policy_id
from agentguard.policies._engine import Evaluation, PolicyEngine, PolicyEngineError
from agentguard.policies._testkit import ETH, PAYEE, USDC, erc20, wasm_for

from .hostile import budget, mutated, outcome

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
POLICY = load("agent_spend")
ENGINE = PolicyEngine(max_bundles=8)
INTENT = erc20(1_000_000)
CLIENT = "0x" + "cc" * 20


def _evaluate(params: Any) -> Evaluation:
    return ENGINE.evaluate(POLICY, input=INTENT.parsed(), params=params, wasm=wasm_for(INTENT))


def test_the_example_params_allow_the_example_intent() -> None:
    assert _evaluate(EXAMPLE).decision == "allow"


@budget(60)
@given(mutated(EXAMPLE, max_edits=2))
def test_params(params: Any) -> None:
    outcome(lambda: policy_id(CLIENT, POLICY, params, 300), allowed=(TypeError, ValueError))
    accepted = outcome(_validated_params, POLICY, params, allowed=RPCError)
    if not isinstance(params, dict):
        return
    evaluated = outcome(_evaluate, params, allowed=PolicyEngineError)
    if accepted is None:  # the gateway registered these params: operators must decide
        assert isinstance(evaluated, Evaluation), evaluated
