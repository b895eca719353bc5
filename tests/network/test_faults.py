"""Operators failing or lying, and the gateway crashing: quorum and limits still hold.

These tests stop and start processes of the shared network and always restore them.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from agentguard.network.launcher import ReferenceNetwork

from .conftest import NETCHECK, RPC, UNIT, decision, fresh_agent, fresh_client, params, transfer


@contextmanager
def operators_down(network: ReferenceNetwork, *indexes: int) -> Iterator[None]:
    for i in indexes:
        network.stop_operator(i)
    try:
        yield
    finally:
        for i in indexes:
            network.start_operator(i)


@contextmanager
def faulty_operator(network: ReferenceNetwork, index: int) -> Iterator[str]:
    """Replace operator ``index`` by one that signs the wrong digest with the right key."""
    op = network.operators[index]
    network.stop_operator(index)
    script = Path(__file__).with_name("faulty_operator.py")
    process = subprocess.Popen(
        [
            sys.executable,
            str(script),
            "--port",
            str(op.port),
            "--key-file",
            str(op.key_file),
            "--token-file",
            str(op.token_file),
        ],
        cwd=Path(__file__).parents[2],
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{op.port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, (
                "faulty operator did not start"
            )
            time.sleep(0.05)
        yield op.address
    finally:
        process.terminate()
        process.wait(10)
        network.start_operator(index)


def test_one_operator_down_still_reaches_quorum(
    rpc: RPC, network: ReferenceNetwork, client: str
) -> None:
    down = network.operators[2].address
    with operators_down(network, 2):
        results = [rpc.create(client, transfer(fresh_agent())) for _ in range(3)]
    for result in results:
        assert decision(result) == "allow"
        signers = {s["operator"].lower() for s in result["attestation"]["signatures"]}
        assert signers == {a.lower() for a in network.operator_addresses[:2]}
    reported = [e for r in results for e in r["operator_errors"]]
    assert reported, "the stopped operator's failure is reported"
    for error in reported:
        assert error["operator_address"] == down
        # Newton's OperatorError: a numeric error_code and a string timestamp
        assert error["error_code"] == 503 and error["error_type"] == "unreachable"
        assert error["retryable"] is True
        assert isinstance(error["timestamp"], str) and error["timestamp"].endswith("Z")
        assert set(error) == {
            "operator_address",
            "operator_id",
            "error_code",
            "error_type",
            "message",
            "timestamp",
            "retryable",
        }


def test_two_operators_down_fails_with_quorum_not_reached(
    rpc: RPC, network: ReferenceNetwork, client: str
) -> None:
    agent = fresh_agent()
    with operators_down(network, 0, 2):
        result = rpc.create(client, transfer(agent))
    assert result["status"] == "failed"
    assert result["error"].startswith("quorum_not_reached")
    assert result["attestation"] is None and result["task_response"] is None
    failed = {e["operator_address"] for e in result["operator_errors"]}
    assert failed == {network.operator_addresses[0], network.operator_addresses[2]}
    assert all(e["error_type"] == "unreachable" for e in result["operator_errors"])
    # nothing was counted for the failed task: the same agent's budget is intact afterwards
    full_budget = fresh_client()
    network.register_policy_client(full_budget, NETCHECK, params(daily_cap=UNIT))
    assert decision(rpc.create(full_budget, transfer(agent))) == "allow"


def test_a_wrong_signature_is_never_counted(
    rpc: RPC, network: ReferenceNetwork, client: str
) -> None:
    with faulty_operator(network, 1) as liar:
        # 2 of 3 honest operators still make the 66% quorum; the liar is not among the signers
        ok = rpc.create(client, transfer(fresh_agent()))
        # with 100% required, the liar's signature would be needed: the task fails instead
        strict = rpc.create(client, transfer(fresh_agent()), quorum_threshold_percentage=100)
    assert decision(ok) == "allow"
    assert liar.lower() not in {s["operator"].lower() for s in ok["attestation"]["signatures"]}
    assert strict["status"] == "failed" and strict["error"].startswith("quorum_not_reached")
    [error] = strict["operator_errors"]
    assert error["operator_address"] == liar
    assert error["error_type"] == "bad_signature" and error["error_code"] == 401
    assert "not to the operator's registered key" in error["message"]


def test_daily_cap_survives_a_gateway_crash(rpc: RPC, network: ReferenceNetwork) -> None:
    client = fresh_client()
    network.register_policy_client(client, NETCHECK, params(daily_cap=3 * UNIT))
    agent = fresh_agent()
    rpc_id = str(uuid.uuid4())
    first = rpc.create(client, transfer(agent), rpc_id=rpc_id)
    assert decision(first) == decision(rpc.create(client, transfer(agent))) == "allow"
    network.kill_gateway()
    network.start_gateway()
    rpc = RPC(network, network.api_key)
    # a client retrying across the crash gets the recorded answer, counted once
    assert rpc.create(client, transfer(agent), rpc_id=rpc_id) == first
    assert decision(rpc.create(client, transfer(agent))) == "allow"  # the third unit
    assert decision(rpc.create(client, transfer(agent))) == "deny"


def test_an_operator_that_missed_a_registration_catches_up_with_the_next_task(
    rpc: RPC, network: ReferenceNetwork
) -> None:
    client = fresh_client()
    with operators_down(network, 0):
        network.register_policy_client(client, NETCHECK, params())
    # the registration travels with every task: with operator 1 down, operator 0 must sign
    # for the 2-of-3 quorum, and it can only after taking the registration from the task
    with operators_down(network, 1):
        result = rpc.create(client, transfer(fresh_agent()))
    assert decision(result) == "allow"
    signers = {s["operator"] for s in result["attestation"]["signatures"]}
    assert network.operator_addresses[0] in signers
