"""kill -9 of agent processes in the middle of reserve / sign / commit, on every backend: what
the caps count afterwards is still exactly what the reservations say."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentguard._exceptions import BudgetExceeded
from agentguard._intent import Spend
from agentguard.ledger import Limits, WindowCap, open_ledger
from tests.ledger.conftest import BACKENDS, base_url, fresh_url

USDC = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
AGENT = "0x1111111111111111111111111111111111111111"
CAP = 10**30
ROOT = Path(__file__).resolve().parents[2]

_WORKER = """
import os, random, sys, time
from agentguard._exceptions import BudgetExceeded
from agentguard._intent import Spend
from agentguard.ledger import Limits, WindowCap, open_ledger
ledger = open_ledger(sys.argv[1])
limits = Limits(windows=[WindowCap(sys.argv[2], 3600, int(sys.argv[3]))])
print("ready", flush=True)
for i in range(10**6):
    try:
        r = ledger.reserve(sys.argv[4], Spend(asset=sys.argv[2], amount=random.randint(1, 10**24)),
                           key=f"{os.getpid()}-{i}", expires_at=time.time() + 600, limits=limits)
    except BudgetExceeded:
        continue
    step = random.random()
    if step < 0.3:
        continue  # left reserved
    ledger.mark_signed(r.id, f"0x{i}")
    if step < 0.6:
        continue  # left signed
    if step < 0.8:
        ledger.commit(r.id, "landed", r.amount - random.randint(0, r.amount))
    else:
        ledger.release(r.id, "never sent")
"""


@pytest.mark.parametrize("kind", BACKENDS)
def test_sigkilled_workers_leave_caps_that_agree_with_the_reservations(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """SQLite's window rows, Redis's kept totals and PostgreSQL's per-second buckets are kept
    beside the reservations; a process killed between any two statements must leave them
    agreeing. Filled to the cap afterwards one unit at a time, the ledger stops exactly at
    the cap by the reservations' own count (usage() recounts them), not a unit before or after."""
    url = fresh_url(kind, base_url(kind, request), tmp_path)
    open_ledger(url, create=True).close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, url, USDC, str(CAP), AGENT],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            text=True,
            start_new_session=True,
        )
        for _ in range(4)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    for proc in procs:  # one after another, each at whatever step it is in
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.25)
    with open_ledger(url) as ledger:
        used = ledger.usage(AGENT, 3600).spent.get(USDC, 0)
        assert 0 < used <= CAP
        limits = Limits(windows=[WindowCap(USDC, 3600, CAP)])
        room = CAP - used
        with pytest.raises(BudgetExceeded):  # one unit more than the reservations leave
            ledger.reserve(
                AGENT, Spend(asset=USDC, amount=room + 1), key="over",
                expires_at=time.time() + 60, limits=limits,
            )  # fmt: skip
        ledger.reserve(
            AGENT, Spend(asset=USDC, amount=room), key="exact", expires_at=time.time() + 60,
            limits=limits,
        )  # fmt: skip
        assert ledger.usage(AGENT, 3600).spent[USDC] == CAP
