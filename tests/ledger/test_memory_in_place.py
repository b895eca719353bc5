"""The in-memory ledger's records edited in place against the path they replaced (every change
built a new stored record with ``dataclasses.replace`` and swapped it in; an undone release
swapped the old one back): seeded random call sequences on both, in lockstep, with every answer
edited behind its frozen back once compared. The same answers, the same refusals and the same
stored state (every record, window row, binding, signed set and expiry) after every call."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

import pytest

from agentguard._intent import Spend
from agentguard.ledger import Ledger, Limits, Reservation
from agentguard.ledger._memory import MemoryBackend, _Held, _out
from agentguard.ledger._transitions import check_bind, check_commit, check_mark_signed
from tests.ledger.test_ledger_memory import A, Clock, _answer, _apply, _ops, _tamper

SPEND = Spend(asset=A, amount=7)


class _Swapping(MemoryBackend):
    """The old transitions: a new record per change, swapped in; an undo swaps the old back."""

    def bind(self, reservation_id: str, task_id: str, expires_at: float, now: float) -> Reservation:
        with self._lock:
            held = self._load(reservation_id)
            r = held.r
            if check_bind(r, task_id, expires_at, now) is None and task_id not in self._by_task:
                held.r = dataclasses.replace(r)  # what the caller gets next is not this record
        return super().bind(reservation_id, task_id, expires_at, now)

    def mark_signed(self, reservation_id: str, reference: str, now: float) -> Reservation:
        with self._lock:
            held = self._load(reservation_id)
            if check_mark_signed(held.r, reference, now) is None:
                held.r = dataclasses.replace(held.r)
        return super().mark_signed(reservation_id, reference, now)

    def commit(
        self, reservation_id: str, outcome: str, amount: int | None, now: float
    ) -> Reservation:
        with self._lock:
            held = self._load(reservation_id)
            if check_commit(held.r, outcome, amount)[0] is None:
                held.r = dataclasses.replace(held.r)
        return super().commit(reservation_id, outcome, amount, now)

    def _release(
        self, held: _Held, reason: str, now: float, undo: list[Callable[[], None]]
    ) -> Reservation:
        r = held.r
        held.r = dataclasses.replace(r, state="released", amount=0, reason=reason, updated_at=now)
        signed = self._signed.pop(r.id, None)

        def swap_back() -> None:
            held.r = r
            if signed is not None:
                self._signed[r.id] = signed

        undo.append(swap_back)
        self._adjust(held, -r.amount, -int(r.action), undo)
        return held.r


def _state(backend: MemoryBackend) -> Any:
    """Everything the backend stores, as plain comparable data."""
    return (
        {k: (dataclasses.astuple(h.r), h.seq) for k, h in backend._by_key.items()},
        {a: [h.r.key for h in rows] for a, rows in backend._by_agent.items()},
        dict(backend._by_task),
        list(backend._signed),
        sorted((e, s, h.r.key) for e, s, h in backend._expiries),
        {
            k: {s: dataclasses.astuple(w) for s, w in rows.items()}
            for k, rows in backend._windows.items()
        },
    )


def test_the_old_path_really_stores_new_records() -> None:
    """The reference differs where it should: its change swaps the record, ours edits it."""
    old, new = _Swapping(), MemoryBackend()
    for backend in (old, new):
        ledger = Ledger(backend=backend, clock=Clock(1_000_000_000.0))
        ledger.reserve("bot", SPEND, key="k", expires_at=ledger.now() + 30, limits=Limits())
    kept_old, kept_new = old._by_key["k"].r, new._by_key["k"].r
    old.mark_signed("k", "0xref", 1_000_000_001.0)
    new.mark_signed("k", "0xref", 1_000_000_001.0)
    assert old._by_key["k"].r is not kept_old and kept_old.state == "reserved"
    assert new._by_key["k"].r is kept_new and kept_new.state == "signed"
    assert _state(old) == _state(new)


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("tamper", [False, True], ids=["answers kept", "answers edited"])
def test_in_place_records_answer_and_store_as_swapped_records_did(seed: int, tamper: bool) -> None:
    rng = random.Random(1000 + seed)
    clock = Clock(1_000_000_000.0)
    old, new = _Swapping(), MemoryBackend()
    ledgers = Ledger(backend=old, clock=clock), Ledger(backend=new, clock=clock)
    for n, op in enumerate(_ops(rng)):
        if op[0] == "tick":
            clock.now += op[1][0]
            continue
        want = _answer(lambda: _apply(ledgers[0], op))  # noqa: B023 (called at once)
        got = _answer(lambda: _apply(ledgers[1], op))  # noqa: B023
        assert got == want, f"seed {seed}, op {n}: {op}"
        assert _state(new) == _state(old), f"seed {seed}, op {n}: {op}"
        if tamper:
            _tamper(got[1])
            _tamper(want[1])
            assert _state(new) == _state(old), f"seed {seed}, op {n}: {op} (edited)"


def _random_reservation(rng: random.Random) -> Reservation:
    def maybe(value: Any) -> Any:
        return value if rng.random() < 0.5 else None

    return Reservation(
        id=f"k{rng.randrange(99)}", key=f"k{rng.randrange(99)}", agent=rng.choice(("a", "0xb")),
        asset=rng.choice(("0xc", "")), amount=rng.randrange(10**30), reserved=rng.randrange(9),
        recipient=maybe("0xd"), state=rng.choice(("reserved", "signed", "committed", "released")),
        created_at=rng.random(), expires_at=rng.random() * 1e9, updated_at=-rng.random(),
        reference=maybe("0xref"), outcome=maybe("landed"), reason=maybe("denied"),
        action=rng.random() < 0.5, task_id=maybe("0xt"),
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(5))
def test_an_answer_is_a_fresh_reservation_equal_field_by_field(seed: int) -> None:
    """``_out`` (slot setters, written out) against ``dataclasses.replace``: every field."""
    assert not hasattr(Reservation, "__post_init__")  # what ``_out`` does not run
    rng = random.Random(seed)
    for _ in range(200):
        r = _random_reservation(rng)
        copy, reference = _out(r), dataclasses.replace(r)
        assert type(copy) is Reservation and copy is not r
        assert dataclasses.astuple(copy) == dataclasses.astuple(reference)
        for f in dataclasses.fields(Reservation):
            assert getattr(copy, f.name) is getattr(r, f.name), f.name
        object.__setattr__(copy, "amount", -1)
        assert r.amount != -1
