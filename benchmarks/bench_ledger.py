"""Ledger throughput: reserve + commit pairs per second on a SQLite file (WAL, on disk).

    .venv/bin/python benchmarks/bench_ledger.py [--n 20000] [--synchronous NORMAL|FULL]
        [--json PATH] [--quick]

Each pair is two write transactions: ``reserve`` checks a per-tx cap, two rolling windows and a
rate cap and inserts; ``commit`` settles it (in full, or for less as an ``upto`` payment does).
One agent, so the windows hold every spend made: the per-quarter figures show that a reserve
does not get slower as a window fills. For scale, the same disk's ceiling is printed too: pairs
of two empty-ish write transactions (one single-row insert each) in bare ``sqlite3``.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Literal

from _common import emit, machine, parser

from agentguard._intent import Spend
from agentguard.ledger import Ledger, Limits, RateCap, WindowCap

USDC = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
AGENT = "0x1111111111111111111111111111111111111111"
LIMITS = Limits(
    per_tx={USDC: 10**30},
    windows=[WindowCap(USDC, 3600, 10**40), WindowCap(USDC, 86_400, 10**41)],
    rate=[RateCap(3600, 10**9)],
)


def ledger_pairs(
    directory: Path, n: int, synchronous: Literal["NORMAL", "FULL"], upto: bool
) -> tuple[float, list[float]]:
    ledger = Ledger(directory / f"ledger-{upto}.db", synchronous=synchronous)
    spend = Spend(asset=USDC, amount=2**70)
    quarter, rates = max(n // 4, 1), []
    start = lap = time.perf_counter()
    for i in range(n):
        r = ledger.reserve(
            AGENT, spend, key=f"task-{i}", expires_at=time.time() + 300, limits=LIMITS
        )
        ledger.commit(r.id, "0xtx", 2**69 if upto else None)
        if (i + 1) % quarter == 0:
            now = time.perf_counter()
            rates.append(quarter / (now - lap))
            lap = now
    elapsed = time.perf_counter() - start
    usage = ledger.usage(AGENT, 3600)
    assert usage.count == n and usage.spent[USDC] == n * (2**69 if upto else 2**70)
    ledger.close()
    return n / elapsed, rates


def bare_pairs(directory: Path, n: int, synchronous: str) -> float:
    db = sqlite3.connect(directory / "bare.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    start = time.perf_counter()
    for i in range(n):
        for _ in range(2):
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t (v) VALUES (?)", (str(i),))
            db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return n / elapsed


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    args = p.parse_args()
    if args.quick:
        args.n = 200
    started = machine()
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        directory = Path(tmp)
        for upto in (False, True):
            rate, quarters = ledger_pairs(directory, args.n, args.synchronous, upto)
            what = "commit for less (upto)" if upto else "commit in full"
            rows.append(
                {
                    "case": f"ledger reserve + {what}",
                    "pairs_per_s": round(rate),
                    "by_quarter": [round(q) for q in quarters],
                }
            )
        bare = bare_pairs(directory, args.n, args.synchronous)
        rows.append(
            {
                "case": "bare sqlite3, two 1-row write transactions (ceiling)",
                "pairs_per_s": round(bare),
                "by_quarter": [],
            }
        )
    notes = f"{args.n} pairs per case; SQLite file in WAL mode, synchronous={args.synchronous}."
    emit(args.json, "ledger", started, rows, notes)


if __name__ == "__main__":
    main()
