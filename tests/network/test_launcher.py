"""The launcher keeps secrets in 0600 files and out of configs, logs and process arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentguard.network.launcher import ReferenceNetwork

from .conftest import RPC, TOKEN, decision, fresh_agent, fresh_client, transfer


def _secrets(network: ReferenceNetwork) -> list[str]:
    keys = [op.key_file.read_text().strip().removeprefix("0x") for op in network.operators]
    tokens = [op.token_file.read_text().strip() for op in network.operators]
    owner = network.owner_key_file.read_text().strip().removeprefix("0x")
    return [network.api_key, network.admin_key, owner, *keys, *tokens]


def test_secret_files_are_private_and_secrets_appear_nowhere_else(
    network: ReferenceNetwork, rpc: RPC, client: str
) -> None:
    assert decision(rpc.create(client, transfer(fresh_agent()))) == "allow"  # logs have content
    private = [
        network.secrets_file,
        network.owner_key_file,
        *(op.key_file for op in network.operators),
        *(op.token_file for op in network.operators),
    ]
    for path in private:
        assert path.stat().st_mode & 0o777 == 0o600, path
    secrets = _secrets(network)
    public = [network.config_file, *Path(network.state_dir / "logs").iterdir()]
    for path in public:
        text = path.read_bytes().decode("utf-8", "replace")
        assert not any(s in text for s in secrets), path
    processes = [network._gateway, *(op.process for op in network.operators)]
    for process in processes:
        assert process is not None
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode()
        assert not any(s in cmdline for s in secrets)
    assert not any(s in repr(network) for s in secrets)


def test_operator_identities_survive_a_restart(
    network: ReferenceNetwork, rpc: RPC, client: str
) -> None:
    before = list(network.operator_addresses)
    network.stop_operator(0)
    network.start_operator(0)
    assert network.operator_addresses == before
    result = rpc.create(client, transfer(fresh_agent()), quorum_threshold_percentage=100)
    signers = {s["operator"] for s in result["attestation"]["signatures"]}
    assert signers == set(before)  # the restarted operator was sent the policy code again


def test_operators_sign_only_for_the_gateway(network: ReferenceNetwork) -> None:
    import httpx

    op = network.operators[0]
    body = {"jsonrpc": "2.0", "id": 1, "method": "newt_evaluateAndSign", "params": {}}
    for headers in (
        {},
        {"authorization": "Bearer not-the-token"},
        {"authorization": network.api_key},
    ):
        response = httpx.post(op.url, json=body, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == -32002
    token = op.token_file.read_text().strip()
    answered = httpx.post(op.url, json=body, headers={"authorization": f"Bearer {token}"})
    assert answered.json()["error"]["code"] == -32602  # past auth: now it is about the params
    assert op.token_file.stat().st_mode & 0o777 == 0o600


def test_the_cli_signs_and_delivers_a_registration(
    network: ReferenceNetwork, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentguard.cli import main
    from agentguard.policies import load, policy_id

    client = fresh_client()
    config = {"max_per_tx": {TOKEN.lower(): "5000000"}}
    argv = [
        "network",
        "register",
        "--policy-client",
        client,
        "--policy",
        "agent_spend",
        "--params",
        json.dumps(config),
        "--state-dir",
        str(network.state_dir),
    ]
    assert main(argv) == 0
    expected = "0x" + policy_id(client, load("agent_spend"), config, 300).hex()
    assert f"policy_id: {expected}" in capsys.readouterr().out
    assert main([*argv[:6], "--params", "[]", *argv[8:]]) == 2


def test_config_file_clients_are_signed_and_held_across_restarts(tmp_path: Path) -> None:
    from agentguard.policies import load, policy_id

    client = fresh_client()
    config = {"max_per_tx": {TOKEN.lower(): "5000000"}}
    spec = {"policy_client": client, "policy": "agent_spend", "params": config}
    expected = "0x" + policy_id(client, load("agent_spend"), config, 300).hex()
    for clients in ([spec], []):  # the second start has only its state directory
        with ReferenceNetwork(
            operators=1, threshold_percentage=100, state_dir=tmp_path, policy_clients=clients
        ) as net:
            result = RPC(net, net.api_key).create(client, transfer(fresh_agent()))
            assert decision(result) == "allow"
            assert result["attestation"]["policy_id"] == expected
