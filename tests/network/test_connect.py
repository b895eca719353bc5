"""``Guard.connect`` pins the policy id the owner registered, or refuses to connect."""

from __future__ import annotations

import logging

import pytest

from agentguard import AsyncGuard, Guard
from agentguard._exceptions import ConfigurationError
from agentguard.policies import load, policy_id

CLIENT = "0x00000000000000000000000000000000000c0dE1"
OPERATORS = ["0x" + "11" * 20, "0x" + "22" * 20, "0x" + "33" * 20]
PARAMS = {"max_per_tx": {"0x" + "44" * 20: "5"}}
URL = "http://127.0.0.1:9"


def connect(**kwargs: object) -> Guard:
    return Guard.connect(URL, policy_client=CLIENT, operators=OPERATORS, **kwargs)  # type: ignore[arg-type]


def test_the_policy_id_is_computed_from_the_policy_and_params() -> None:
    expected = policy_id(CLIENT, load("agent_spend"), PARAMS, 600)
    guard = connect(policy="agent_spend", params=PARAMS, expire_after=600)
    assert guard.verifier.policy_id == expected
    pinned = connect(policy_id="0x" + expected.hex())
    assert pinned.verifier.policy_id == expected
    both = connect(
        policy_id="0x" + expected.hex(), policy="agent_spend", params=PARAMS, expire_after=600
    )
    assert both.verifier.policy_id == expected


@pytest.mark.parametrize(
    ("kwargs", "mentions"),
    [
        ({}, "needs the policy the policy client registered"),
        ({"policy_id": "0x1234"}, "64 hex digits"),
        ({"policy": "agent_spend"}, "needs the params="),
        ({"params": PARAMS}, "only used with policy="),
        ({"policy": "no_such_policy", "params": {}}, "no_such_policy"),
        (
            {"policy_id": "0x" + "00" * 32, "policy": "agent_spend", "params": PARAMS},
            "is not the id",
        ),
        ({"any_policy": True, "policy_id": "0x" + "00" * 32}, "contradicts"),
        ({"policy": "agent_spend", "params": {"x": float("nan")}}, "cannot compute"),
        ({"policy": "agent_spend", "params": PARAMS, "expire_after": -1}, "cannot compute"),
    ],
)
def test_no_silent_acceptance_of_any_policy(kwargs: dict[str, object], mentions: str) -> None:
    """Before the fix ``Guard.connect`` without ``policy_id`` accepted an attestation under
    whatever policy the gateway chose."""
    with pytest.raises(ConfigurationError, match=mentions):
        connect(**kwargs)
    with pytest.raises(ConfigurationError, match=mentions):
        AsyncGuard.connect(URL, policy_client=CLIENT, operators=OPERATORS, **kwargs)  # type: ignore[arg-type]


def test_the_opt_out_is_explicit_and_loud(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        guard = connect(any_policy=True)
    assert guard.verifier.policy_id is None
    assert "ANY policy" in caplog.text
