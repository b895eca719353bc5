"""``Runner.now`` / ``AsyncRunner.now`` (a step that never waits, performed without a coroutine)
held equal to ``execute`` (the old and only other path): seeded random and hostile ledger,
audit and port steps give the same value or the same error, on twin ledgers and audit logs;
and a runner whose ``execute`` was replaced (subclass, instance attribute, class attribute)
gets every step through it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentguard._intent import NATIVE_ASSET, Spend
from agentguard.audit import AuditLog
from agentguard.ledger import Ledger, Limits, WindowCap
from agentguard.pipeline import (
    LATER,
    Abandon,
    AsyncRunner,
    Audit,
    Bind,
    Commit,
    Confirm,
    GatewayCommit,
    GatewayRelease,
    MarkSigned,
    Prepare,
    Prepared,
    Release,
    Reserve,
    Runner,
    Send,
    Sign,
    Signed,
    Step,
)

TOKEN = "0x2222222222222222222222222222222222222222"
AGENTS = ["0x1111111111111111111111111111111111111111", "agent-b", "", "x" * 300]
NOW = 1_700_000_000.0


def _clock() -> float:
    return NOW


def _limits(rng: random.Random) -> Limits:
    return rng.choice(
        [
            Limits(),
            Limits(per_tx={TOKEN: rng.randrange(1, 50)}),
            Limits(windows=[WindowCap(TOKEN, 3600, rng.randrange(1, 80))]),
        ]
    )


def _random_step(rng: random.Random, keys: list[str]) -> Step:
    """A ledger or audit step: mostly well-formed, on ids that exist, so holds get bound,
    signed and settled; sometimes hostile (unknown ids, bad times and amounts)."""
    hostile = rng.random() < 0.15
    key = rng.choice(["nope", "", *keys]) if hostile or not keys else rng.choice(keys[-4:])
    kind = rng.choice([0, 0, 1, 2, 3, 4, 5, 6])
    if kind == 0:
        new = f"k{rng.randrange(60)}"
        keys.append(new)
        amount = rng.choice([0, 2**256, -1]) if hostile else rng.randrange(1, 30)
        expires: Any = rng.choice([NOW - 1, True, float("nan")]) if hostile else None
        return Reserve(
            rng.choice(AGENTS) if hostile else AGENTS[rng.randrange(2)],
            Spend(asset=rng.choice([TOKEN, NATIVE_ASSET]), amount=amount,
                  recipient=rng.choice([None, TOKEN])),
            key=new, limits=_limits(rng), expires_at=rng.choice([expires, NOW + 60]),
            hold_seconds=rng.choice([30.0, 120.0]), action=rng.random() < 0.8,
        )  # fmt: skip
    if kind == 1:
        return Bind(key, f"0x{rng.randrange(1 << 64):x}", NOW - 5 if hostile else NOW + 30)
    if kind == 2:
        return MarkSigned(key, "r" * 2000 if hostile else f"0xref{rng.randrange(9)}")
    if kind == 3:
        return Commit(key, rng.choice(["done", ""]), rng.choice([None, 0, 3, 10**9, -2]))
    if kind == 4:
        return Release(key, "w" * 1500 if hostile else "why")
    if kind == 5:
        return Audit(rng.choice(["signed", "refused", ""]), {"n": rng.randrange(9), "k": key})
    return Audit("x", {"nested": [1, {"a": None}], "big": 2**70})


def _outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "value", call()
    except Exception as exc:
        return "error", (type(exc), str(exc))


def _entries(log: AuditLog) -> list[tuple[str, Any]]:
    return [(e.kind, e.record) for e in log.entries()]


@pytest.mark.parametrize("seed", range(12))
def test_local_steps_now_equal_execute(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    logs = [AuditLog(tmp_path / f"{side}.jsonl") for side in "ab"]
    fast = Runner(None, Ledger(clock=_clock), logs[0])  # type: ignore[arg-type]
    slow = Runner(None, Ledger(clock=_clock), logs[1])  # type: ignore[arg-type]
    keys: list[str] = []
    for _ in range(200):
        step = _random_step(rng, keys)
        got = _outcome(lambda step=step: fast.now(step))  # type: ignore[misc]
        assert got[1] is not LATER
        assert got == _outcome(lambda step=step: slow.execute(step)), step  # type: ignore[misc]
    assert _entries(logs[0]) == _entries(logs[1])
    assert fast.ledger.usage(AGENTS[0], 3600) == slow.ledger.usage(AGENTS[0], 3600)


@pytest.mark.parametrize("seed", range(6))
def test_async_local_steps_now_equal_execute(seed: int) -> None:
    rng = random.Random(seed)
    fast = AsyncRunner(None, Ledger(clock=_clock))  # type: ignore[arg-type]
    slow = AsyncRunner(None, Ledger(clock=_clock))  # type: ignore[arg-type]
    keys: list[str] = []

    async def run() -> None:
        for _ in range(80):
            step = _random_step(rng, keys)
            got = _outcome(lambda step=step: fast.now(step))  # type: ignore[misc]
            try:
                want: tuple[str, Any] = ("value", await slow.execute(step))
            except Exception as exc:
                want = ("error", (type(exc), str(exc)))
            assert got == want, step

    asyncio.run(run())


class _Port:
    """A port whose plain methods record their calls and answer or raise as told."""

    def __init__(self, blocking: bool, fail: bool) -> None:
        self.blocking, self.fail, self.calls = blocking, fail, []  # type: list[str]

    def _answer(self, name: str, value: Any) -> Any:
        self.calls.append(name)
        if self.fail:
            raise ValueError(f"{name} failed")
        return value

    def prepare(self, verified: Any) -> Prepared:
        return self._answer("prepare", Prepared(payload=verified))  # type: ignore[no-any-return]

    def sign(self, verified: Any, prepared: Any) -> Signed:
        return self._answer("sign", Signed("ref", (verified, prepared)))  # type: ignore[no-any-return]

    def abandon(self, prepared: Any) -> None:
        self._answer("abandon", None)

    def send(self, signed: Any) -> Any:
        return self._answer("send", ("sent", signed))

    def confirm(self, signed: Any) -> Any:
        return self._answer("confirm", ("confirmed", signed))


class _AsyncPort(_Port):
    async def sign(self, verified: Any, prepared: Any) -> Signed:  # type: ignore[override]
        return super().sign(verified, prepared)


PORT_STEPS: list[Step] = [
    Prepare("v"),  # type: ignore[arg-type]
    Sign("v", Prepared()),  # type: ignore[arg-type]
    Abandon(Prepared()),
    Send(Signed("r", b""), None),  # type: ignore[arg-type]
    Confirm(Signed("r", b"")),
]


@pytest.mark.parametrize("fail", [False, True])
@pytest.mark.parametrize("step", PORT_STEPS, ids=lambda s: type(s).__name__)
def test_port_steps_now_equal_execute(step: Step, fail: bool) -> None:
    for runner in (Runner(None, Ledger()), AsyncRunner(None, Ledger())):  # type: ignore[arg-type]
        fast, slow = _Port(blocking=False, fail=fail), _Port(blocking=False, fail=fail)
        got = _outcome(lambda: runner.now(step, fast))  # noqa: B023
        if isinstance(runner, AsyncRunner):
            want = _outcome(lambda: asyncio.run(runner.execute(step, slow)))  # noqa: B023
        else:
            want = _outcome(lambda: runner.execute(step, slow))  # noqa: B023
        assert got == want and fast.calls == slow.calls != []


def test_what_may_wait_is_left_to_execute() -> None:
    """A blocking port, a coroutine method, no port at all, and steps outside the table (a
    subclass of a step class included) are never performed by ``now``."""

    class Later(Audit):
        pass

    for runner in (Runner(None, Ledger()), AsyncRunner(None, Ledger())):  # type: ignore[arg-type]
        blocking, coroutine = _Port(blocking=True, fail=False), _AsyncPort(False, False)
        for step in PORT_STEPS:
            assert runner.now(step, blocking) is LATER
            assert runner.now(step, None) is LATER
        assert runner.now(PORT_STEPS[1], coroutine) is LATER
        assert blocking.calls == [] and coroutine.calls == []
        assert runner.now(Later("x")) is LATER


def test_a_replaced_execute_sees_every_step() -> None:
    """The seam for tracing and fault injection: with ``execute`` replaced on a subclass, an
    instance or the class itself, ``now`` performs nothing and ``drive`` sends every step
    through ``execute``."""
    step = Audit("x")
    seen: list[str] = []

    class Traced(Runner):
        def execute(self, step: Step, port: Any = None) -> Any:
            seen.append(type(step).__name__)
            return super().execute(step, port)

    assert Traced(None, Ledger()).now(step) is LATER  # type: ignore[arg-type]

    instance = Runner(None, Ledger())  # type: ignore[arg-type]
    instance.execute = lambda step, port=None: seen.append("instance")  # type: ignore[method-assign]
    assert instance.now(step) is LATER

    original = AsyncRunner.execute
    try:

        async def traced(self: AsyncRunner, step: Step, port: Any = None) -> Any:
            seen.append("class")
            return await original(self, step, port)

        AsyncRunner.execute = traced  # type: ignore[method-assign]
        assert AsyncRunner(None, Ledger()).now(step) is LATER  # type: ignore[arg-type]
    finally:
        AsyncRunner.execute = original  # type: ignore[method-assign]
    assert AsyncRunner(None, Ledger()).now(step) is None  # type: ignore[arg-type]

    def flow() -> Any:
        yield Audit("a")
        yield Audit("b")
        return "done"

    assert Traced(None, Ledger()).drive(flow()) == "done"  # type: ignore[arg-type]
    assert seen == ["Audit", "Audit"]


class _SyncAuthorizer:
    def commit(self, task_id: str, outcome: str) -> None: ...

    def release(self, task_id: str) -> None: ...


class _AsyncAuthorizer:
    async def commit(self, task_id: str, outcome: str) -> None: ...

    async def release(self, task_id: str) -> None: ...


class _MixedAuthorizer:
    async def commit(self, task_id: str, outcome: str) -> None: ...

    def release(self, task_id: str) -> None: ...


@pytest.mark.parametrize("authorizer", [_SyncAuthorizer, _AsyncAuthorizer, _MixedAuthorizer])
def test_gateway_steps_now_queue_what_execute_queues(
    monkeypatch: pytest.MonkeyPatch, authorizer: type
) -> None:
    """A gateway commit or release only goes into the guard's bookkeeping queue (it never
    waits): ``now`` hands it to the same queue, for the same guard, as ``execute`` does."""
    from types import SimpleNamespace

    from agentguard.pipeline import _runner

    queued: list[tuple[str, object, object]] = []
    monkeypatch.setattr(
        _runner, "_queue", lambda book, guard, step: queued.append((book.__name__, guard, step))
    )
    guard = SimpleNamespace(authorizer=authorizer())
    steps = [GatewayCommit("0x01", "settled"), GatewayRelease("0x02")]
    for runner in (Runner(guard, Ledger()), AsyncRunner(guard, Ledger())):  # type: ignore[arg-type]
        for step in steps:
            queued.clear()
            assert runner.now(step) is None
            fast = list(queued)
            queued.clear()
            if isinstance(runner, AsyncRunner):
                assert asyncio.run(runner.execute(step)) is None
            else:
                assert runner.execute(step) is None
            assert fast == queued and len(fast) == 1 and fast[0][1:] == (guard, step)
