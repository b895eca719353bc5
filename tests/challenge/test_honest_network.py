"""An honest network produces no false challenge: thousands of real tasks (transfers up to a
daily cap, so many allows sit right under it; x402 payments; tasks allowed after a human
approval, whose first answer was approval_required) all re-evaluate to what was signed."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from agentguard import PaymentIntent
from agentguard._intent import wasm_args_hex
from agentguard.cli import main
from agentguard.network.launcher import ReferenceNetwork
from tests.network.conftest import (
    NETCHECK,
    PAYEE,
    RPC,
    TOKEN,
    UNIT,
    fresh_agent,
    fresh_client,
    params,
    transfer,
)

from .conftest import state_spec
from .inprocess import InProcessNetwork

TASKS = 2000


def _decision(result: dict[str, Any]) -> str:
    assert result["status"] == "success", result
    return str(result["attestation"]["decision"])


def _challenge(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["challenge", "run", *argv, "--json"]) == 0
    summary: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert (summary["discrepancies"], summary["unverifiable"], summary["skipped"]) == (0, 0, 0)
    return summary


def test_thousands_of_honest_tasks_give_no_challenge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real gateway and operator code in one process (``inprocess``): 2,000+ transfers by
    40 agents under a per-transaction and a daily cap, so hundreds are denied at the cap and
    the allows just under it depend on the recorded history."""
    net = InProcessNetwork(tmp_path)
    try:
        client = fresh_client()
        net.register(client, NETCHECK, params(daily_cap=40 * UNIT))
        rng = random.Random(12)
        agents = [fresh_agent() for _ in range(40)]
        decisions = [
            _decision(net.create(client, transfer(rng.choice(agents), rng.randint(1, 3 * UNIT))))
            for _ in range(TASKS)
        ]
    finally:
        net.close()
    allowed = decisions.count("allow")
    assert allowed > TASKS // 2 and decisions.count("deny") > 100
    summary = _challenge(
        capsys, "--state", net.state_path,
        *[a for op in net.operator_addresses for a in ("--operator", op)],
    )  # fmt: skip
    assert summary["checked"] == allowed


def test_payments_and_approved_tasks_on_the_real_network_give_no_challenge(
    network: ReferenceNetwork, capsys: pytest.CaptureFixture[str]
) -> None:
    """x402 payments (their details are policy data) and tasks allowed after a person approved
    them (approval_required first; then ``data.wasm.approved`` is true), on real processes."""
    client = fresh_client()
    network.register_policy_client(
        client, NETCHECK, params(daily_cap=40 * UNIT, approval_above=8 * UNIT)
    )
    rpc = RPC(network, network.api_key)
    agents = [fresh_agent() for _ in range(3)]
    decisions = []
    for i in range(12):
        payment = PaymentIntent(
            payer=agents[i % 3], scheme="exact", network="eip155:8453", asset=TOKEN,
            amount=UNIT // 2, pay_to=PAYEE, resource=f"https://api.example/infer/{i}",
        )  # fmt: skip
        result = rpc.create(
            client, payment.newton_intent(), wasm_args=wasm_args_hex(payment.wasm_args())
        )
        decisions.append(_decision(result))
    for _ in range(3):
        big = transfer(fresh_agent(), 9 * UNIT)
        assert _decision(rpc.create(client, big)) == "approval_required"
        network.approve(client, "0x" + big.intent_hash.hex())
        decisions.append(_decision(rpc.create(client, big)))
    assert decisions == ["allow"] * 15
    summary = _challenge(capsys, "--state", state_spec(network), "--policy-client", client)
    assert summary["checked"] == 15 and summary["approvals_not_rechecked"] == 3
    summary = _challenge(
        capsys, "--gateway", network.url, "--api-key", network.api_key,
        "--policy-client", client,
    )  # fmt: skip
    assert summary["checked"] == 15
