"""Issue 15's concurrency proof, on each backend: P processes x M threads race N reservations
of 2^70 + 1 atomic units against one window cap that holds exactly N/2 of them, each granted
one is marked signed and committed (some for 1 or 2 units less), and every worker also claims
one of N/4 attestations, each offered to four workers in different processes.

Asserted: exactly N/2 reservations are granted (never one more: the units given back by short
commits are far fewer than one reservation); what the ledger counts is exactly the sum of
what the workers committed, and each of their reservations is committed with that amount;
every attestation is claimed exactly once across all processes.

Size: ``AGENTGUARD_RACE=PxMxN``; the default run keeps issue 15's 8 processes x 16 threads
with N=4000 (same contention at the cap, a third of the time); ``AGENTGUARD_RACE=8x16x10000``
is issue 15's full figure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentguard.ledger import open_ledger
from tests.ledger.conftest import BACKENDS, base_url, fresh_url

USDC = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
AGENT = "0x1111111111111111111111111111111111111111"
BIG = 2**70 + 1
ROOT = Path(__file__).resolve().parents[2]


def _size() -> tuple[int, int, int]:
    p, m, n = (int(x) for x in os.environ.get("AGENTGUARD_RACE", "8x16x4000").split("x"))
    return p, m, n


@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", BACKENDS)
def test_processes_and_threads_race_one_cap(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    processes, threads, n = _size()
    url = fresh_url(kind, base_url(kind, request), tmp_path)
    open_ledger(url, create=True).close()  # the schema once; the workers race on everything else
    cap = (n // 2) * BIG
    job = {
        "url": url,
        "asset": USDC,
        "agent": AGENT,
        "big": str(BIG),
        "cap": str(cap),
        "slots": processes * threads,
        "threads": threads,
        "n": n,
    }
    procs = []
    for p in range(processes):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.ledger.race_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            text=True,
        )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({**job, "process": p}) + "\n")
        proc.stdin.flush()
        procs.append(proc)
    for proc in procs:  # every worker has its ledger open before any starts racing
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.close()
    reports = []
    for proc in procs:
        assert proc.stdout is not None
        out = proc.stdout.read()
        assert proc.wait(timeout=600) == 0, out
        reports.append(json.loads(out.splitlines()[-1]))

    assert [e for r in reports for e in r["errors"]] == []
    committed: dict[str, int] = {}
    for report in reports:
        assert not committed.keys() & report["committed"].keys()
        committed.update(report["committed"])
    assert len(committed) == n // 2  # not one reservation more than the cap holds
    assert len(committed) + sum(r["refused"] for r in reports) == n
    with open_ledger(url) as ledger:
        spent = ledger.usage(AGENT, 3600).spent[USDC]
        assert spent == sum(committed.values()) <= cap  # every commit accounted for, exactly
        for key in list(committed)[:: max(1, len(committed) // 500)]:
            r = ledger.get(key)
            assert (r.state, r.amount, r.reserved) == ("committed", committed[key], BIG)
    claims = [task for r in reports for task in r["claimed"]]
    assert sorted(claims) == list(range(n // 4))  # each attestation once, across processes
    slowest = max(r["seconds"] for r in reports)
    print(f"\n{kind}: {processes}x{threads} racing {n} reservations: {slowest:.1f} s")
