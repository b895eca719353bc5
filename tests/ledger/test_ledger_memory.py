"""``Ledger()``'s in-process backend against the SQLite backend it replaced (``":memory:"``).

Seeded random sequences of every ledger call (reserves under changing caps, idempotent and
conflicting repeats, binds racing for one attestation, illegal transitions, partial ``upto``
commits, expiries driven by a clock that also steps back, recoveries) run on both backends in
lockstep; every answer must be equal: the same reservation, or the same refusal (class,
message, and a budget refusal's figures), the same usage, expiries and signed lists. Then the
same races on threads: both backends grant exactly what the caps allow, once.
"""

from __future__ import annotations

import random
import threading
import time
import zlib
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from agentguard._exceptions import AgentGuardError, BudgetExceeded
from agentguard._intent import Spend
from agentguard.ledger import Ledger, Limits, RateCap, Reservation, Spent, SQLiteBackend, WindowCap
from agentguard.ledger._ledger import RecoveryReport
from agentguard.ledger._memory import MemoryBackend

A = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
B = "0x4200000000000000000000000000000000000006"
AGENTS = (
    "0xAbCdEf0000000000000000000000000000000001",
    "bot-b",
    "0xabcdef0000000000000000000000000000000001",
)
LIMITS = (
    Limits(),
    Limits(per_tx={A: 30}, windows=[WindowCap(A, 60, 100), WindowCap(A, 300, 160)]),
    Limits(
        per_tx={A: 30, B: 1000},
        windows=[WindowCap(A, 60, 100), WindowCap(B, 100, 50)],
        rate=[RateCap(120, 8), RateCap(30, 3)],
    ),
    Limits(rate=[RateCap(120, 8)], windows=[WindowCap(A, 300, 160)]),
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _answer(call: Callable[[], Any]) -> Any:
    """A call's result, or its refusal as comparable data."""
    try:
        return ("ok", call())
    except BudgetExceeded as exc:
        return ("refused", exc.message, exc.cap, exc.used, exc.requested, exc.retry_at)
    except AgentGuardError as exc:
        return ("error", type(exc).__name__, exc.message)


def _resolver(r: Reservation) -> Any:
    pick = zlib.crc32(r.id.encode()) % 5
    if pick == 4:
        raise RuntimeError("the chain did not answer")
    return ("committed", "released", "unknown", Spent(r.reserved // 2))[pick]


Op = tuple[str, tuple[Any, ...]]


def _ops(rng: random.Random) -> list[Op]:
    """One random sequence: (call, arguments), times relative to the clock when it runs."""
    keys: list[str] = []
    ops: list[Op] = []

    def some_key() -> str:
        return rng.choice(keys) if keys and rng.random() < 0.95 else "nope"

    for i in range(rng.randrange(150, 400)):
        roll = rng.random()
        if roll < 0.32:
            key = f"k{i}" if not keys or rng.random() < 0.75 else rng.choice(keys)
            keys.append(key)
            spend = Spend(asset=rng.choice((A, A, B)), amount=rng.randrange(0, 45))
            ttl, limits = rng.choice((1, 5, 30, 200)), rng.choice(LIMITS)
            ops.append(
                ("reserve", (rng.choice(AGENTS), spend, key, ttl, limits, rng.random() < 0.8))
            )
        elif roll < 0.45:
            ops.append(
                ("bind", (some_key(), f"0xt{rng.randrange(12)}", rng.choice((-5, 0, 3, 40))))
            )
        elif roll < 0.57:
            ops.append(("mark_signed", (some_key(), f"0xref{rng.randrange(3)}")))
        elif roll < 0.70:
            outcome = rng.choice(("settled", "recovered: landed", "other"))
            ops.append(("commit", (some_key(), outcome, rng.choice((None, None, 0, 5, 20, 50)))))
        elif roll < 0.78:
            ops.append(("release", (some_key(), rng.choice(("denied", "never sent")))))
        elif roll < 0.82:
            ops.append(("get", (some_key(),)))
        elif roll < 0.88:
            ops.append(("usage", (rng.choice(AGENTS), rng.choice((1, 30, 60, 300, 10_000)))))
        elif roll < 0.93:
            ops.append((rng.choice(("recover", "recover", "expire", "expire", "signed")), ()))
        else:
            step = rng.choice((0, 0.5, 1, 7, 29, 61, 150))
            ops.append(("tick", (step * (-0.4 if rng.random() < 0.1 else 1),)))
    return ops


def _apply(ledger: Ledger, op: Op) -> Any:
    name, args = op
    now = ledger.now()
    match name:
        case "reserve":
            agent, spend, key, ttl, limits, action = args
            return ledger.reserve(
                agent, spend, key=key, expires_at=now + ttl, limits=limits, action=action
            )
        case "bind":
            return ledger.bind(args[0], task_id=args[1], expires_at=now + args[2])
        case "recover":
            return ledger.recover(_resolver)
        case "expire":
            return ledger._backend.expire(now)
        case "signed":
            return ledger._backend.signed()
    return getattr(ledger, name)(*args)


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize(
    "t0",
    [1_000_000_000.0, time.time() + 10 * 365 * 86400],
    ids=["behind the host clock", "ahead of the host clock"],
)
def test_the_memory_backend_answers_as_sqlite_does(seed: int, t0: float) -> None:
    _in_lockstep(seed, t0)


def _in_lockstep(seed: int, t0: float, edit: Callable[[Any], None] = lambda _: None) -> None:
    """One random sequence on both backends, every answer equal; ``edit`` sees each answer of
    the memory backend once compared."""
    rng = random.Random(seed)
    clock = Clock(t0)
    memory = Ledger(backend=MemoryBackend(), clock=clock)
    sqlite = Ledger(backend=SQLiteBackend(":memory:"), clock=clock)
    for n, op in enumerate(_ops(rng)):
        if op[0] == "tick":
            clock.now += op[1][0]
            continue
        got = _answer(lambda: _apply(memory, op))  # noqa: B023 (called at once)
        assert got == _answer(lambda: _apply(sqlite, op)), f"seed {seed}, op {n}: {op}"  # noqa: B023
        edit(got[1])
    for agent in AGENTS:
        for seconds in (1, 60, 300, 10**9):
            assert memory.usage(agent, seconds) == sqlite.usage(agent, seconds)
    assert memory._backend.signed() == sqlite._backend.signed()


def _tamper(result: Any) -> None:
    """Edit every reservation in a ledger's answer behind its frozen back."""
    if isinstance(result, Reservation):
        for name, value in (("amount", 10**30), ("state", "released"), ("created_at", 0.0),
                            ("expires_at", 0.0), ("task_id", "0xevil"), ("id", "z"),
                            ("agent", "y"), ("asset", "x"), ("action", False)):  # fmt: skip
            object.__setattr__(result, name, value)
    elif isinstance(result, list | tuple):
        for item in result:
            _tamper(item)
    elif isinstance(result, RecoveryReport):
        _tamper([result.expired, result.committed, result.released, result.unknown])


def test_a_returned_reservation_edited_changes_nothing_in_the_ledger() -> None:
    """Before: the memory backend handed out the reservation it stored, so editing one (a
    frozen dataclass still yields to ``object.__setattr__``) edited the ledger's state."""
    ledger = Ledger(backend=MemoryBackend())
    limits = Limits(windows=[WindowCap(A, 60, 100)])
    r = ledger.reserve(AGENTS[1], Spend(asset=A, amount=40), key="k", expires_at=ledger.now() + 30, limits=limits)  # fmt: skip
    before = ledger.get("k")
    _tamper(r)
    assert ledger.get("k") == before and ledger.get("k") is not ledger.get("k")
    assert ledger.usage(AGENTS[1], 60).spent == {A: 40}
    with pytest.raises(BudgetExceeded):  # 40 still counts: 40 + 61 > 100
        ledger.reserve(AGENTS[1], Spend(asset=A, amount=61), key="k2", expires_at=ledger.now() + 30, limits=limits)  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
def test_edited_answers_leave_the_memory_backend_answering_as_sqlite_does(seed: int) -> None:
    """Every reservation the memory backend hands out is edited at once; it still answers
    exactly as SQLite does (whose answers are built fresh from its rows)."""
    _in_lockstep(seed, 1_000_000_000.0, _tamper)


def test_a_refused_reserve_gives_back_nothing_it_expired_on_the_way() -> None:
    """SQLite rolls the whole transaction back; the memory backend undoes the releases."""
    clock = Clock(1_000_000_000.0)
    limits = Limits(windows=[WindowCap(A, 600, 100)])
    for ledger in (
        Ledger(backend=MemoryBackend(), clock=clock),
        Ledger(backend=SQLiteBackend(":memory:"), clock=clock),
    ):
        ledger.reserve(
            "a", Spend(asset=A, amount=60), key="x", expires_at=clock.now + 5, limits=limits
        )
        clock.now += 10  # x expired unsigned: the next reserve gives it back...
        big = Spend(asset=A, amount=101)
        refused = _answer(
            partial(ledger.reserve, "a", big, key="y", expires_at=clock.now + 5, limits=limits)
        )
        assert refused[0] == "refused"
        assert ledger.get("x").state == "reserved"  # ... unless it is itself refused
        assert ledger.usage("a", 600).spent == {A: 60}
        assert [r.id for r in ledger._backend.expire(clock.now)] == ["x"]
        clock.now -= 10


def _race(ledger: Ledger, threads: int = 8) -> dict[str, Any]:
    """Threads racing on one budget, one key and one attestation."""
    limits = Limits(windows=[WindowCap(A, 3600, 100)], rate=[RateCap(3600, 40)])
    spend = Spend(asset=A, amount=7)
    results: dict[str, list[Any]] = {"own": [], "same": [], "bind": [], "settle": []}
    lock, start = threading.Lock(), threading.Barrier(threads)
    common = ledger.reserve("s", spend, key="shared", expires_at=ledger.now() + 60, limits=Limits())

    def work(t: int) -> None:
        start.wait()
        out: dict[str, list[Any]] = {k: [] for k in results}
        for i in range(10):
            mine = partial(ledger.reserve, "r", spend, key=f"{t}:{i}", expires_at=ledger.now() + 60)
            out["own"].append(_answer(partial(mine, limits=limits))[0])
            out["same"].append(
                ledger.reserve(
                    "s", spend, key="shared", expires_at=ledger.now() + 60, limits=limits
                )
            )
        own = f"{t}:0"
        out["bind"].append(
            _answer(lambda: ledger.bind(own, task_id="0xone", expires_at=ledger.now() + 30))[0]
        )
        settle = ledger.commit if t % 2 else ledger.release
        out["settle"].append(_answer(lambda: settle("shared", "done"))[0])
        with lock:
            for k, v in out.items():
                results[k].extend(v)

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    # one reservation per key, counted once (its state moves on as the threads settle it)
    assert {(r.id, r.created_at) for r in results["same"]} == {(common.id, common.created_at)}
    return {
        "granted": results["own"].count("ok"),
        "bound": results["bind"].count("ok"),
        "settled": results["settle"].count("ok"),
        "usage": ledger.usage("r", 3600).spent,
    }


def test_threads_racing_get_what_sqlite_gives_them() -> None:
    memory = _race(Ledger(backend=MemoryBackend()))
    sqlite = _race(Ledger(backend=SQLiteBackend(":memory:")))
    # 100 // 7 = 14 holds fit the window and one bind wins the attestation. The shared hold
    # is settled by whichever thread comes first: then the same call again is an idempotent
    # repeat and the other kind is refused (four threads commit, four release).
    assert memory["granted"] == sqlite["granted"] == 14
    assert memory["bound"] == sqlite["bound"] == 1
    assert memory["settled"] == sqlite["settled"] == 4
    assert memory["usage"] == sqlite["usage"] == {A: 14 * 7}


def test_ledger_defaults_to_the_memory_backend_and_a_file_to_sqlite(tmp_path: Any) -> None:
    assert type(Ledger()._backend) is MemoryBackend
    assert type(Ledger(tmp_path / "x.db")._backend) is SQLiteBackend


def test_a_closed_memory_ledger_refuses_typed() -> None:
    ledger = Ledger()
    ledger.close()
    answer = _answer(lambda: ledger.get("x"))
    assert answer[:2] == ("error", "LedgerUnavailable")
