"""One real reference network (gateway + 3 operator processes) for the whole package."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from coincurve import PrivateKey

from agentguard import TransactionIntent
from agentguard._attestation import operator_address
from agentguard.network.launcher import ReferenceNetwork
from agentguard.policies import Policy

TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"  # USDC on Base
PAYEE = "0x2222222222222222222222222222222222222222"
UNIT = 1_000_000
NETCHECK = Policy.from_dir(Path(__file__).parent / "policies" / "spend_cap")

_agents = itertools.count(1)


def params(
    *,
    max_per_tx: int = 10 * UNIT,
    daily_cap: int = 100 * UNIT,
    rate: int = 1000,
    approval_above: int | None = None,
    recipients: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "max_per_tx": str(max_per_tx),
        "window_caps": [{"asset": TOKEN, "window_seconds": 86400, "max_amount": str(daily_cap)}],
        "rate_limits": [{"window_seconds": 60, "max_count": rate}],
        "allowed_recipients": recipients or [],
        "approval_above": "" if approval_above is None else str(approval_above),
    }


def fresh_agent() -> str:
    """A new agent address per test, so running totals never leak between tests."""
    return "0x" + f"{0xA0000 + next(_agents):040x}"


def fresh_client() -> str:
    """A policy client registered by the network's owner key (as a vault would be)."""
    return "0x" + f"{0xC0000 + next(_agents):040x}"


def fresh_eoa_client() -> tuple[str, str]:
    """An EOA policy client and its key, which signs its own registration."""
    key = PrivateKey()
    return operator_address(key), "0x" + key.secret.hex()


def transfer(agent: str, amount: int = UNIT, recipient: str = PAYEE) -> TransactionIntent:
    return TransactionIntent.erc20_transfer(
        sender=agent, token=TOKEN, recipient=recipient, amount=amount, chain_id=8453
    )


class RPC:
    """A bare JSON-RPC client (the SDK's NewtonGateway is tested elsewhere)."""

    def __init__(self, net: ReferenceNetwork, key: str | None = None) -> None:
        self.url = net.rpc_url
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(headers=headers, timeout=30.0)

    def raw(self, method: str, params: Any, rpc_id: Any = None) -> httpx.Response:
        rpc_id = str(uuid.uuid4()) if rpc_id is None else rpc_id
        return self.http.post(
            self.url, json={"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": params}
        )

    def call(self, method: str, params: Any, rpc_id: Any = None) -> Any:
        body = self.raw(method, params, rpc_id).json()
        assert "error" not in body, body["error"]
        return body["result"]

    def create(
        self, policy_client: str, intent: TransactionIntent, rpc_id: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        request = {"policy_client": policy_client, "intent": intent.wire(), "timeout": 5, **extra}
        result: dict[str, Any] = self.call("newt_createTask", request, rpc_id)
        return result


def decision(result: dict[str, Any]) -> str:
    assert result["status"] == "success", result
    return str(result["attestation"]["decision"])


@pytest.fixture(scope="package")
def network() -> Iterator[ReferenceNetwork]:
    with ReferenceNetwork(
        operators=3, threshold_percentage=66, timeout=3.0, startup_timeout=180.0
    ) as net:
        yield net


@pytest.fixture(scope="package")
def rpc(network: ReferenceNetwork) -> RPC:
    return RPC(network, network.api_key)


@pytest.fixture
def client(network: ReferenceNetwork) -> str:
    """A policy client of its own for each test, on the test policy with default params."""
    address = fresh_client()
    POLICY_IDS[address] = network.register_policy_client(address, NETCHECK, params())
    return address


POLICY_IDS: dict[str, str] = {}
"""The policy id each ``client`` fixture registered, for ``newt_simulateTask``."""


def simulation(intent: dict[str, Any] | Any, policy_id: str, wasm_args: str | None = None) -> Any:
    """``newt_simulateTask`` params in Newton's shape, ``{intent, policy_task_data}``."""
    data = (
        []
        if wasm_args is None
        else [
            {
                "wasmArgs": wasm_args,
                "data": "0x",
                "policyDataAddress": "0x" + "00" * 20,
                "expireBlock": 0,
            }
        ]
    )
    return {
        "intent": intent,
        "policy_task_data": {
            "policyId": policy_id,
            "policyAddress": "0x" + "00" * 20,
            "policy": "0x",
            "policyData": data,
        },
    }
