"""Ledger reserve + commit pairs per second on SQLite, Redis and PostgreSQL, side by side.

    .venv/bin/python benchmarks/bench_ledger_backends.py [--n 2000] [--procs 8] [--json PATH]

Each backend runs twice in this one process run: one process doing ``n`` pairs, then ``procs``
processes doing ``n // procs`` pairs each at once, all on ONE agent's budget (a fleet sharing a
budget: every reserve is checked against the same caps). Each pair is ``reserve`` (a per-tx cap,
two rolling windows and a rate cap) then ``commit``. The servers are real (Redis with its
append-only file, ``appendfsync everysec``; PostgreSQL 15 with its defaults, fsync on),
started on 127.0.0.1 by ``tests/ledger/servers.py`` and stopped after; ``postgres-async``
is the same server with ``synchronous_commit=off`` for this client (no fsync wait per commit). CPU per pair is split
into the agent processes' own (the client) and the server's (the whole process tree); SQLite
has no server, its work is in the client.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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
_TICK = os.sysconf("SC_CLK_TCK")
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


def _tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` (its own, its reaped children's) and of its live children."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        this, parent = int(stat.parent.name), int(fields[1])
        if this == pid:
            total += sum(int(x) for x in fields[11:15]) / _TICK  # utime stime cutime cstime
        elif parent == pid:
            total += sum(int(x) for x in fields[11:13]) / _TICK
    return total


def measure(url: str, server: Server | None, n: int, procs: int, tag: str) -> dict[str, Any]:
    open_ledger(url, create=True).close()  # the schema, before the clock starts
    per = max(1, n // procs)
    start = time.time() + 1.5 + 0.3 * procs
    jobs = [(url, f"{tag}-{p}", per, start) for p in range(procs)]
    server_pid = server.proc.pid if server is not None and server.proc is not None else None
    before = _tree_cpu(server_pid) if server_pid else 0.0
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        results = pool.map(_worker, jobs)
    after = _tree_cpu(server_pid) if server_pid else 0.0
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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="pairs per measurement")
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
    redis, postgres = start_redis(), start_postgres()
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
            backends: list[tuple[str, str, Server | None]] = [
                ("sqlite", f"sqlite:///{tmp}/ledger.db", None),
                ("redis", redis.url, redis),
                ("postgres", postgres.url, postgres),
                # the durability SQLite (synchronous=NORMAL) and Redis (everysec) give: a
                # crash of the server process loses nothing, a power cut the last moment
                ("postgres-async", postgres.url + _ASYNC, postgres),
            ]
            for procs in (1, args.procs):
                for name, url, server in backends:
                    row = {"backend": name, **measure(url, server, args.n, procs, f"p{procs}")}
                    rows.append(row)
                    print(
                        f"{name:14} {procs} process(es): {row['pairs_per_s']:8,.0f} pairs/s, "
                        f"CPU per pair: client {row['client_cpu_ms_per_pair']:.2f} ms, "
                        f"server {row['server_cpu_ms_per_pair']:.2f} ms",
                        flush=True,
                    )
    finally:
        redis.close()
        postgres.close()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps({"n": args.n, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
