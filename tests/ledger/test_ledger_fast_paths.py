"""The SQLite backend's one-statement transitions (``UPDATE ... RETURNING``) against its checked
path (load, ``check_*``, update): the same answers and the same refusals, step for step.

The fast statements carry the checked path's conditions in their ``WHERE``; a condition left out
would let a transition through that the checked path refuses. Each scenario below runs twice,
once per path, on a file ledger, and the two runs must agree exactly (returned reservations,
refusal classes and messages, the rows left behind)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentguard._exceptions import AttestationReplayed, BudgetExceeded, ReservationError
from agentguard._intent import Spend
from agentguard.ledger import Ledger, Limits, WindowCap, _sqlite

USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
AGENT = "0x1111111111111111111111111111111111111111"
T0 = 1_764_000_000.0
LIMITS = Limits(windows=[WindowCap(USDC, 3600, 100)])


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=[True, False], ids=["fast", "checked"])
def fast(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[bool]:
    if request.param and not _sqlite._RETURNING:
        pytest.skip(f"SQLite {sqlite3.sqlite_version} has no RETURNING (3.35+)")
    monkeypatch.setattr(_sqlite, "_RETURNING", request.param)
    yield request.param


def _run(ledger: Ledger, clock: Clock, steps: list[Callable[[Ledger], Any]]) -> list[Any]:
    """Each step's result, or its refusal as (class name, message)."""
    out: list[Any] = []
    for step in steps:
        try:
            out.append(step(ledger))
        except (ReservationError, AttestationReplayed, BudgetExceeded) as exc:
            out.append((type(exc).__name__, exc.message))
        clock.now += 1
    return out


def _hold(key: str, amount: int = 10) -> Callable[[Ledger], Any]:
    return lambda ledger: ledger.reserve(
        AGENT, Spend(asset=USDC, amount=amount), key=key, expires_at=T0 + 60, limits=LIMITS
    )


SCENARIOS: dict[str, list[Callable[[Ledger], Any]]] = {
    "the whole life, each step repeated": [
        _hold("a"),
        lambda lg: lg.bind("a", task_id="0xt1", expires_at=T0 + 30),
        lambda lg: lg.bind("a", task_id="0xt1", expires_at=T0 + 30),
        lambda lg: lg.mark_signed("a", "0xref"),
        lambda lg: lg.mark_signed("a", "0xref"),
        lambda lg: lg.commit("a", "settled"),
        lambda lg: lg.commit("a", "settled"),
        lambda lg: lg.usage(AGENT, 3600),
    ],
    # An attacker's replay: one attestation backing two holds (two payments on one approval).
    "one attestation bound to two holds": [
        _hold("a"),
        _hold("b"),
        lambda lg: lg.bind("a", task_id="0xt1", expires_at=T0 + 30),
        lambda lg: lg.bind("b", task_id="0xt1", expires_at=T0 + 30),
        lambda lg: lg.bind("a", task_id="0xt2", expires_at=T0 + 30),
    ],
    "signing on an expired hold": [
        _hold("a"),
        lambda lg: lg.bind("a", task_id="0xt1", expires_at=T0 + 2),
        lambda lg: lg.mark_signed("a", "0xref"),
    ],
    "binding an expired hold": [
        lambda lg: lg.reserve(
            AGENT, Spend(asset=USDC, amount=5), key="a", expires_at=T0 + 1, limits=LIMITS
        ),
        lambda lg: lg.bind("a", task_id="0xt1", expires_at=T0 + 30),
    ],
    "re-signing with another reference, signing after commit": [
        _hold("a"),
        lambda lg: lg.mark_signed("a", "0xref"),
        lambda lg: lg.mark_signed("a", "0xother"),
        lambda lg: lg.commit("a", "settled"),
        lambda lg: lg.mark_signed("a", "0xref"),
        lambda lg: lg.bind("a", task_id="0xt1", expires_at=T0 + 30),
    ],
    "commit after release, release after commit, a second outcome": [
        _hold("a"),
        _hold("b"),
        lambda lg: lg.release("a", "denied"),
        lambda lg: lg.commit("a", "settled"),
        lambda lg: lg.commit("b", "settled"),
        lambda lg: lg.commit("b", "another outcome"),
        lambda lg: lg.release("b", "too late"),
        lambda lg: lg.usage(AGENT, 3600),
    ],
    "the window still counts a full commit, and a partial one gives back": [
        _hold("a", 60),
        lambda lg: lg.commit("a", "settled"),
        _hold("b", 40),
        lambda lg: lg.commit("b", "settled", 15),
        _hold("c", 26),
        _hold("d", 25),
        lambda lg: lg.usage(AGENT, 3600),
    ],
    "unknown reservations": [
        lambda lg: lg.bind("nope", task_id="0xt1", expires_at=T0 + 30),
        lambda lg: lg.mark_signed("nope", "0xref"),
        lambda lg: lg.commit("nope", "settled"),
    ],
}


def _rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        reservations = db.execute("SELECT * FROM reservations ORDER BY seq").fetchall()
        windows = db.execute("SELECT * FROM windows ORDER BY agent, asset, seconds").fetchall()
    return reservations + windows


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_fast_and_checked_paths_agree(name: str, tmp_path: Path) -> None:
    results = []
    for flag in (True, False):
        if flag and not _sqlite._RETURNING:
            pytest.skip(f"SQLite {sqlite3.sqlite_version} has no RETURNING (3.35+)")
        path = tmp_path / f"{flag}.db"
        clock = Clock()
        ledger = Ledger(path, clock=clock)
        original = _sqlite._RETURNING
        _sqlite._RETURNING = flag
        try:
            answers = _run(ledger, clock, SCENARIOS[name])
        finally:
            _sqlite._RETURNING = original
        ledger.close()
        results.append((answers, _rows(path)))
    assert results[0] == results[1]


def test_the_fast_path_refuses_a_replayed_attestation(fast: bool, tmp_path: Path) -> None:
    """Attack: one quorum attestation bound to a second hold would back a second payment. The
    one-statement bind must refuse it exactly as the checked path does (``NOT EXISTS``)."""
    ledger = Ledger(tmp_path / "l.db", clock=Clock())
    for key in ("a", "b"):
        _hold(key)(ledger)
    ledger.bind("a", task_id="0xt1", expires_at=T0 + 30)
    with pytest.raises(AttestationReplayed, match="already backs reservation a"):
        ledger.bind("b", task_id="0xt1", expires_at=T0 + 30)
    assert ledger.get("b").task_id is None


def test_the_fast_path_never_marks_an_expired_hold_signed(fast: bool, tmp_path: Path) -> None:
    """A hold whose attestation expired may already have been given back: signing on it would
    spend budget nobody holds. The fast ``mark_signed`` carries the expiry in its ``WHERE``."""
    clock = Clock()
    ledger = Ledger(tmp_path / "l.db", clock=clock)
    _hold("a")(ledger)
    ledger.bind("a", task_id="0xt1", expires_at=T0 + 5)
    clock.now = T0 + 5  # exactly at expiry: refused (the checked path says now >= expires_at)
    with pytest.raises(ReservationError, match="expired"):
        ledger.mark_signed("a", "0xref")
    assert ledger.get("a").state == "reserved"
