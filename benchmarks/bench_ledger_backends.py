"""Ledger reserve + commit pairs per second on SQLite, Redis and PostgreSQL, side by side.

    .venv/bin/python benchmarks/bench_ledger_backends.py [--n 2000] [--procs 8] [--json PATH]
        [--quick]

Each backend runs twice in this one process run: one process doing ``n`` pairs, then ``procs``
processes doing ``n // procs`` pairs each at once, all on ONE agent's budget (a fleet sharing a
budget: every reserve is checked against the same caps). Each pair is ``reserve`` (a per-tx cap,
two rolling windows and a rate cap) then ``commit``. The servers are real (Redis with its
append-only file, ``appendfsync always``, which the ledger requires; PostgreSQL 15 with its defaults, fsync on),
started on 127.0.0.1 by ``tests/ledger/servers.py`` and stopped after; ``postgres-async``
is the same server with ``synchronous_commit=off`` for this client (no fsync wait per commit). CPU per pair is split
into the agent processes' own (the client) and the server's (the whole process tree); SQLite
has no server, its work is in the client.
"""

from __future__ import annotations

import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import emit, machine, parser, tree_cpu

from agentguard._intent import Spend
from agentguard.ledger import Limits, RateCap, WindowCap, open_ledger
from tests.ledger.servers import Server, start_postgres, start_redis

USDC = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
AGENT = "0x1111111111111111111111111111111111111111"
LIMITS = Limits(
    per_tx={USDC: 10**30},
    windows=[WindowCap(USDC, 3600, 10**40), WindowCap(USDC, 86_400, 10**41)],
    rate=[RateCap(3600, 10**9)],
)
_ASYNC = "?options=-c%20synchronous_commit%3Doff"


def _worker(job: tuple[str, str, int, float]) -> tuple[float, float, float]:
    """(start, end, CPU seconds) of ``n`` pairs, begun at the common start time."""
    url, name, n, start = job
    ledger = open_ledger(url)
    spend = Spend(asset=USDC, amount=2**70)
    time.sleep(max(0.0, start - time.time()))
    cpu, began = time.process_time(), time.time()
    for i in range(n):
        r = ledger.reserve(
            AGENT, spend, key=f"{name}-{i}", expires_at=time.time() + 300, limits=LIMITS
        )
        ledger.commit(r.id, "0xtx")
    ended = time.time()
    ledger.close()
    return began, ended, time.process_time() - cpu


def measure(url: str, server: Server | None, n: int, procs: int, tag: str) -> dict[str, Any]:
    open_ledger(url, create=True).close()  # the schema, before the clock starts
    per = max(1, n // procs)
    start = time.time() + 1.5 + 0.3 * procs
    jobs = [(url, f"{tag}-{p}", per, start) for p in range(procs)]
    server_pid = server.proc.pid if server is not None and server.proc is not None else None
    before = tree_cpu(server_pid) if server_pid else 0.0
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        results = pool.map(_worker, jobs)
    after = tree_cpu(server_pid) if server_pid else 0.0
    pairs = per * procs
    elapsed = max(e for _, e, _ in results) - min(b for b, _, _ in results)
    return {
        "processes": procs,
        "pairs": pairs,
        "pairs_per_s": pairs / elapsed,
        "client_cpu_ms_per_pair": 1000 * sum(c for _, _, c in results) / pairs,
        "server_cpu_ms_per_pair": 1000 * (after - before) / pairs,
    }


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--n", type=int, default=2000, help="pairs per measurement")
    p.add_argument("--procs", type=int, default=8)
    args = p.parse_args()
    if args.quick:
        args.n, args.procs = 40, 2
    started = machine()
    redis, postgres = start_redis(), start_postgres()
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
            backends: list[tuple[str, str, Server | None]] = [
                ("sqlite", f"sqlite:///{tmp}/ledger.db", None),
                ("redis", redis.url, redis),
                ("postgres", postgres.url, postgres),
                # the durability SQLite (synchronous=NORMAL) gives: a
                # crash of the server process loses nothing, a power cut the last moment
                ("postgres-async", postgres.url + _ASYNC, postgres),
            ]
            for procs in (1, args.procs):
                for name, url, server in backends:
                    figures = measure(url, server, args.n, procs, f"p{procs}")
                    rows.append({"backend": name, **figures})
    finally:
        redis.close()
        postgres.close()
    sqlite = {r["processes"]: r["pairs_per_s"] for r in rows if r["backend"] == "sqlite"}
    for r in rows:
        r["x_sqlite"] = round(r["pairs_per_s"] / sqlite[r["processes"]], 2)
        for key in ("pairs_per_s", "client_cpu_ms_per_pair", "server_cpu_ms_per_pair"):
            r[key] = round(r[key], 3)
    notes = (
        f"{args.n} reserve + commit pairs per measurement, on one agent's budget; "
        f"{args.procs} processes share them in the multi-process rows."
    )
    emit(args.json, "ledger_backends", started, rows, notes)


if __name__ == "__main__":
    main()
