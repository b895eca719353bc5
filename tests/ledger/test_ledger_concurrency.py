"""Many threads and many processes on one ledger file never overspend by one atomic unit."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agentguard._exceptions import BudgetExceeded
from agentguard._intent import Spend
from agentguard.ledger import Ledger, Limits, RateCap, WindowCap

USDC = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
AGENT = "0x1111111111111111111111111111111111111111"
BIG = 2**70  # amounts past 2^64 under contention too
CAP = 1500 * BIG + 1


def grab(
    ledger: Ledger, name: str, amounts: list[int], limits: Limits, pause: float = 0.0
) -> list[int]:
    """Reserve each amount once, then fill the rest greedily (halving the amount on each
    refusal) until even 1 unit is refused; return what was granted. ``pause`` after each grant
    keeps one process from taking the whole budget before the others are scheduled."""
    granted: list[int] = []
    fill = max(amounts)
    for i in range(100_000):
        amount = amounts[i] if i < len(amounts) else fill
        try:
            ledger.reserve(
                AGENT,
                Spend(asset=USDC, amount=amount),
                key=f"{name}-{i}",
                expires_at=time.time() + 600,
                limits=limits,
            )
        except BudgetExceeded:
            if i >= len(amounts):
                if fill == 1:
                    return granted
                fill //= 2
        else:
            granted.append(amount)
            time.sleep(pause)
    raise AssertionError("never filled the budget")


@pytest.mark.parametrize("connections", ["shared", "one-per-thread"])
def test_64_threads_never_overspend(tmp_path: Path, connections: str) -> None:
    path = tmp_path / "ledger.db"
    limits = Limits(windows=[WindowCap(USDC, 3600, CAP)])
    shared = Ledger(path)
    results: dict[int, list[int]] = {}
    barrier = threading.Barrier(64)

    def worker(n: int) -> None:
        ledger = shared if connections == "shared" else Ledger(path)
        barrier.wait()
        results[n] = grab(ledger, f"t{n}", [BIG * (1 + n % 7)] * 4, limits)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    granted = sum(sum(r) for r in results.values())
    assert granted == CAP  # filled to the last unit, not one unit more
    assert shared.usage(AGENT, 3600).spent == {USDC: CAP}
    assert shared.usage(AGENT, 3600).count == sum(len(r) for r in results.values())


def test_64_threads_rate_cap_is_exact(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    limits = Limits(rate=[RateCap(3600, 100)])
    granted = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(3):
            try:
                r = ledger.reserve(
                    AGENT,
                    Spend(asset=USDC, amount=1),
                    key=f"{n}-{i}",
                    expires_at=time.time() + 600,
                    limits=limits,
                )
            except BudgetExceeded:
                continue
            with lock:
                granted.append(r.id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == len(set(granted)) == 100
    assert ledger.usage(AGENT, 3600).count == 100


_WORKER = """
import json, os, sys, time
sys.path.insert(0, {tests!r})
from test_ledger_concurrency import AGENT, BIG, CAP, USDC, grab
from agentguard.ledger import Ledger, Limits, WindowCap
path, name, go = sys.argv[1:4]
ledger = Ledger(path)
limits = Limits(windows=[WindowCap(USDC, 3600, CAP)])
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
granted = grab(ledger, name, [BIG * 3, BIG * 5, BIG * 11] * 120, limits, pause=0.002)
print(json.dumps([str(a) for a in granted]))
"""


@pytest.mark.integration
def test_processes_on_one_file_never_overspend(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    go = tmp_path / "go"
    Ledger(path).close()  # create the schema once; workers race on everything else
    code = _WORKER.format(tests=str(Path(__file__).parent))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(path), f"p{n}", str(go)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    for p in procs:  # all imported and connected: start them together
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
    go.touch()
    outs = [p.communicate(timeout=90)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4
    per_process = [[int(a) for a in json.loads(out)] for out in outs]
    # they really raced: the budget was split between processes (busy-wait is not fair, so
    # a slow starter may get nothing)
    assert sum(1 for granted in per_process if granted) >= 2
    assert sum(map(sum, per_process)) == CAP
    assert Ledger(path).usage(AGENT, 3600).spent == {USDC: CAP}
