"""The repository's example policies run unchanged on the engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentguard.policies import Policy
from agentguard.policies._engine import PolicyEngine, PolicyEngineError
from agentguard.policies._testkit import PAYEE, eth, wasm_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"
QUICKSTART = Policy.from_dir(EXAMPLES / "newton_quickstart")
PARAMS = {"allowed_recipients": [PAYEE.upper().replace("0X", "0x")], "max_value": 10**15}


def decide(value: int, to: str = PAYEE) -> str:
    intent = eth(value, to=to)
    result = PolicyEngine().evaluate(
        QUICKSTART, input=intent.parsed(), params=PARAMS, wasm=wasm_for(intent)
    )
    return result.decision


def test_quickstart_loads_in_newton_shape() -> None:
    assert QUICKSTART.entrypoint == "newton_quickstart.allow"
    assert QUICKSTART.modules["policy.rego"].count("package newton_quickstart") == 1


def test_quickstart_allows_a_listed_recipient_up_to_the_cap() -> None:
    assert decide(10**15) == "allow"
    assert decide(0) == "allow"


def test_quickstart_denies_above_the_cap_and_other_recipients() -> None:
    assert decide(10**15 + 1) == "deny"
    assert decide(1, to="0x5555555555555555555555555555555555555555") == "deny"


def test_quickstart_params_are_checked_against_its_schema() -> None:
    intent = eth(1)
    with pytest.raises(PolicyEngineError, match="max_value"):
        PolicyEngine().evaluate(
            QUICKSTART,
            input=intent.parsed(),
            params={"allowed_recipients": [PAYEE], "max_value": "1000"},
            wasm=wasm_for(intent),
        )
