"""Client-side cost of one paid x402 request: agentguard's X402Auth vs x402's own client.

Both clients pay the same in-process server (an ``httpx.MockTransport`` that answers 402 with
a v2 ``PAYMENT-REQUIRED`` and 200 with a ``PAYMENT-RESPONSE`` to any payment, without
verifying or settling), so the figures are what each client spends per paid request:
parse → select → (authorize → verify → reserve) → sign → encode → retry.

* ``official``: ``x402Client`` + ``x402AsyncTransport`` (no authorization at all).
* ``agentguard, authorization excluded``: X402Auth with an in-process 2-of-3 quorum that
  signs attestations locally (no network hop; verification, ledger and signing included).
* ``official + agentguard hook``: x402's client gated by ``authorization_hook`` against the
  reference network (real gateway + 3 operator processes on loopback).
* ``agentguard, authorization included``: X402Auth against the same reference network.

    .venv/bin/python benchmarks/bench_x402.py [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
from coincurve import PrivateKey
from eth_account import Account
from x402 import x402Client
from x402.http.clients.httpx import x402AsyncTransport
from x402.mechanisms.evm import EthAccountSigner
from x402.mechanisms.evm.exact import register_exact_evm_client

from agentguard import AsyncGuard, Signer, Verifier
from agentguard._attestation import (
    Attestation,
    OperatorSignature,
    attestation_digest,
    operator_address,
    sign_attestation,
)
from agentguard._eip712 import keccak
from agentguard.ledger import Ledger
from agentguard.network.launcher import ReferenceNetwork
from agentguard.x402 import Allowances, X402Auth
from agentguard.x402._wire import encode_header
from agentguard.x402.official_hook import authorization_hook

AGENT_KEY = "0x" + "b5" * 32
TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAYEE = "0x3333333333333333333333333333333333333333"
POLICY_CLIENT = "0x00000000000000000000000000000000000BE402"
PARAMS = {"max_per_tx": {TOKEN.lower(): "1000000000"}, "allowed_recipients": [PAYEE]}
URL = "http://bench.test/paid"
REQUIRED = encode_header(
    {
        "x402Version": 2,
        "error": "Payment required",
        "resource": {"url": URL, "description": "", "mimeType": ""},
        "accepts": [
            {
                "scheme": "exact", "network": "eip155:8453", "asset": TOKEN, "amount": "10000",
                "payTo": PAYEE, "maxTimeoutSeconds": 300,
                "extra": {"name": "USD Coin", "version": "2"},
            }
        ],
    }
)  # fmt: skip
RECEIPT = encode_header(
    {"success": True, "transaction": "0x" + "ab" * 32, "network": "eip155:8453", "payer": PAYEE}
)


async def handler(request: httpx.Request) -> httpx.Response:
    if "PAYMENT-SIGNATURE" in request.headers:
        return httpx.Response(200, headers={"PAYMENT-RESPONSE": RECEIPT}, json={"ok": True})
    return httpx.Response(402, headers={"PAYMENT-REQUIRED": REQUIRED}, json={})


class LocalQuorum:
    """Signs attestations in-process with 2 of 3 operator keys: authorization minus the network."""

    policy_client = POLICY_CLIENT

    def __init__(self) -> None:
        self.keys = [PrivateKey(keccak(f"bench operator {i}".encode())) for i in range(3)]
        self.addresses = [operator_address(k) for k in self.keys]

    async def authorize(
        self, intent: Any, *, wasm_args: Mapping[str, Any] | None = None
    ) -> Attestation:
        task, policy = secrets.token_bytes(32), keccak(b"bench policy")
        expires = int(time.time()) + 300
        digest = attestation_digest(
            chain_id=8453, policy_client=bytes.fromhex(POLICY_CLIENT[2:]), task_id=task,
            policy_id=policy, intent_hash=intent.intent_hash, allow=True, expires_at=expires,
        )  # fmt: skip
        return Attestation(
            decision="allow", task_id=task, policy_id=policy, policy_client=POLICY_CLIENT,
            intent_hash=intent.intent_hash, expires_at=expires,
            signatures=tuple(
                OperatorSignature(operator=a, signature=sign_attestation(k, digest))
                for k, a in zip(self.keys[:2], self.addresses, strict=False)
            ),
        )  # fmt: skip

    async def commit(self, task_id: str, outcome: str) -> None:
        return None

    async def release(self, task_id: str) -> None:
        return None


def official(hook: Any = None) -> httpx.AsyncClient:
    client = x402Client()
    register_exact_evm_client(client, EthAccountSigner(Account.from_key(AGENT_KEY)))
    client.set_spend_controls(
        {
            "allowed_assets": [
                {"network": "eip155:8453", "asset": TOKEN, "max_amount_per_payment": "1000000"}
            ]
        }
    )
    if hook is not None:
        client.on_before_payment_creation(hook)
    return httpx.AsyncClient(transport=x402AsyncTransport(client, httpx.MockTransport(handler)))


def agentguard_client(guard: AsyncGuard) -> httpx.AsyncClient:
    auth = X402Auth(
        signer=Signer.from_key(AGENT_KEY), guard=guard, ledger=Ledger(),
        allowances=Allowances({TOKEN: 1_000_000}),
    )  # fmt: skip
    return auth.async_client(transport=httpx.MockTransport(handler))


async def measure(make: Callable[[], httpx.AsyncClient], n: int) -> dict[str, float]:
    samples: list[float] = []
    async with make() as http:
        for i in range(n + 20):
            t = time.perf_counter()
            response = await http.get(URL, params={"i": i})
            elapsed = (time.perf_counter() - t) * 1000
            assert response.status_code == 200, response.status_code
            if i >= 20:  # warm-up
                samples.append(elapsed)
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(samples), 3),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
        "mean_ms": round(statistics.fmean(samples), 3),
    }


async def main(n: int) -> None:
    results: dict[str, dict[str, float]] = {}
    quorum = LocalQuorum()
    local_guard = AsyncGuard(quorum, Verifier(quorum.addresses, policy_client=POLICY_CLIENT))  # type: ignore[arg-type]
    results["official x402 client"] = await measure(official, n)
    results["agentguard X402Auth, authorization excluded"] = await measure(
        lambda: agentguard_client(local_guard), n
    )
    with ReferenceNetwork(operators=3, threshold_percentage=66) as net:
        net.register_policy_client(POLICY_CLIENT, "agent_spend", PARAMS)
        async with AsyncGuard.connect(
            net.url,
            policy_client=POLICY_CLIENT,
            operators=net.operator_addresses,
            api_key=net.api_key,
            policy_id=net.policy_clients[POLICY_CLIENT],
        ) as guard:
            payer = Account.from_key(AGENT_KEY).address

            def make_hooked() -> httpx.AsyncClient:
                return official(authorization_hook(guard, payer=payer))

            results[
                "official x402 client + agentguard hook, authorization included"
            ] = await measure(make_hooked, n)
            results["agentguard X402Auth, authorization included"] = await measure(
                lambda: agentguard_client(guard), n
            )
    print(json.dumps({"requests": n, "results": results}, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    run: Callable[[int], Awaitable[None]] = main
    asyncio.run(run(parser.parse_args().requests))
