"""Ledger throughput: reserve + commit pairs per second on a SQLite file (WAL).

    /work/main/.venv/bin/python benchmarks/bench_ledger.py [--n 20000] [--synchronous NORMAL|FULL]

Each pair is two transactions (reserve checks a per-tx cap, two rolling windows and a rate cap;
commit settles for less). One agent, so every window holds thousands of spends: the figure shows
that the cost per reserve does not grow with the number of spends in the window.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from agentguard._intent import Spend
from agentguard.ledger import Ledger, Limits, RateCap, WindowCap

USDC = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
AGENT = "0x1111111111111111111111111111111111111111"


def run(n: int, synchronous: str) -> None:
    limits = Limits(
        per_tx={USDC: 10**30},
        windows=[WindowCap(USDC, 3600, 10**40), WindowCap(USDC, 86_400, 10**41)],
        rate=[RateCap(3600, 10**9)],
    )
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / "ledger.db", synchronous=synchronous)  # type: ignore[arg-type]
        spend = Spend(asset=USDC, amount=2**70)
        chunks = []
        start = time.perf_counter()
        chunk_start = start
        for i in range(n):
            r = ledger.reserve(
                AGENT, spend, key=f"task-{i}", expires_at=time.time() + 300, limits=limits
            )
            ledger.commit(r.id, "0xtx", 2**69)
            if (i + 1) % (n // 4) == 0:
                now = time.perf_counter()
                chunks.append((n // 4) / (now - chunk_start))
                chunk_start = now
        elapsed = time.perf_counter() - start
        usage = ledger.usage(AGENT, 3600)
        assert usage.count == n and usage.spent[USDC] == n * 2**69
        ledger.close()
    print(
        f"synchronous={synchronous}: {n} reserve+commit pairs in {elapsed:.2f} s "
        f"= {n / elapsed:,.0f} pairs/s"
    )
    print("  per quarter (window holding 0→n spends): " + ", ".join(f"{c:,.0f}/s" for c in chunks))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    args = parser.parse_args()
    run(args.n, args.synchronous)
