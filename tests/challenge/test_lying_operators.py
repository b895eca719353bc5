"""A quorum of operators that lie (sign allow for a deny) is caught by an independent
re-evaluation: from the gateway's auditor methods, from the state, and from an agent's audit
log; the challenge record proves it offline and names exactly the liars."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentguard.audit import AuditLog
from agentguard.challenge import verify_record
from agentguard.cli import main
from agentguard.ledger import Ledger
from agentguard.network.launcher import ReferenceNetwork
from tests.actions.conftest import Stack
from tests.network.conftest import NETCHECK, RPC, UNIT, fresh_agent, fresh_client, params, transfer

from .conftest import liars, state_spec


@dataclass
class Scene:
    network: ReferenceNetwork
    client: str
    lied: str  # the task id the liars allowed
    honest: list[str]
    liars: list[str]
    audit: Path


@pytest.fixture(scope="module")
def scene(network: ReferenceNetwork, tmp_path_factory: pytest.TempPathFactory) -> Scene:
    client = fresh_client()
    network.register_policy_client(client, NETCHECK, params())
    rpc = RPC(network, network.api_key)
    agent = fresh_agent()
    honest = [rpc.create(client, transfer(agent, UNIT))["task_id"] for _ in range(3)]
    over_cap = transfer(agent, 50 * UNIT)  # max_per_tx is 10: the policy denies it
    assert rpc.create(client, over_cap)["attestation"]["decision"] == "deny"
    folder = tmp_path_factory.mktemp("audit")
    ledger = Ledger(folder / "ledger.db")
    stack = Stack(network, ledger, AuditLog(folder / "audit.jsonl"))
    guard = stack.guard()
    with liars(network, 0, 1) as lying:
        lied = rpc.create(client, over_cap)
        assert lied["attestation"]["decision"] == "allow"  # the quorum of liars got it allowed
        guard.run_call("delete_account", {"id": 7}, lambda: None)  # a deny, allowed by liars
    ledger.close()
    return Scene(network, client, lied["task_id"], honest, lying, folder / "audit.jsonl")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(["challenge", "run", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def _findings(summary: dict[str, Any]) -> dict[str, list[str]]:
    return {f["task_id"]: f["wrong_signers"] for f in summary["findings"] if "wrong_signers" in f}


def test_the_gateway_source_names_exactly_the_liars_and_verify_proves_it(
    scene: Scene, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    net = scene.network
    code, summary = _run(
        capsys, "--gateway", net.url, "--api-key", net.admin_key, "--out", str(tmp_path),
        *[a for op in net.operator_addresses for a in ("--operator", op)],
    )  # fmt: skip
    assert code == 1
    found = _findings(summary)
    assert found[scene.lied] == sorted(scene.liars)
    assert all(f["proven_by_record_alone"] for f in summary["findings"])
    assert not set(scene.honest) & set(found)
    assert summary["unverifiable"] == 0
    record = tmp_path / f"challenge-decision-{scene.lied.removeprefix('0x')}.json"
    assert str(record) in summary["records_written"]
    assert main(["challenge", "verify", str(record)]) == 0
    assert "proven (decision)" in capsys.readouterr().out
    check = verify_record(json.loads(record.read_text()))
    assert check.proven and check.wrong_signers == sorted(scene.liars)
    assert check.recomputed is not None and check.recomputed.decision == "deny"


def test_the_state_source_finds_the_same(scene: Scene, capsys: pytest.CaptureFixture[str]) -> None:
    code, summary = _run(capsys, "--state", state_spec(scene.network))
    assert code == 1
    assert _findings(summary)[scene.lied] == sorted(scene.liars)


def test_a_client_key_sees_its_own_clients_tasks_only(
    scene: Scene, capsys: pytest.CaptureFixture[str]
) -> None:
    """The network's API key may use every client ("*"); a key limited to others may not list
    this client's tasks (the gateway answers an error: exit 2, nothing checked)."""
    net = scene.network
    code, summary = _run(
        capsys, "--gateway", net.url, "--api-key", net.api_key, "--policy-client", scene.client
    )
    assert code == 1 and list(_findings(summary)) == [scene.lied]


def test_the_audit_log_alone_finds_the_same_discrepancy(
    scene: Scene, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The agent's audit log carries the intent, the attestation and the policy data; the
    policy material comes from the network's state (an auditor's copy would do as well)."""
    authorized = [e.record for e in AuditLog(scene.audit).entries() if e.kind == "authorized"]
    assert len(authorized) == 1 and "policy_data" in authorized[0]
    code, summary = _run(
        capsys, "--audit", str(scene.audit), "--state", state_spec(scene.network),
        "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 1
    task_id = authorized[0]["attestation"]["task_id"]
    assert _findings(summary) == {task_id: sorted(scene.liars)}
    (record,) = summary["records_written"]
    # the audit log does not hold the request id the task id derives from, so its record
    # cannot show which x402 details (if any) were signed: a finding, not an offline proof
    assert main(["challenge", "verify", record]) == 1
    assert "request id" in capsys.readouterr().err
