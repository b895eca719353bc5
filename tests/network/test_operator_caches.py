"""An operator's policy and schema-check caches: bounded (LRU), and the schema check keyed by
the content it checked (the schema and the canonical params), not by (client, version).

Before the fix both grew without bound, and a registration replaced at the same version (a
vault's owner taking it over from a stranger) skipped the operator's schema check: the engine
still refused, but with -32615 (evaluation failed) instead of the operator's -32602."""

from __future__ import annotations

import random
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard._attestation import operator_address
from agentguard.network import operator as operator_module
from agentguard.network._rpc import INVALID_PARAMS, POLICY_REQUIRED, RPCError
from agentguard.network.operator import Operator
from agentguard.network.registry import Registry
from agentguard.network.state import policy_material
from agentguard.policies import Policy

from ..task_ids import bind
from .conftest import NETCHECK, UNIT, params
from .test_operator import registration, request

VAULT = "0x" + "5a" * 20


def _outcome(operator: Operator, body: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "answer", operator.evaluate_and_sign(body)["decision"]
    except RPCError as exc:
        return "error", (exc.code, exc.message)


def _taken_over(owner: PrivateKey) -> Operator:
    """An operator whose chain says ``owner`` owns every vault (a stub ``owner()``)."""
    owner_hex = operator_address(owner).lower()
    return Operator(PrivateKey(), Registry(":memory:", check_owner=lambda _: owner_hex))


def _bad(field: str, value: Any) -> dict[str, Any]:
    config: dict[str, Any] = params()
    config[field] = value
    return config


POOL: list[dict[str, Any]] = [
    params(),
    params(max_per_tx=3 * UNIT),
    params(daily_cap=7 * UNIT),
    _bad("max_per_tx", "1e40"),  # not a decimal string
    _bad("max_per_tx", "-5"),
    _bad("rate_limits", [{"window_seconds": 60}]),
    _bad("allowed_recipients", ["not an address"]),
]


def test_a_takeover_at_the_same_version_gets_the_operators_schema_refusal() -> None:
    owner = PrivateKey()
    operator = _taken_over(owner)
    stranger = registration(owner=PrivateKey(), client=VAULT, version=1)
    assert (
        operator.evaluate_and_sign(request(registration=stranger, policy_client=VAULT))["decision"]
        == "allow"
    )
    loose = _bad("max_per_tx", "1e40")
    taken = registration(owner=owner, client=VAULT, version=1, config=loose)
    kind, (code, message) = _outcome(
        operator, request(registration=taken, policy_client=VAULT, params=loose)
    )
    assert (kind, code) == ("error", INVALID_PARAMS)
    assert message.startswith("params do not match the policy schema"), message


@pytest.mark.parametrize("seed", range(16))
def test_takeovers_answer_as_an_operator_that_never_saw_the_first(seed: int) -> None:
    """Differential: a stranger's registration then the owner's, at the same or a higher
    version, params from a pool of good and hostile ones: the operator that cached the
    stranger's checks answers exactly as a fresh one shown only the owner's."""
    rng = random.Random(seed)
    owner = PrivateKey()
    seasoned, fresh = _taken_over(owner), _taken_over(owner)
    first, second = rng.choice(POOL), rng.choice(POOL)
    version = rng.choice([1, 1, 2])
    stranger = registration(owner=PrivateKey(), client=VAULT, version=1, config=first)
    _outcome(seasoned, request(registration=stranger, policy_client=VAULT, params=first))
    taken = registration(owner=owner, client=VAULT, version=version, config=second)
    body = request(registration=taken, policy_client=VAULT, params=second)
    again = bind(dict(body), request_id=rng.randbytes(16).hex())
    assert _outcome(seasoned, body) == _outcome(fresh, again)


def test_the_schema_check_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(operator_module, "_MAX_DERIVED", 3)
    operator = Operator(PrivateKey(), Registry(":memory:"))
    for i in range(6):
        client = "0x" + f"{0x5B00 + i:040x}"
        config = params(max_per_tx=(i + 1) * UNIT)
        body = request(
            registration=registration(client=client, config=config),
            params=config,
            policy_client=client,
        )
        assert operator.evaluate_and_sign(body)["decision"] == "allow"
        assert len(operator._validated) <= 3


def test_the_policy_memory_is_bounded_and_a_policy_pushed_out_is_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(operator_module, "_MAX_POLICIES", 1)
    operator = Operator(PrivateKey(), Registry(":memory:"))
    other = Policy(
        name="other",
        entrypoint=NETCHECK.entrypoint,
        modules={**NETCHECK.modules, "zz_extra.rego": "package zz_extra\n"},
        params_schema=NETCHECK.params_schema,
    )
    assert operator.evaluate_and_sign(request())["decision"] == "allow"
    client = "0x" + "5c" * 20
    body = request(
        registration=registration(client=client, policy=other),
        policy_client=client,
        policy_code_hash="0x" + other.code_hash.hex(),
        policy=policy_material(other),
    )
    assert operator.evaluate_and_sign(body)["decision"] == "allow"
    assert len(operator._policies) == 1
    with pytest.raises(RPCError) as pushed_out:
        operator.evaluate_and_sign(request(with_policy=False))
    assert pushed_out.value.code == POLICY_REQUIRED
    assert operator.evaluate_and_sign(request())["decision"] == "allow"
