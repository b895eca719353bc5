"""Authorization loop figures on this machine (a benchmark, not a test).

Starts the reference network (gateway + 3 operator processes, 2-of-3 quorum) on loopback and
reports: authorize latency p50/p99 (sequential, one client), sustained authorizations per
second (concurrent async clients), and client-side verification cost per attestation.

    .venv/bin/python benchmarks/bench_authorize.py [--requests 1000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from agentguard import AsyncNewtonGateway, NewtonGateway, TransactionIntent, Verifier
from agentguard.network.launcher import ReferenceNetwork

POLICY_CLIENT = "0x00000000000000000000000000000000000BE7C4"
TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAYEE = "0x3333333333333333333333333333333333333333"
AGENT = "0x1111111111111111111111111111111111111111"
PARAMS = {"max_per_tx": {TOKEN.lower(): "1000000000000"}, "allowed_recipients": [PAYEE]}


def intent(i: int) -> TransactionIntent:
    return TransactionIntent.erc20_transfer(
        sender=AGENT, token=TOKEN, recipient=PAYEE, amount=1 + i, chain_id=8453
    )


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency(net: ReferenceNetwork, n: int) -> dict[str, float]:
    samples = []
    with NewtonGateway(net.url, policy_client=POLICY_CLIENT, api_key=net.api_key) as gw:
        for i in range(50):
            gw.authorize(intent(i))
        for i in range(n):
            t = time.perf_counter()
            att = gw.authorize(intent(i))
            samples.append((time.perf_counter() - t) * 1000)
            assert att.decision == "allow", att.reasons
    return {
        "p50_ms": round(statistics.median(samples), 3),
        "p99_ms": round(percentile(samples, 0.99), 3),
        "mean_ms": round(statistics.fmean(samples), 3),
    }


async def throughput(net: ReferenceNetwork, n: int, concurrency: int) -> dict[str, float]:
    async with AsyncNewtonGateway(net.url, policy_client=POLICY_CLIENT, api_key=net.api_key) as gw:
        counter = iter(range(n))
        done = 0

        async def worker() -> None:
            nonlocal done
            for i in counter:
                att = await gw.authorize(intent(i))
                assert att.decision == "allow"
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency // 2)))  # warm up
        counter = iter(range(n))
        done = 0
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "authorizations_per_s": round(done / elapsed, 1),
        "requests": done,
        "concurrency": concurrency,
    }


def verification(net: ReferenceNetwork, n: int) -> dict[str, float]:
    """Verify ``n`` distinct attestations once each (a verifier accepts a task id once)."""
    with NewtonGateway(net.url, policy_client=POLICY_CLIENT, api_key=net.api_key) as gw:
        pairs = [(it, gw.authorize(it)) for it in (intent(10**9 + i) for i in range(n))]
    verifier = Verifier(net.operator_addresses, policy_client=POLICY_CLIENT)
    started = time.perf_counter()
    for it, att in pairs:
        verifier.verify(att, it)
    per = (time.perf_counter() - started) / n * 1000
    return {"verify_ms": round(per, 4), "signatures_checked": len(pairs[0][1].signatures)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with ReferenceNetwork(operators=3, threshold_percentage=66) as net:
        net.register_policy_client(POLICY_CLIENT, "agent_spend", PARAMS)
        report = {
            "latency": latency(net, args.requests),
            "throughput": asyncio.run(throughput(net, args.requests * 2, args.concurrency)),
            "verification": verification(net, 300),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
