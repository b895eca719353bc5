"""An honest network gives the watch nothing to prove: hundreds of tasks from several
clients, in concurrent waves (tasks of one second), up to their caps (denials), with
attestations released and given back at expiry, and committed ones; and an honest gateway
in front of a vault, whose third 5 USDC spend under a 12 USDC cap it refuses."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentguard.challenge import Quorum, Watcher
from agentguard.challenge._watch import MAX_BATCH, GatewayTasks
from agentguard.network.launcher import ReferenceNetwork
from agentguard.network.state import open_state
from tests.network.conftest import NETCHECK, RPC, UNIT, fresh_eoa_client, params, transfer

from .watch_support import chain, create_vault, spend

pytestmark = pytest.mark.integration

CLIENTS = 8
WAVES = 12
PER_WAVE = 10  # requests per client per wave, sent at once


@pytest.fixture(scope="module")
def network() -> Iterator[ReferenceNetwork]:
    with ReferenceNetwork(operators=3, timeout=5.0, startup_timeout=180.0) as net:
        yield net


async def _waves(net: ReferenceNetwork, clients: list[str]) -> list[dict[str, Any]]:
    rng = random.Random(12)
    headers = {"authorization": f"Bearer {net.api_key}"}
    allowed: list[dict[str, Any]] = []
    async with httpx.AsyncClient(headers=headers, timeout=30.0) as http:

        async def call(method: str, body: dict[str, Any]) -> Any:
            request = {"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": method}
            answer = (await http.post(net.rpc_url, json={**request, "params": body})).json()
            return answer.get("result")

        async def one(client: str) -> None:
            amount = rng.randint(1, 4) * UNIT
            intent = transfer(client, amount)
            result = await call(
                "newt_createTask",
                {"policy_client": client, "intent": intent.wire(), "timeout": 5},
            )
            if not result or result["status"] != "success":
                return
            if result["attestation"]["decision"] == "allow":
                allowed.append(result)
                fate = rng.random()
                if fate < 0.3:  # the host says it never used it: given back at expiry
                    await call("agentguard_releaseTask", {"task_id": result["task_id"]})
                elif fate < 0.6:
                    await call("agentguard_commitTask", {"task_id": result["task_id"]})

        for _ in range(WAVES):
            await asyncio.gather(*(one(c) for c in clients for _ in range(PER_WAVE)))
            await asyncio.sleep(0.4)
    return allowed


def test_hundreds_of_honest_tasks_give_no_challenge(
    network: ReferenceNetwork, tmp_path: Path
) -> None:
    clients = []
    for _ in range(CLIENTS):
        address, key = fresh_eoa_client()
        network.register_policy_client(
            address,
            NETCHECK,
            params(max_per_tx=10 * UNIT, daily_cap=120 * UNIT, rate=40),
            expire_after=2,
            owner_key=key,
        )
        clients.append(address)
    allowed = asyncio.run(_waves(network, clients))
    asked = CLIENTS * WAVES * PER_WAVE
    assert 300 <= len(allowed) < asked  # the caps and rate limits bound: denials happened

    state = open_state(str(network.state_dir / "state.sqlite3"))
    quorum = Quorum(frozenset(a.lower() for a in network.operator_addresses), 2)
    try:
        report = Watcher(
            state,
            cursor_file=tmp_path / "cursor.json",
            out_dir=tmp_path / "records",
            quorum=quorum,
            once=True,
        ).run()
    finally:
        state.close()
    ours = {r["task_id"] for r in allowed}
    assert report.checked >= len(ours)
    assert report.proven == 0 and report.records == [], report.text()
    assert report.operators == {} and report.history == []
    assert report.bounded >= len(ours) // 2  # most tasks had earlier ones provably counted
    assert not (tmp_path / "records").exists()

    # the same through the gateway's auditor methods, in batches of several answer pages
    gateway = GatewayTasks(network.url, network.admin_key)
    try:
        again = Watcher(
            gateway,
            cursor_file=tmp_path / "gateway.cursor",
            out_dir=tmp_path / "records",
            quorum=quorum,
            batch=MAX_BATCH,
            once=True,
        ).run()
    finally:
        gateway.close()
    assert (again.checked, again.bounded, again.proven) == (report.checked, report.bounded, 0)


def test_an_honest_gateway_in_front_of_a_vault_gives_no_challenge(
    network: ReferenceNetwork, tmp_path: Path
) -> None:
    with chain() as c:
        vault = create_vault(c, network, b"\x21" * 32, guardian=False)
        rpc = RPC(network, network.api_key)
        results = []
        for i in range(4):
            if i:
                time.sleep(1.05)
            results.append(spend(c, rpc, vault))
        decisions = [r["attestation"]["decision"] for r in results]
        assert decisions == ["allow", "allow", "deny", "deny"]
        state = open_state(str(network.state_dir / "state.sqlite3"))
        try:
            report = Watcher(
                state,
                cursor_file=tmp_path / "cursor.json",
                out_dir=tmp_path / "records",
                once=True,
                w3=c.w3,
                vaults=[vault.address],
            ).run()
        finally:
            state.close()
        assert report.proven == 0 and report.unrecorded == [], report.text()
        assert vault.functions.paused().call() is False
