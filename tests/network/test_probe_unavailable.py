"""A probe that cannot run (no child: fork's EAGAIN) judges nothing: the operator and the
gateway answer a typed, retryable JSON-RPC error (``PROBE_UNAVAILABLE``), not an internal
error nor a refusal, and the SDK maps it to a retryable agentguard error."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard import PolicyProbeUnavailable
from agentguard._explain import explain
from agentguard._gateway import _rpc_error
from agentguard.network._rpc import PROBE_UNAVAILABLE, RPCError
from agentguard.network.config import ApiKeyEntry, GatewaySettings, NetworkConfig
from agentguard.network.gateway import Gateway
from agentguard.network.gateway._operators import rpc_failure
from agentguard.network.operator import Operator
from agentguard.network.registry import Registry
from agentguard.network.state import State, policy_material
from agentguard.policies import Policy, _probe

from .conftest import fresh_agent, fresh_client, transfer
from .test_hostile_gateway import attackers_registration
from .test_policy_probe import hostile_task

_serial = iter(range(1 << 30))


def _good() -> Policy:
    """A new material each time: no verdict of an earlier test answers."""
    source = f"package t\nallow := true\n# unavailable {next(_serial)}\n"
    return Policy(name="fine", entrypoint="t.allow", modules={"p.rego": source})


@pytest.fixture
def no_child(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    return _no_child(monkeypatch)


def _no_child(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every probe child fails to start, as fork does under EAGAIN; counts the tries."""
    tries: list[int] = []

    def refuse(request: bytes, timeout: float) -> Any:
        tries.append(1)
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(_probe, "_forked", refuse)
    monkeypatch.setattr(_probe, "_spawned", refuse)
    return tries


def test_the_operator_answers_a_retryable_typed_error(
    no_child: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    operator = Operator(PrivateKey(), Registry(":memory:"))
    good = _good()
    for _ in range(2):  # nothing kept: each task tries again
        with pytest.raises(RPCError) as unjudged:
            operator.evaluate_and_sign(hostile_task(good))
        assert unjudged.value.code == PROBE_UNAVAILABLE, unjudged.value.message
        assert "could not judge the policy now" in unjudged.value.message
        assert "retry" in unjudged.value.message
        assert "Resource temporarily unavailable" in unjudged.value.message
    assert len(no_child) == 2
    monkeypatch.undo()
    assert operator.evaluate_and_sign(hostile_task(good))["decision"] == "allow"


def test_the_gateway_answers_a_retryable_typed_error_to_a_registration(
    no_child: list[int], tmp_path: Path
) -> None:
    state = State(tmp_path / "state.sqlite3")
    gateway = Gateway(NetworkConfig(gateway=GatewaySettings(), operators=(), api_keys=()), state)
    try:
        client, good = fresh_client(), _good()
        request = {
            "registration": attackers_registration(client, good),
            "policy": policy_material(good),
        }
        with pytest.raises(RPCError) as unjudged:
            gateway.register(request)
        assert unjudged.value.code == PROBE_UNAVAILABLE, unjudged.value.message
        assert "gateway could not judge the policy now" in unjudged.value.message
        assert gateway.clients.get(client) is None  # not registered, not refused for good
    finally:
        state.close()


def test_the_gateway_and_the_sdk_read_it_as_retryable() -> None:
    error = {"code": PROBE_UNAVAILABLE, "message": "the operator could not judge ..."}
    assert rpc_failure(error).retryable
    assert not rpc_failure({"code": -32615, "message": "refused"}).retryable
    mapped = _rpc_error(error, 200)
    assert isinstance(mapped, PolicyProbeUnavailable) and mapped.code == PROBE_UNAVAILABLE
    assert explain(mapped).startswith("NOT DONE (temporary)")


def test_the_gateway_answers_a_retryable_typed_error_to_a_simulation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registered client whose probe verdict this process no longer holds (a replica that
    loaded it from the shared state) is probed on simulate: no child is not a policy failure."""
    state = State(tmp_path / "state.sqlite3")
    gateway = Gateway(NetworkConfig(gateway=GatewaySettings(), operators=(), api_keys=()), state)
    try:
        client, good = fresh_client(), _good()
        registered = gateway.register(
            {"registration": attackers_registration(client, good), "policy": policy_material(good)}
        )
        monkeypatch.setattr(_probe, "_verdicts", type(_probe._verdicts)())
        tries = _no_child(monkeypatch)
        request = {
            "intent": transfer(fresh_agent()).wire(),
            "policy_task_data": {"policyId": registered["policy_id"]},
        }
        with pytest.raises(RPCError) as unjudged:
            gateway._simulator.simulate(ApiKeyEntry(sha256="00" * 32, admin=True), request)
        assert unjudged.value.code == PROBE_UNAVAILABLE, unjudged.value.message
        assert tries == [1]
    finally:
        state.close()
