"""Rolling windows kept incrementally, and the cap check that reads them.

A window row is what an agent has counted in one asset (or, for the rate caps, in all assets)
over one window length: a reservation counts in it iff it sits after the row's cursor in
(created_at, seq) order. Rolling moves the cursor past what left and subtracts it, so a
reserve costs amortised O(1) however many spends a window holds. Shared by the SQLite and the
in-process backends, which only differ in how they read their reservations (``Reservations``).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, replace
from typing import Any, Protocol

from agentguard.ledger._backend import ReserveRequest
from agentguard.ledger._limits import Limits, per_tx_refusal, rate_refusal, window_refusal

__all__ = [
    "ALL_ASSETS",
    "ORIGIN",
    "Position",
    "Reservations",
    "Row",
    "Window",
    "check_caps",
    "counted",
    "roll",
    "rolled",
]

Position = tuple[float, int]
"""A reservation's place in time order: (created_at, seq)."""
ORIGIN: Position = (float("-inf"), 0)
ALL_ASSETS = ""
"""The asset of the all-assets row used by rate caps (its total stays 0)."""


@dataclass(slots=True)
class Window:
    """One window row, edited inside a transaction and saved if dirty. ``next_at``: created_at
    of the first reservation after the cursor (``None``: none)."""

    agent: str
    asset: str
    seconds: int
    total: int
    count: int
    cursor: Position
    next_at: float | None
    dirty: bool = False

    def counts(self, position: Position) -> bool:
        return position > self.cursor

    def add(self, amount: int, count: int) -> None:
        if self.asset:  # the all-assets row only counts
            self.total += amount
        self.count += count
        self.dirty = True

    def save(self) -> tuple[Any, ...]:
        total = str(self.total) if self.asset else "0"
        return (self.agent, self.asset, self.seconds, total, self.count, *self.cursor, self.next_at)


Row = tuple[float, int, int, str, int]
"""What rolling reads of a reservation: (created_at, seq, amount counted, state, actions)."""


class Reservations(Protocol):
    """How a backend reads its reservations for rolling (inside its transaction or lock)."""

    def after(self, agent: str, asset: str, cursor: Position) -> Generator[Row, None, None]:
        """The agent's reservations after ``cursor``, oldest first (one asset, or all)."""
        ...

    def last_out(self, agent: str, asset: str, boundary: float) -> Position:
        """The newest reservation at or before ``boundary`` (one asset, or all), or ORIGIN."""
        ...


def check_caps(
    rows: Reservations,
    request: ReserveRequest,
    limits: Limits,
    windows: dict[tuple[str, int], Window],
    now: float,
) -> None:
    """Raise the first cap ``request`` would break, rolling (and creating) the window rows it
    reads in ``windows``; the caller saves them if the reservation is made."""
    agent, asset, amount = request.agent, request.asset, request.amount
    cap = limits.per_tx.get(asset)
    if cap is not None and amount > cap:
        raise per_tx_refusal(agent, asset, amount, cap, limits.amount_text(asset))
    for window in limits.windows_for(asset):
        w = rolled(rows, windows, agent, asset, window.window_seconds, now)
        if w.total + amount > window.max_amount:
            after = rows.after(agent, asset, w.cursor)
            in_window = ((at, spent) for at, _, spent, state, _ in after if state != "released")
            refusal = window_refusal(
                agent, window, w.total, amount, in_window, now, limits.amount_text(asset)
            )
            after.close()  # an open cursor would keep a snapshot past the ROLLBACK
            raise refusal
    for rate in limits.rate if request.action else ():  # a fee is not another action
        w = rolled(rows, windows, agent, ALL_ASSETS, rate.window_seconds, now)
        if w.count + 1 > rate.max_count:
            after = rows.after(agent, ALL_ASSETS, w.cursor)
            in_window_at = (
                at for at, _, _, state, actions in after if state != "released" and actions
            )
            refusal = rate_refusal(agent, rate, w.count, in_window_at, now)
            after.close()
            raise refusal


def rolled(
    rows: Reservations,
    windows: dict[tuple[str, int], Window],
    agent: str,
    asset: str,
    seconds: int,
    now: float,
) -> Window:
    """The window row brought up to ``now`` (created from the reservations if new).

    The row is shared by every process of a SQLite file, so it is moved for good only up to
    this host's clock (WAL needs every process on one host, so that clock is the one they
    share): a caller whose ``now`` runs ahead gets a copy rolled further for its own check, and
    the spends it leaves behind stay counted for everyone else."""
    mine = now - seconds
    boundary = min(mine, time.time() - seconds)
    w = windows.get((asset, seconds))
    if w is None:  # first use of this window length: count it from the reservations
        w = windows[(asset, seconds)] = counted(rows, agent, asset, seconds, boundary)
    else:
        roll(rows, w, boundary)
    if mine > boundary:  # ahead of the host's clock: this caller's view only
        w = replace(w)
        roll(rows, w, mine)
    elif w.cursor[0] > mine:
        # Behind what already left the row (the clock went back, or this process's clock lags
        # one that rolled it): what sits in (mine, cursor] is in this caller's window but no
        # longer in the row, and neither is what it reserves there. Counted afresh, as
        # ``usage`` counts; its view only.
        w = counted(rows, agent, asset, seconds, mine)
    return w


def counted(rows: Reservations, agent: str, asset: str, seconds: int, boundary: float) -> Window:
    """A window row counted from the reservations: everything after ``boundary``."""
    cursor = rows.last_out(agent, asset, boundary)
    w = Window(agent, asset, seconds, 0, 0, cursor, None)
    for created_at, _, amount, state, actions in rows.after(agent, asset, cursor):
        if w.next_at is None:
            w.next_at = created_at
        if state != "released":
            w.add(amount, actions)
    w.dirty = True
    return w


def roll(rows: Reservations, w: Window, boundary: float) -> None:
    """Move ``w``'s cursor past every reservation at or before ``boundary``."""
    if w.next_at is None or w.next_at > boundary:
        return  # nothing has left the window since it was last rolled
    w.dirty, w.next_at = True, None
    after = rows.after(w.agent, w.asset, w.cursor)
    for created_at, seq, amount, state, actions in after:
        if created_at > boundary:  # the oldest one still in the window
            w.next_at = created_at
            break
        if state != "released":
            w.add(-amount, -actions)
        w.cursor = (created_at, seq)
    after.close()
