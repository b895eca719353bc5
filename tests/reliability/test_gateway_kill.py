"""kill -9 of the gateway under concurrent load: no ``allow`` it answered is missing from its
state afterwards (group commit answers an ``allow`` only once its transaction is committed).

A real reference network (a gateway and 3 operator processes, 2-of-3, SQLite state); 24
concurrent clients authorize fresh tasks until 150 allows came back, then the gateway gets
SIGKILL with requests still in flight. The state file, reopened as a restarted gateway would,
must hold every answered task, with the very answer that was sent, and count each once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from typing import Any

import httpx
import pytest

from agentguard import Signer, TransactionIntent
from agentguard.network._rpc import encode
from agentguard.network.launcher import ReferenceNetwork
from agentguard.network.state import State

pytestmark = pytest.mark.timeout(300)

USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAYEE = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
KILL_AFTER = 150


def test_sigkill_of_the_gateway_loses_no_answered_allow() -> None:
    owner_key = "0x" + "5e" * 32
    client = Signer.from_key(owner_key).address
    with ReferenceNetwork(operators=3, threshold_percentage=66, timeout=10.0) as net:
        net.register_policy_client(
            client,
            "agent_spend",
            {"max_per_tx": {USDC.lower(): str(10**12)}, "allowed_recipients": [PAYEE]},
            owner_key=owner_key,
        )
        gateway = net._gateway
        assert gateway is not None
        answered: dict[str, dict[str, Any]] = {}
        raw: dict[str, bytes] = {}

        async def worker(http: httpx.AsyncClient, n: int, stop: asyncio.Event) -> None:
            k = 0
            while not stop.is_set():
                k += 1
                intent = TransactionIntent.erc20_transfer(
                    sender="0x" + f"{0xA9E000 + n:040x}",
                    token=USDC,
                    recipient=PAYEE,
                    amount=1000 + k,
                    chain_id=8453,
                )
                body = {
                    "jsonrpc": "2.0",
                    "id": str(uuid.uuid4()),
                    "method": "newt_createTask",
                    "params": {"policy_client": client, "intent": intent.wire(), "timeout": 10},
                }
                try:
                    response = await http.post(net.rpc_url, json=body)
                except httpx.HTTPError:
                    return  # the gateway is gone
                if response.status_code != 200:
                    continue
                result = json.loads(response.content).get("result")
                if result and (result.get("attestation") or {}).get("decision") == "allow":
                    answered[result["task_id"]] = result
                    raw[result["task_id"]] = response.content
                    if len(answered) >= KILL_AFTER:
                        stop.set()

        async def load() -> None:
            stop = asyncio.Event()
            headers = {"Authorization": f"Bearer {net.api_key}"}
            async with httpx.AsyncClient(headers=headers, timeout=30.0) as http:
                workers = [asyncio.ensure_future(worker(http, n, stop)) for n in range(24)]
                await stop.wait()
                gateway.send_signal(signal.SIGKILL)  # requests of the other workers in flight
                await asyncio.gather(*workers, return_exceptions=True)

        asyncio.run(load())
        assert gateway.wait(timeout=30) == -signal.SIGKILL
        assert len(answered) >= KILL_AFTER
        state = State(net.state_dir / "state.sqlite3")  # what a restarted gateway reads
        try:
            for task_id, result in answered.items():
                stored = state.stored_result(task_id)
                assert stored == result, task_id
                assert encode(stored) in raw[task_id]  # the very bytes that were answered
                record = state.task(task_id)
                assert record is not None and record.status == "attested"
            counted = state.tasks(limit=1000)
            assert len({t.task_id for t in counted}) == len(counted) >= len(answered)
        finally:
            state.close()
