"""A process SIGKILLed mid-spend: a fresh ledger on the same file recovers exactly right."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentguard._exceptions import BudgetExceeded
from agentguard._intent import Spend
from agentguard.ledger import Ledger, Limits, Reservation, WindowCap

pytestmark = pytest.mark.integration

USDC = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
AGENT = "0x1111111111111111111111111111111111111111"
LIMITS = Limits(windows=[WindowCap(USDC, 86_400, 1_000)])

_CHILD = """
import sys, time
from agentguard._intent import Spend
from agentguard.ledger import Ledger, Limits, WindowCap
path, key, amount, sign = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "sign"
ledger = Ledger(path)
r = ledger.reserve(
    {agent!r}, Spend(asset={usdc!r}, amount=amount), key=key, expires_at=time.time() + 30,
    limits=Limits(windows=[WindowCap({usdc!r}, 86_400, 1_000)]),
)
if sign:
    ledger.mark_signed(r.id, "0x" + "ab" * 32)
print(r.id, flush=True)
time.sleep(600)  # the commit that never comes
ledger.commit(r.id, "never reached")
"""


def spend_then_die(path: Path, key: str, amount: int, sign: bool) -> str:
    code = _CHILD.format(agent=AGENT, usdc=USDC)
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(path), key, str(amount), "sign" if sign else "-"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    reservation_id = child.stdout.readline().strip()
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert reservation_id
    return reservation_id


def test_sigkill_between_reserve_and_commit(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    unsigned = spend_then_die(path, "task-unsigned", 300, sign=False)
    signed = spend_then_die(path, "task-signed", 400, sign=True)

    # Right after the crash (before expiry) both still count: 700 of 1000.
    now = Ledger(path)
    assert now.usage(AGENT, 86_400).spent == {USDC: 700}
    now.close()

    # Restart a minute later, past both expiries.
    later = time.time() + 60
    ledger = Ledger(path, clock=lambda: later)
    asked: list[Reservation] = []

    def resolver(reservation: Reservation) -> str:
        asked.append(reservation)
        return "unknown"  # e.g. the RPC node is not reachable yet

    report = ledger.recover(resolver)  # type: ignore[arg-type]
    assert [r.id for r in report.expired] == [unsigned]
    assert report.expired[0].state == "released"
    assert [r.id for r in asked] == [signed]
    assert asked[0].reference == "0x" + "ab" * 32 and asked[0].state == "signed"
    assert [r.id for r in report.unknown] == [signed]
    # the signed one may have landed: it keeps counting, the unsigned one does not
    assert ledger.usage(AGENT, 86_400).spent == {USDC: 400}
    ledger.reserve(
        AGENT, Spend(asset=USDC, amount=600), key="after", expires_at=later + 30, limits=LIMITS
    )
    with pytest.raises(BudgetExceeded, match="1000 already reserved or spent"):
        ledger.reserve(
            AGENT, Spend(asset=USDC, amount=1), key="after-2", expires_at=later + 30, limits=LIMITS
        )

    # Once the chain answers, the resolver settles it for good.
    report = ledger.recover(lambda r: "committed")
    assert [r.id for r in report.committed] == [signed]
    assert ledger.get(signed).state == "committed"
    assert ledger.get(signed).amount == 400
    assert ledger.recover(lambda r: "released") == type(report)()  # nothing left to settle


def test_resolver_that_fails_leaves_the_spend_counted(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    signed = spend_then_die(path, "task", 250, sign=True)
    later = time.time() + 60
    ledger = Ledger(path, clock=lambda: later)

    def broken(reservation: Reservation) -> str:
        raise ConnectionError("rpc down")

    report = ledger.recover(broken)  # type: ignore[arg-type]
    assert [r.id for r in report.unknown] == [signed]
    assert ledger.usage(AGENT, 86_400).spent == {USDC: 250}
    report = ledger.recover(lambda r: "released")
    assert [r.id for r in report.released] == [signed]
    assert ledger.usage(AGENT, 86_400).spent == {}


def test_sigkill_inside_a_write_transaction_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    Ledger(path).close()
    # A writer dies holding the write lock, mid-insert: SQLite must drop its half-done change
    # and hand the lock back, so the next process can both write and trust what it reads.
    code = (
        "import sqlite3, sys, time\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "db.execute('BEGIN IMMEDIATE')\n"
        'db.execute("INSERT INTO reservations (key, agent, asset, amount, reserved, state, '
        "created_at, expires_at, updated_at) VALUES ('ghost', ?, ?, '999', '999', "
        "'committed', 1, 2, 1)\", (sys.argv[2], sys.argv[3]))\n"
        "print('holding', flush=True)\n"
        "time.sleep(600)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(path), AGENT, USDC], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline() == "holding\n"
    with pytest.raises(sqlite3.OperationalError, match="locked"):  # the lock really is held
        sqlite3.connect(path, timeout=0, isolation_level=None).execute("BEGIN IMMEDIATE")
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)

    ledger = Ledger(path)
    r = ledger.reserve(
        AGENT, Spend(asset=USDC, amount=1_000), key="k", expires_at=time.time() + 30, limits=LIMITS
    )
    assert r.state == "reserved"
    assert ledger.usage(AGENT, 86_400).spent == {USDC: 1_000}
    with pytest.raises(Exception, match="no reservation"):
        ledger.get("ghost")
