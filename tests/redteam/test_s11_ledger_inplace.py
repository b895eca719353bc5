"""Red team s11-r6: the in-memory ledger edits its private records in place (``_edit``).

An exception part-way through an edit (a signal's ``KeyboardInterrupt`` between two fields;
simulated here by a setter that raises) must leave the record as it was, as SQLite's rolled
back transaction does; never half-edited (``released`` and still counting its amount).
"""

from __future__ import annotations

import random
import threading
from functools import partial
from typing import Any

import pytest

from agentguard import Spend
from agentguard._exceptions import ReservationError
from agentguard._intent import _checksum, chain_id_from_network
from agentguard.ledger import Ledger, Limits, SQLiteBackend, WindowCap, _memory
from agentguard.ledger._ledger import _text
from agentguard.ledger._memory import MemoryBackend
from tests.ledger.test_ledger_memory import AGENTS, A, B, Clock, _answer, _apply, _ops

T0 = 1_000_000_000.0


class _Interrupt(BaseException):
    """Stands for a signal's exception arriving between two field writes."""


def _torn_set(monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    """``_memory._set`` writes ``after`` fields, then raises (once)."""
    real, calls = _memory._set, [0]

    def flaky(obj: object, name: str, value: object) -> None:
        calls[0] += 1
        if calls[0] == after + 1:
            raise _Interrupt(name)
        real(obj, name, value)

    monkeypatch.setattr(_memory, "_set", flaky)


def _ledgers(clock: Clock) -> list[Ledger]:
    return [
        Ledger(backend=MemoryBackend(), clock=clock),
        Ledger(backend=SQLiteBackend(":memory:"), clock=clock),
    ]


def _snapshot(ledger: Ledger, keys: list[str]) -> Any:
    return (
        [ledger.get(k) for k in keys],
        [ledger.usage(agent, 600) for agent in ("a", "b")],
        ledger._backend.signed(),
    )


@pytest.mark.parametrize("after", [1, 2, 3])
def test_an_edit_torn_in_a_refused_reserves_expiry_sweep_is_undone(
    monkeypatch: pytest.MonkeyPatch, after: int
) -> None:
    """Several expired holds (two agents, two assets, two windows) are given back on the way;
    an exception while releasing one of them must undo every release, the torn one too."""
    clock = Clock(T0)
    limits = Limits(windows=[WindowCap(A, 600, 100), WindowCap(B, 300, 50)])
    keys = ["a1", "a2", "b1", "b2"]
    memory = Ledger(backend=MemoryBackend(), clock=clock)
    for n, key in enumerate(keys):
        spend = Spend(asset=A if n % 2 == 0 else B, amount=10 + n)
        agent = "a" if key.startswith("a") else "b"
        memory.reserve(agent, spend, key=key, expires_at=clock.now + 5 + n, limits=limits)
    clock.now += 20
    before = _snapshot(memory, keys)
    _torn_set(monkeypatch, after + 4)  # the second hold given back is torn
    with pytest.raises(_Interrupt):
        memory.reserve(
            "a", Spend(asset=A, amount=1), key="z", expires_at=clock.now + 5, limits=limits
        )
    monkeypatch.undo()
    assert _snapshot(memory, keys) == before


@pytest.mark.parametrize("after", [1, 2, 3])
@pytest.mark.parametrize("step", ["commit", "release", "bind", "mark_signed"])
def test_an_edit_torn_in_a_lifecycle_call_leaves_the_record_as_it_was(
    monkeypatch: pytest.MonkeyPatch, step: str, after: int
) -> None:
    """SQLite's statement either happens or not; the memory record must not be half-written."""
    clock = Clock(T0)
    ledger = Ledger(backend=MemoryBackend(), clock=clock)
    ledger.reserve("a", Spend(asset=A, amount=40), key="x", expires_at=T0 + 50, limits=Limits())
    clock.now += 1
    before = _snapshot(ledger, ["x"])

    def call(target: Ledger) -> Any:
        return {
            "commit": partial(target.commit, "x", "0xfeed", 25),
            "release": partial(target.release, "x", "changed my mind"),
            "bind": partial(target.bind, "x", task_id="t1", expires_at=T0 + 99),
            "mark_signed": partial(target._backend.mark_signed, "x", "0xref", clock.now),
        }[step]()

    _torn_set(monkeypatch, after)
    try:
        call(ledger)
    except _Interrupt:
        torn = True
        monkeypatch.undo()
        assert _snapshot(ledger, ["x"]) == before
    else:  # fewer fields than ``after``: nothing was torn
        torn = False
        monkeypatch.undo()
    # and it then goes on exactly as SQLite's, which never saw the torn call
    sqlite_clock = Clock(T0)
    sqlite = Ledger(backend=SQLiteBackend(":memory:"), clock=sqlite_clock)
    sqlite.reserve("a", Spend(asset=A, amount=40), key="x", expires_at=T0 + 50, limits=Limits())
    sqlite_clock.now = clock.now
    if not torn:
        call(sqlite)
    answers = [
        (
            _answer(partial(other.bind, "x", task_id="t2", expires_at=T0 + 70)),
            _answer(partial(other.commit, "x", "0xbeef", 30)),
            _snapshot(other, ["x"]),
        )
        for other in (ledger, sqlite)
    ]
    assert answers[0] == answers[1]


def test_a_refused_reserve_undoes_several_expired_holds_as_sqlite_rolls_back() -> None:
    """Holds of two agents, two assets, windows of different widths, expired at different
    times (one bound later, its first expiry entry stale): all back, exactly as SQLite's."""
    clock = Clock(T0)
    limits = Limits(windows=[WindowCap(A, 600, 100), WindowCap(A, 60, 70), WindowCap(B, 300, 50)])
    answers = []
    for ledger in _ledgers(clock):
        clock.now = T0
        ledger.reserve("a", Spend(asset=A, amount=30), key="a1", expires_at=T0 + 5, limits=limits)
        ledger.reserve("b", Spend(asset=B, amount=20), key="b1", expires_at=T0 + 7, limits=limits)
        ledger.reserve("a", Spend(asset=A, amount=25), key="a2", expires_at=T0 + 3, limits=limits)
        ledger.bind("a2", task_id="t", expires_at=T0 + 9)  # its first expiry entry is stale
        ledger.reserve("a", Spend(asset=B, amount=5), key="a3", expires_at=T0 + 4, limits=limits)
        clock.now = T0 + 20
        refused = _answer(
            partial(
                ledger.reserve,
                "a",
                Spend(asset=A, amount=101),
                key="y",
                limits=limits,
                expires_at=T0 + 90,
            )
        )
        keys = ["a1", "a2", "a3", "b1"]
        got = (refused[0], _snapshot(ledger, keys))
        clock.now = T0 + 2  # the clock steps back: nothing due any more
        got += (
            _answer(
                partial(
                    ledger.reserve,
                    "a",
                    Spend(asset=A, amount=40),
                    key="w",
                    limits=limits,
                    expires_at=T0 + 30,
                )
            ),
        )
        clock.now = T0 + 20
        got += ([r.id for r in ledger._backend.expire(clock.now)], _snapshot(ledger, keys))
        answers.append(got)
    assert answers[0][0] == "refused"
    assert answers[0] == answers[1]


def test_an_answer_edited_with_object_setattr_changes_no_record() -> None:
    clock = Clock(T0)
    ledger = Ledger(backend=MemoryBackend(), clock=clock)
    r = ledger.reserve("a", Spend(asset=A, amount=40), key="x", expires_at=T0 + 50, limits=Limits())
    for answer in (r, ledger.get("x"), ledger.bind("x", task_id="t", expires_at=T0 + 60)):
        for name, value in (("state", "released"), ("amount", 0), ("expires_at", 0.0)):
            object.__setattr__(answer, name, value)
    assert ledger.get("x").state == "reserved" and ledger.get("x").amount == 40
    assert ledger.usage("a", 600).spent == {A: 40}
    assert ledger._backend.expire(T0 + 55) == []  # its expiry is still T0 + 60


# -- caches in _intent -----------------------------------------------------------------------

ADDR = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"


class _Liar(str):
    """Equal to, and hashed as, a good address, but holding another text."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return hash(ADDR)


def test_a_lying_str_gets_no_cached_verdict_of_another_address() -> None:
    assert _checksum(ADDR, "to") == ADDR  # ADDR's verdict cached
    bad = _Liar(ADDR[:-1] + ("4" if ADDR[-1] != "4" else "5"))  # a wrong checksum
    with pytest.raises(Exception, match="checksum"):
        _checksum(bad, "to")
    assert _checksum(ADDR.lower(), "to") == ADDR  # another casing: its own verdict
    with pytest.raises(Exception, match="checksum"):
        _checksum(ADDR[:8] + ADDR[8:9].swapcase() + ADDR[9:], "to")  # one letter
    assert chain_id_from_network("base") == 8453
    with pytest.raises(Exception, match="network"):
        chain_id_from_network(_Liar("nowhere"))


def test_a_flood_of_addresses_evicts_no_verdict_wrongly() -> None:
    """Past 4096 addresses the cache evicts; every verdict stays right."""
    for n in range(5000):
        low = f"0x{n:040x}"
        assert _checksum(low, "to").lower() == low
    assert _checksum(ADDR, "to") == ADDR
    with pytest.raises(Exception, match="checksum"):
        _checksum(ADDR.swapcase().replace("0X", "0x"), "to")


@pytest.mark.parametrize(
    "value",
    ["a", "x" * 256, "x" * 257, "", "a\x00b", "caf\u00e9", "\ud800", "\u0430gent", "\x7f"],
)
def test_text_fast_path_answers_as_the_slow_checks(value: str) -> None:
    for v in (value, type("S", (str,), {})(value)):
        try:
            got: Any = ("ok", _text(v, "agent"), type(_text(v, "agent")))
        except Exception as exc:
            got = ("error", type(exc).__name__, str(exc))
        if not v or len(v) > 256:
            assert got[0] == "error"
        elif "\ud800" in v:
            assert got[0] == "error" and "surrogate" in got[2]
        else:
            assert got == ("ok", str(v), str)


_TEARABLE = {"reserve", "bind", "mark_signed", "commit", "release", "expire"}


@pytest.mark.parametrize("seed", range(12))
def test_random_torn_edits_leave_the_memory_ledger_answering_as_sqlite(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """SQLite's lockstep differential (clock steps back included), with a third of the memory
    backend's calls interrupted after a random number of field writes: an interrupted call
    must change nothing (SQLite then skips it), every later answer equal."""
    rng = random.Random(seed)
    clock = Clock(T0)
    memory = Ledger(backend=MemoryBackend(), clock=clock)
    sqlite = Ledger(backend=SQLiteBackend(":memory:"), clock=clock)
    torn = 0
    for n, op in enumerate(_ops(rng)):
        if op[0] == "tick":
            clock.now += op[1][0]
            continue
        if op[0] in _TEARABLE and rng.random() < 0.35:
            _torn_set(monkeypatch, rng.randrange(0, 9))
        try:
            got = _answer(lambda: _apply(memory, op))  # noqa: B023 (called at once)
        except _Interrupt:
            torn += 1
            continue
        finally:
            monkeypatch.undo()
        assert got == _answer(lambda: _apply(sqlite, op)), f"seed {seed}, op {n}: {op}"  # noqa: B023
    assert torn > 0
    for agent in AGENTS:
        for seconds in (1, 60, 300, 10**9):
            assert memory.usage(agent, seconds) == sqlite.usage(agent, seconds)
    assert memory._backend.signed() == sqlite._backend.signed()
    assert _answer(lambda: memory._backend.expire(clock.now + 10**6)) == _answer(
        lambda: sqlite._backend.expire(clock.now + 10**6)
    )


def test_readers_racing_writers_never_see_a_record_mid_edit() -> None:
    """Writers reserve, bind, commit, release and sweep; readers get, list the signed and read
    usage all along: every answer is one whole state (released: counts 0 and has a reason;
    committed: its outcome), and an answer kept stays as it was when handed out."""
    clock = Clock(T0)
    ledger = Ledger(backend=MemoryBackend(), clock=clock)
    keys = [f"k{i}" for i in range(300)]
    kept: list[tuple[Any, tuple[Any, ...]]] = []
    errors: list[str] = []
    stop = threading.Event()

    def whole(r: Any) -> None:
        if r.state == "released" and (r.amount != 0 or r.reason is None):
            errors.append(f"torn release {r}")
        if r.state == "committed" and r.outcome is None:
            errors.append(f"torn commit {r}")

    def writer(part: int) -> None:
        for n, key in enumerate(keys[part::3]):
            ledger.reserve(
                "a", Spend(asset=A, amount=7), key=key, expires_at=T0 + 5, limits=Limits()
            )
            try:  # another writer's sweep may have given it back first
                if n % 3 == 0:
                    ledger.commit(key, "0xok", 3)
                elif n % 3 == 1:
                    ledger.release(key, "no")
            except ReservationError:
                assert ledger.get(key).state == "released"
            ledger._backend.expire(T0 + 10 * (n % 2))

    def reader() -> None:
        while not stop.is_set():
            for key in keys[::17]:
                try:
                    r = ledger.get(key)
                except Exception:  # not reserved yet
                    continue
                whole(r)
                kept.append((r, tuple(getattr(r, f) for f in ("state", "amount", "reason"))))
            usage = ledger.usage("a", 600)
            if usage.spent.get(A, 0) > 7 * len(keys):
                errors.append(f"usage {usage}")

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(p,)) for p in range(3)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not errors, errors[:3]
    assert kept
    for r, fields_then in kept:
        assert tuple(getattr(r, f) for f in ("state", "amount", "reason")) == fields_then
    final = [ledger.get(k) for k in keys]
    for r in final:
        whole(r)
    assert ledger.usage("a", 600).spent.get(A, 0) == sum(r.amount for r in final if r.counted)


def test_threads_racing_the_address_and_network_caches_get_every_verdict_right() -> None:
    good = [f"0x{n:040x}" for n in range(0, 6000, 3)] + [ADDR, ADDR.lower()]
    wrong = ADDR[:8] + ADDR[8:9].swapcase() + ADDR[9:]
    errors: list[str] = []

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(3000):
            value = rng.choice([*good, wrong, "base", "eip155:8453", "nowhere"])
            try:
                if value in ("base", "eip155:8453", "nowhere"):
                    got: Any = chain_id_from_network(value)
                    ok = got == 8453
                else:
                    got = _checksum(value, "to")
                    ok = got.lower() == value.lower()
            except Exception:
                ok = value in (wrong, "nowhere")
            else:
                ok = ok and value not in (wrong, "nowhere")
            if not ok:
                errors.append(value)

    threads = [threading.Thread(target=hammer, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
