"""A policy that crashes or hangs rego-cpp whatever the input is refused by the gateway at
registration and by an operator before it compiles it, and the operator keeps serving
(real gateway, real operator processes, real regopy)."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard._exceptions import GatewayRPCError
from agentguard.network.launcher import ReferenceNetwork
from agentguard.network.state import policy_material
from agentguard.policies import Policy

from ..task_ids import bind
from .conftest import fresh_agent, fresh_client, transfer
from .test_hostile_gateway import attackers_registration, evaluate
from .test_redteam_operators import registered_task


def _policy(name: str, package: str, source: str) -> Policy:
    return Policy(name=name, entrypoint=f"{package}.allow", modules={"p.rego": source})


# Each kills the process that compiles and evaluates it, on every input (regopy 1.5.2).
SEGV = _policy(
    "segv", "t", "package t\nimport input.secret\nallow if { some v in [secret]; secret }"
)
ABORT = _policy(
    "abort",
    "a.t",
    'package a.t\nobject := {"get": 1}\nallow if object.get(input, "secret", 0) else := false',
)
# 9 million iterations: minutes of rego-cpp, without a time limit of its own
HANG = _policy(
    "hang",
    "t",
    "package t\nallow if { some i in numbers.range(1, 3000); "
    "some j in numbers.range(1, 3000); i * j == -1 }",
)
REFUSED = {"segv": (SEGV, "SIGSEGV"), "abort": (ABORT, "SIGABRT"), "hang": (HANG, "time limit")}


def hostile_task(policy: Policy) -> dict[str, Any]:
    """A consistent task for a fresh client under a registration of the caller's own (what a
    hostile gateway, or any owner, can hand an operator)."""
    client = fresh_client()
    registration = attackers_registration(client, policy)
    return registered_task(
        client,
        transfer(fresh_agent()),
        "0x" + uuid.uuid4().hex * 2,
        policy_code_hash="0x" + policy.code_hash.hex(),
        policy=policy_material(policy),
        params={},
        registration=registration,
    )


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_the_gateway_refuses_to_register_it(network: ReferenceNetwork, name: str) -> None:
    policy, said = REFUSED[name]
    with pytest.raises(GatewayRPCError) as refused:
        network.register_policy_client(fresh_client(), policy, {})
    assert refused.value.code == -32602
    assert said in str(refused.value) and "it is refused" in str(refused.value)
    assert network.is_running()  # the gateway probed in a child and lives


def test_operators_refuse_it_and_keep_serving(network: ReferenceNetwork, client: str) -> None:
    """Handed the material straight (a gateway skipping its registration checks), every
    operator refuses each policy with a typed error, instantly the second time, and still
    signs other clients' tasks."""
    for op in network.operators:
        pid_before = op.process.pid if op.process is not None else None
        for policy, said in REFUSED.values():
            for held in (False, True):  # the second answer is the operator's verdict, kept
                error = evaluate(op, hostile_task(policy))["error"]
                assert error["code"] == -32615, error
                assert said in error["message"] and "refused" in error["message"], error
                assert ("(an earlier probe's verdict)" in error["message"]) is held, error
        assert op.process is None or (op.process.poll() is None and op.process.pid == pid_before)
    body = registered_task(client, transfer(fresh_agent()), "")
    for op in network.operators:
        bind(body, request_id=os.urandom(16).hex())
        assert evaluate(op, body)["result"]["decision"] == "allow"


def test_an_operator_probes_each_policy_and_params_once() -> None:
    """In process: the refusal is a typed RPC error, answered from the verdict the second
    time (no child process), and a good policy is probed once, not per task."""
    from agentguard.network._rpc import RPCError
    from agentguard.network.operator import Operator
    from agentguard.network.registry import Registry
    from agentguard.policies._probe import probe_count

    operator = Operator(PrivateKey(), Registry(":memory:"))
    crashing = _policy("segv2", "t", SEGV.modules["p.rego"] + "\n# operator test\n")
    before = probe_count()
    for _ in range(2):
        with pytest.raises(RPCError) as refused:
            operator.evaluate_and_sign(hostile_task(crashing))
        assert refused.value.code == -32615 and "SIGSEGV" in refused.value.message
    assert probe_count() == before + 1
    good = _policy("fine", "t", "package t\nallow := true\n# operator test\n")
    for _ in range(3):
        assert operator.evaluate_and_sign(hostile_task(good))["decision"] == "allow"
    assert probe_count() == before + 2
