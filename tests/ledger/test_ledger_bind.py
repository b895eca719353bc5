"""Holds made before authorization (``bind``), fee holds (``action=False``), onchain-proven
amounts (``Spent``) and the schema v1 → v2 upgrade; all but the upgrade on every backend."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import pytest

from agentguard._exceptions import (
    AttestationReplayed,
    BudgetExceeded,
    ConfigurationError,
    ReservationError,
)
from agentguard._intent import Spend
from agentguard.ledger import Ledger, Limits, RateCap, Spent, WindowCap

USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
ETH = "0x0000000000000000000000000000000000000000"
AGENT = "0x1111111111111111111111111111111111111111"
T0 = 1_764_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def spend(amount: int, asset: str = USDC) -> Spend:
    return Spend(asset=asset, amount=amount)


def test_bind_moves_a_local_hold_to_the_attestations_life(
    open_shared: Callable[..., Ledger],
) -> None:
    clock = Clock()
    ledger = open_shared(clock=clock)
    hold = ledger.reserve(AGENT, spend(5), key="local:1", expires_at=T0 + 120, limits=Limits())
    bound = ledger.bind(hold.id, task_id="0xt1", expires_at=T0 + 30)
    assert (bound.task_id, bound.expires_at, bound.state) == ("0xt1", T0 + 30, "reserved")
    assert ledger.bind(hold.id, task_id="0xt1", expires_at=T0 + 30) == bound  # idempotent
    with pytest.raises(ReservationError, match="bound to 0xt1"):
        ledger.bind(hold.id, task_id="0xt2", expires_at=T0 + 30)
    clock.now = T0 + 31  # the attestation expired unsigned: nothing may be signed on it
    with pytest.raises(ReservationError, match="expired"):
        ledger.mark_signed(hold.id, "0xtx:0")


def test_one_attestation_backs_one_reservation(open_shared: Callable[..., Ledger]) -> None:
    """Before: a host handing one attestation to two runs got both holds bound to it (only the
    Signer's one-time ticket stopped a second signature). Now the ledger refuses the second."""
    ledger = open_shared(clock=Clock())
    first = ledger.reserve(AGENT, spend(5), key="local:1", expires_at=T0 + 120, limits=Limits())
    second = ledger.reserve(AGENT, spend(5), key="local:2", expires_at=T0 + 120, limits=Limits())
    ledger.bind(first.id, task_id="0xt1", expires_at=T0 + 30)
    with pytest.raises(AttestationReplayed, match="already backs reservation local:1"):
        ledger.bind(second.id, task_id="0xt1", expires_at=T0 + 30)
    assert ledger.get(second.id).task_id is None


def test_a_hold_that_expired_before_the_attestation_came_cannot_be_bound(
    open_shared: Callable[..., Ledger],
) -> None:
    """Its hold may have been given back meanwhile (by another process's reserve)."""
    clock = Clock()
    ledger = open_shared(clock=clock)
    hold = ledger.reserve(AGENT, spend(5), key="local:1", expires_at=T0 + 10, limits=Limits())
    clock.now = T0 + 11
    with pytest.raises(ReservationError, match="expired"):
        ledger.bind(hold.id, task_id="0xt1", expires_at=T0 + 60)
    ledger.reserve(AGENT, spend(1), key="local:2", expires_at=T0 + 70, limits=Limits())
    assert ledger.get(hold.id).state == "released"
    with pytest.raises(ReservationError):
        ledger.bind(hold.id, task_id="0xt1", expires_at=T0 + 60)


def test_a_fee_hold_counts_by_amount_not_as_an_action(open_shared: Callable[..., Ledger]) -> None:
    ledger = open_shared(clock=Clock())
    limits = Limits(rate=[RateCap(3600, 1)], windows=[WindowCap(ETH, 3600, 100)])
    ledger.reserve(AGENT, spend(5), key="a", expires_at=T0 + 60, limits=limits)
    fee = ledger.reserve(
        AGENT, spend(60, ETH), key="a:fee", expires_at=T0 + 60, limits=limits, action=False
    )
    assert ledger.usage(AGENT, 3600).count == 1
    with pytest.raises(BudgetExceeded):  # the ETH window holds the fee
        ledger.reserve(
            AGENT, spend(41, ETH), key="b:fee", expires_at=T0 + 60, limits=limits, action=False
        )
    ledger.commit(fee.id, "0xtx", 21)  # what the receipt says was paid
    assert ledger.usage(AGENT, 3600).spent[ETH] == 21
    with pytest.raises(BudgetExceeded):  # the one action still counts for the rate cap
        ledger.reserve(AGENT, spend(1), key="c", expires_at=T0 + 60, limits=limits)


def test_recover_commits_an_onchain_proven_amount(open_shared: Callable[..., Ledger]) -> None:
    ledger = open_shared(clock=Clock())
    r = ledger.reserve(AGENT, spend(100), key="u", expires_at=T0 + 60, limits=Limits())
    ledger.mark_signed(r.id, "permit2:8453:0xowner:7:1764000060")
    report = ledger.recover(lambda _: Spent(30))
    (done,) = report.committed
    assert (done.amount, done.reserved, done.outcome) == (30, 100, "recovered: settled onchain")
    r2 = ledger.reserve(AGENT, spend(100), key="v", expires_at=T0 + 60, limits=Limits())
    ledger.mark_signed(r2.id, "ref")
    assert ledger.recover(lambda _: Spent(10**9)).committed[0].amount == 100  # never above
    r3 = ledger.reserve(AGENT, spend(1), key="w", expires_at=T0 + 60, limits=Limits())
    ledger.mark_signed(r3.id, "ref")
    with pytest.raises(ConfigurationError):
        ledger.recover(lambda _: Spent(-1))


def test_a_version_1_file_is_upgraded_in_place(tmp_path) -> None:
    path = tmp_path / "v1.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        """CREATE TABLE reservations (seq INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE,
        agent TEXT NOT NULL, asset TEXT NOT NULL, amount TEXT NOT NULL, reserved TEXT NOT NULL,
        recipient TEXT, state TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL,
        updated_at REAL NOT NULL, reference TEXT, outcome TEXT, reason TEXT);
        INSERT INTO reservations (key, agent, asset, amount, reserved, state, created_at,
        expires_at, updated_at, reference) VALUES ('old', 'a', 'x', '7', '7', 'signed',
        1.0, 2.0, 1.0, 'ref');
        PRAGMA user_version = 1;"""
    )
    db.close()
    ledger = Ledger(path)
    old = ledger.get("old")
    assert (old.amount, old.action, old.task_id, old.state) == (7, True, None, "signed")
