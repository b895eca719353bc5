"""The gateway's expiry sweep (``State.sweeping``) with its usage checks asked off the event loop.

A usage check asks a chain node (5 s timeout per call, up to 1,000 tasks a pass): asked on the
loop, one slow node would stall every authorization. Here each check runs on one worker thread,
one at a time (a custom check need not be thread-safe), while the state is read and changed on
the loop only, between two ``await``s. Passes never overlap. A task whose check fails stays as it
is, counted, and is not asked again before a backoff that doubles per failure (1 s up to 5 min):
one warning per failure, not one a second for as long as a node is down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from agentguard._logging import get_logger
from agentguard.network.state import Pending, State, TaskRecord

__all__ = ["BACKOFF_FIRST", "BACKOFF_MAX", "BACKOFF_TASKS", "Check", "Sweeper"]

log = get_logger("agentguard.network.gateway")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 300.0
BACKOFF_TASKS = 10_000  # failing tasks remembered; one forgotten is only asked sooner

Check = Callable[[], bool | Pending | None]
"""One task's usage check, ready to run on the worker thread."""


class _Deferred(Exception):
    """Thrown into the pass for a task still in its backoff: it stays as it is, not asked."""


class Sweeper:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="agentguard-sweep")
        self._pass = asyncio.Lock()
        self._backoff: dict[str, tuple[int, float]] = {}  # task id -> (failures, retry at)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def sweep(
        self,
        state: State,
        now: int,
        check_for: Callable[[TaskRecord], Check] | None,
        trusted: Callable[[TaskRecord], bool],
    ) -> int:
        """One pass; returns how many tasks were given back. ``check_for(task)`` (on the loop)
        gives the check to run off it; ``None``: no usage check."""
        async with self._pass:
            loop = asyncio.get_running_loop()
            steps = state.sweeping(now, checking=check_for is not None, trusted=trusted)
            try:
                task = next(steps)
                while True:
                    assert check_for is not None  # without a check the pass asks nothing
                    held = self._backoff.get(task.task_id)
                    if held is not None and held[1] > self._clock():
                        task = steps.throw(_Deferred())
                        continue
                    try:
                        used = await loop.run_in_executor(
                            self._executor, _answer_of, check_for(task)
                        )
                    except Exception as exc:  # stays counted; asked again after its backoff
                        self._failed(task.task_id, exc)
                        task = steps.throw(exc)
                        continue
                    self._backoff.pop(task.task_id, None)
                    task = steps.send(used)
            except StopIteration as done:
                released: int = done.value
                return released

    def _failed(self, task_id: str, exc: Exception) -> None:
        failures = self._backoff.pop(task_id, (0, 0.0))[0] + 1
        delay = min(BACKOFF_FIRST * 2 ** min(failures - 1, 20), BACKOFF_MAX)
        self._backoff[task_id] = (failures, self._clock() + delay)
        while len(self._backoff) > BACKOFF_TASKS:  # the one that failed longest ago
            del self._backoff[next(iter(self._backoff))]
        log.warning(
            "usage check failed",
            task_id=task_id,
            failures=failures,
            retry_in=delay,
            error=f"{type(exc).__name__}: {exc}",
        )


def _answer_of(check: Check) -> bool | Pending | None:
    """``check()`` on the worker thread; a ``StopIteration`` it lets out becomes an error: an
    asyncio future cannot carry one (the pass would wait for its answer, and hold every later
    pass, for good)."""
    try:
        return check()
    except StopIteration as exc:
        raise RuntimeError(f"the usage check raised StopIteration: {exc}") from None
