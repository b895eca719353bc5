"""One process of the ledger race (``test_ledger_race.py``): M threads reserving, signing and
committing their share of the reservations, and claiming attestations, on one shared ledger.

Reads a JSON job line on stdin, prints ``ready`` once its ledger is open, starts its threads
when the test writes ``go`` (to every worker at once), prints a JSON report.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from agentguard._exceptions import BudgetExceeded
from agentguard._intent import Spend
from agentguard.ledger import Limits, RateCap, WindowCap, open_ledger, open_replay_guard


def main() -> None:
    job: dict[str, Any] = json.loads(sys.stdin.readline())
    ledger = open_ledger(job["url"])
    guard = open_replay_guard(job["url"])
    asset, agent, big = job["asset"], job["agent"], int(job["big"])
    limits = Limits(windows=[WindowCap(asset, 3600, int(job["cap"]))], rate=[RateCap(3600, 10**9)])
    total, slots, n, tasks = job["slots"], job["threads"], job["n"], job["n"] // 4
    committed: dict[str, int] = {}
    claimed: list[int] = []
    refused = [0]
    lock = threading.Lock()

    errors: list[str] = []

    def work(slot: int) -> None:
        try:
            run(slot)
        except Exception as exc:  # reported: the test fails on any
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")

    def run(slot: int) -> None:
        for k in range(slot, n, total):
            try:
                r = ledger.reserve(
                    agent,
                    Spend(asset=asset, amount=big),
                    key=f"r{k}",
                    expires_at=time.time() + 3600,
                    limits=limits,
                )
            except BudgetExceeded:
                with lock:
                    refused[0] += 1
            else:
                ledger.mark_signed(r.id, f"0xtx{k}")
                final = big - k % 3  # some commit less than they held, as upto payments do
                ledger.commit(r.id, "landed", final)
                with lock:
                    committed[r.id] = final
            # each attestation is offered to four workers in different processes
            if guard.claim((k % tasks).to_bytes(32, "big"), int(time.time()) + 3600):
                with lock:
                    claimed.append(k % tasks)

    first = job["process"] * slots
    threads = [threading.Thread(target=work, args=(first + t,)) for t in range(slots)]
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":  # the test gave up: start nothing
        return
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = {
        "committed": committed,
        "claimed": claimed,
        "refused": refused[0],
        "errors": errors,
        "seconds": time.perf_counter() - began,
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
