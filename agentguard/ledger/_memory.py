"""The process-local ledger backend (``Ledger()``): the SQLite backend's rules on Python objects.

A ``":memory:"`` SQLite database is private to its connection, so it never shared a budget
with anything; it only paid SQLite's statement machinery on every call (four transactions per
payment). This backend keeps the same state in dicts and per-agent lists under one lock and
applies the same rules in the same order, so every answer, refusal and usage figure is the
SQLite backend's (``tests/ledger/test_ledger_memory.py`` replays seeded random sequences on
both and compares every result):

* the lifecycle checks are ``_transitions``'s, the refusals ``_limits``'s;
* windows roll exactly as SQLite's do (the same cursor rows, ``_window.Window``, moved only up
  to the host's clock), so even a clock that runs ahead or goes back counts the same;
* a ``reserve`` refused by a cap leaves nothing behind, not even the expired holds it gave
  back on the way (SQLite rolls its transaction back; here an undo list does);
* like a ``":memory:"`` database it keeps every reservation (one per key, ever: ``reserve`` is
  idempotent and ``get`` answers for life), and a forked child starts empty.
"""

from __future__ import annotations

import bisect
import heapq
import operator
import os
import threading
import weakref
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, fields, replace

from agentguard._exceptions import AttestationReplayed, LedgerUnavailable, ReservationError
from agentguard.ledger._backend import ReserveRequest, Usage
from agentguard.ledger._limits import Limits
from agentguard.ledger._reservation import Reservation
from agentguard.ledger._transitions import (
    check_bind,
    check_commit,
    check_mark_signed,
    check_release,
    check_same_spend,
    new_reservation,
    replayed_message,
)
from agentguard.ledger._window import ALL_ASSETS, ORIGIN, Position, Row, Window, check_caps

__all__ = ["MemoryBackend"]


@dataclass(slots=True, eq=False)
class _Held:
    """One stored reservation. ``r`` is private to the ledger (never handed out, only
    ``_out``'s copies are), so a change edits it in place (``_edit``) under the lock: one
    ``Reservation`` built per change (the answer), not two."""

    r: Reservation
    seq: int


def _position(held: _Held) -> Position:
    return (held.r.created_at, held.seq)


def _created(held: _Held) -> float:
    return held.r.created_at


_WindowKey = tuple[str, int]  # (asset, seconds) within one agent, as SQLite's rows are keyed

_RESERVATION_FIELDS = operator.attrgetter(*(f.name for f in fields(Reservation)))
# The slots' own setters, in field order: sixteen names, so a field added to or taken from
# ``Reservation`` fails this unpacking at import, never a copy at run time.
(_S0, _S1, _S2, _S3, _S4, _S5, _S6, _S7, _S8, _S9, _S10, _S11, _S12, _S13, _S14, _S15) = (
    getattr(Reservation, f.name).__set__ for f in fields(Reservation)
)
_new = object.__new__


def _out(r: Reservation) -> Reservation:
    """A copy of a stored reservation for the caller: the stored one is the ledger's state, and
    a frozen dataclass can still be edited (``object.__setattr__``), so it is never handed out.
    Slot by slot, written out (no loop, no ``__init__`` and its sixteen ``__setattr__`` calls):
    under two thirds of what ``Reservation(*fields)`` costs, and ``Reservation`` has no
    ``__post_init__`` to skip."""
    new = _new(Reservation)
    v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15 = _RESERVATION_FIELDS(r)
    _S0(new, v0)
    _S1(new, v1)
    _S2(new, v2)
    _S3(new, v3)
    _S4(new, v4)
    _S5(new, v5)
    _S6(new, v6)
    _S7(new, v7)
    _S8(new, v8)
    _S9(new, v9)
    _S10(new, v10)
    _S11(new, v11)
    _S12(new, v12)
    _S13(new, v13)
    _S14(new, v14)
    _S15(new, v15)
    return new


_set = object.__setattr__


_FIELD_NAMES = tuple(f.name for f in fields(Reservation))


def _edit(r: Reservation, **changes: object) -> None:
    """Change fields of a stored (never handed out) reservation in place: ``Reservation``
    is frozen for its holders; the ledger's own record is its state, edited under the lock.
    All or nothing, as SQLite's statement: an exception between two writes (a signal's
    ``KeyboardInterrupt``) puts back every field, never leaves it released but counting."""
    saved = _RESERVATION_FIELDS(r)
    try:
        for name, value in changes.items():
            _set(r, name, value)
    except BaseException:
        for name, value in zip(_FIELD_NAMES, saved, strict=True):
            _set(r, name, value)
        raise


_LIVE: weakref.WeakSet[MemoryBackend] = weakref.WeakSet()


def _reset_in_child() -> None:
    """A forked child starts every in-memory ledger empty, before any of its threads runs: a
    reset on the first call instead let two threads of the child both reset, the second one
    wiping what the first had just reserved."""
    for backend in list(_LIVE):
        backend._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)


class MemoryBackend:
    """``LedgerBackend`` in this process's memory: what ``Ledger()`` uses."""

    def __init__(self) -> None:
        self._closed = False
        self._reset()
        _LIVE.add(self)

    def _reset(self) -> None:
        """Empty, with a fresh lock (one held at the fork stays held in the child); a closed
        ledger stays closed."""
        self._lock = threading.Lock()
        self._seq = 0
        self._by_key: dict[str, _Held] = {}
        self._by_agent: dict[str, list[_Held]] = {}  # (created_at, seq) order
        self._by_task: dict[str, str] = {}  # attestation task id -> reservation key
        self._signed: dict[str, _Held] = {}
        # (expires_at, seq, held) of unsigned holds; an entry whose hold moved on (bound to
        # another expiry, signed, settled) is dropped when it comes up.
        self._expiries: list[tuple[float, int, _Held]] = []
        self._windows: dict[tuple[str, str], dict[int, Window]] = {}
        self._names: dict[str, str] = {}  # one copy of each agent and asset string

    def _enter(self) -> None:
        if self._closed:
            raise LedgerUnavailable("the in-memory ledger was closed")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._by_key, self._by_agent, self._by_task, self._signed = {}, {}, {}, {}
            self._expiries, self._windows, self._names = [], {}, {}

    # -- LedgerBackend -----------------------------------------------------------------------

    def reserve(self, request: ReserveRequest, limits: Limits, now: float) -> Reservation:
        self._enter()
        now = float(now)
        with self._lock:
            existing = self._by_key.get(request.key)
            if existing is not None:  # asked again: the first answer, nothing expired
                return _out(check_same_spend(existing.r, request))
            undo: list[Callable[[], None]] = []
            try:
                self._release_due(now, undo)
                windows = self._load_windows(request.agent, request.asset)
                check_caps(self, request, limits, windows, now)
            except BaseException:
                _roll_back(undo)
                raise
            self._seq += 1
            names = self._names
            reservation = new_reservation(
                request,
                now,
                agent=names.setdefault(request.agent, request.agent),
                asset=names.setdefault(request.asset, request.asset),
            )
            held = _Held(reservation, self._seq)
            self._by_key[request.key] = held
            rows = self._by_agent.setdefault(request.agent, [])
            if rows and _position(rows[-1]) > _position(held):  # the clock went back
                bisect.insort(rows, held, key=_position)
            else:
                rows.append(held)
            heapq.heappush(self._expiries, (reservation.expires_at, held.seq, held))
            position = _position(held)
            for w in windows.values():
                if w.counts(position):
                    w.add(request.amount, int(request.action))
                    w.next_at = now if w.next_at is None else min(w.next_at, now)
            self._save(windows.values())
            return _out(reservation)

    def bind(self, reservation_id: str, task_id: str, expires_at: float, now: float) -> Reservation:
        self._enter()
        now = float(now)
        with self._lock:
            held = self._load(reservation_id)
            r = held.r
            if (same := check_bind(r, task_id, expires_at, now)) is not None:
                return _out(same)
            other = self._by_task.get(task_id)
            if other is not None and other != r.id:  # one attestation backs one action, once
                raise AttestationReplayed(replayed_message(task_id, other))
            moved = expires_at != r.expires_at
            _edit(r, task_id=task_id, expires_at=expires_at, updated_at=now)
            self._by_task[task_id] = r.id
            if moved:
                heapq.heappush(self._expiries, (expires_at, held.seq, held))
            return _out(r)

    def mark_signed(self, reservation_id: str, reference: str, now: float) -> Reservation:
        self._enter()
        now = float(now)
        with self._lock:
            held = self._load(reservation_id)
            r = held.r
            if (same := check_mark_signed(r, reference, now)) is not None:
                return _out(same)
            _edit(r, state="signed", reference=reference, updated_at=now)
            self._signed[r.id] = held
            return _out(r)

    def commit(
        self, reservation_id: str, outcome: str, amount: int | None, now: float
    ) -> Reservation:
        self._enter()
        now = float(now)
        with self._lock:
            held = self._load(reservation_id)
            r = held.r
            same, final = check_commit(r, outcome, amount)
            if same is not None:
                return _out(same)
            delta = final - r.amount
            _edit(r, state="committed", amount=final, outcome=outcome, updated_at=now)
            self._signed.pop(r.id, None)
            self._adjust(held, delta, 0)
            return _out(r)

    def release(self, reservation_id: str, reason: str, now: float) -> Reservation:
        self._enter()
        now = float(now)
        with self._lock:
            held = self._load(reservation_id)
            if (same := check_release(held.r)) is not None:
                return _out(same)
            return _out(self._release(held, reason, now, []))

    def get(self, reservation_id: str) -> Reservation:
        self._enter()
        with self._lock:
            return _out(self._load(reservation_id).r)

    def expire(self, now: float) -> list[Reservation]:
        self._enter()
        with self._lock:
            undo: list[Callable[[], None]] = []
            try:  # all or nothing, as SQLite's transaction: a hold half-swept was never
                due = self._release_due(float(now), undo)  # popped again: held forever
            except BaseException:
                _roll_back(undo)
                raise
            return [_out(r) for r in due]

    def signed(self) -> list[Reservation]:
        self._enter()
        with self._lock:
            return [_out(h.r) for h in sorted(self._signed.values(), key=lambda h: h.seq)]

    def usage(self, agent: str, window_seconds: int, now: float) -> Usage:
        self._enter()
        with self._lock:
            rows = self._by_agent.get(agent, [])
            start = bisect.bisect_right(rows, now - window_seconds, key=_created)
            # read under the lock: a record is edited in place
            counted = [(r.asset, r.amount, r.action) for h in rows[start:] if (r := h.r).counted]
        spent: dict[str, int] = {}
        for asset, amount, _ in counted:
            spent[asset] = spent.get(asset, 0) + amount
        return Usage(count=sum(action for _, _, action in counted), spent=spent)

    # -- under the lock ----------------------------------------------------------------------

    def _load(self, reservation_id: str) -> _Held:
        held = self._by_key.get(reservation_id)
        if held is None:
            raise ReservationError(f"no reservation with id {reservation_id!r} in this ledger")
        return held

    def _release(
        self, held: _Held, reason: str, now: float, undo: list[Callable[[], None]]
    ) -> Reservation:
        r = held.r
        before = (r.state, r.amount, r.reason, r.updated_at)
        signed = self._signed.get(r.id)
        undo.append(lambda: self._restore(held, before, signed))  # before the edit it undoes
        _edit(r, state="released", amount=0, reason=reason, updated_at=now)
        self._signed.pop(r.id, None)
        self._adjust(held, -before[1], -int(r.action), undo)
        return r

    def _restore(
        self, held: _Held, before: tuple[str, int, str | None, float], signed: _Held | None
    ) -> None:
        r = held.r
        _edit(r, state=before[0], amount=before[1], reason=before[2], updated_at=before[3])
        if signed is not None:
            self._signed[r.id] = signed

    def _release_due(self, now: float, undo: list[Callable[[], None]]) -> list[Reservation]:
        """Give back every unsigned hold whose expiry has come, oldest expiry first (SQLite's
        index order: expires_at, then seq)."""
        expiries, due = self._expiries, []
        while expiries and expiries[0][0] <= now:
            entry = heapq.heappop(expiries)
            undo.append(_undo_pop(expiries, entry))
            held = entry[2]
            if held.r.state == "reserved" and held.r.expires_at == entry[0]:
                due.append(held)
        return [self._release(h, "expired before it was signed", now, undo) for h in due]

    def after(self, agent: str, asset: str, cursor: Position) -> Generator[Row, None, None]:
        """``Reservations.after`` (under the lock)."""
        rows = self._by_agent.get(agent, [])
        for held in rows[bisect.bisect_right(rows, cursor, key=_position) :]:
            r = held.r
            if not asset or r.asset == asset:
                yield r.created_at, held.seq, r.amount, r.state, int(r.action)

    def last_out(self, agent: str, asset: str, boundary: float) -> Position:
        """``Reservations.last_out`` (under the lock)."""
        rows = self._by_agent.get(agent, [])
        for i in range(bisect.bisect_right(rows, boundary, key=_created) - 1, -1, -1):
            if not asset or rows[i].r.asset == asset:
                return _position(rows[i])
        return ORIGIN

    def _load_windows(self, agent: str, asset: str) -> dict[_WindowKey, Window]:
        """Copies of every window row that may count a reservation of ``agent`` in ``asset``:
        edited freely, stored back by ``_save`` (so a refused reserve changes none)."""
        out: dict[_WindowKey, Window] = {}
        for a in (asset, ALL_ASSETS):
            for seconds, w in self._windows.get((agent, a), {}).items():
                out[(a, seconds)] = replace(w)
        return out

    def _save(
        self, windows: Iterable[Window], undo: list[Callable[[], None]] | None = None
    ) -> None:
        for w in windows:
            if w.dirty:
                w.dirty = False
                rows = self._windows.setdefault((w.agent, w.asset), {})
                if undo is not None:
                    undo.append(_undo_save(rows, w.seconds, rows.get(w.seconds)))
                rows[w.seconds] = w

    def _adjust(
        self,
        held: _Held,
        delta: int,
        count_delta: int,
        undo: list[Callable[[], None]] | None = None,
    ) -> None:
        """Apply a change of one reservation to every window row that counts it."""
        if not delta and not count_delta:
            return
        windows = self._load_windows(held.r.agent, held.r.asset)
        position = _position(held)
        for w in windows.values():
            if w.counts(position) and (count_delta or (delta and w.asset)):
                w.add(delta, count_delta)
        self._save(windows.values(), undo)


def _roll_back(undo: list[Callable[[], None]]) -> None:
    """Run every undo step, newest first, as SQLite's rollback does all of its work: an
    exception in one step (a signal's ``KeyboardInterrupt`` arriving during the undo) is tried
    again, a few times, and raised only once the rest is undone. Every step may run twice
    (``_undo_pop`` pushes once)."""
    failure: BaseException | None = None
    for step in reversed(undo):
        for attempt in range(_UNDO_ATTEMPTS):
            try:
                step()
                break
            except BaseException as exc:
                failure = failure or exc
                if attempt == _UNDO_ATTEMPTS - 1:
                    raise
    if failure is not None:
        raise failure


_UNDO_ATTEMPTS = 3


def _undo_pop(
    expiries: list[tuple[float, int, _Held]], entry: tuple[float, int, _Held]
) -> Callable[[], None]:
    """Push ``entry`` back, once even when ``_roll_back`` tries again: two equal entries would
    compare their ``_Held`` (a TypeError) and release one hold twice."""
    pushed = [False]

    def undo() -> None:
        if not pushed[0]:
            heapq.heappush(expiries, entry)
            pushed[0] = True

    return undo


def _undo_save(rows: dict[int, Window], seconds: int, before: Window | None) -> Callable[[], None]:
    def undo() -> None:
        if before is None:
            rows.pop(seconds, None)
        else:
            rows[seconds] = before

    return undo
