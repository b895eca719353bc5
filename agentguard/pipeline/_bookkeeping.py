"""Gateway bookkeeping off the critical path: commit and release queued, retried, sent once.

The local ledger settles synchronously: the budget is exact and local. The gateway's
bookkeeping call (``agentguard_commitTask`` / ``agentguard_releaseTask``) only tells the
network what became of an attestation, and until it arrives the network keeps counting the
attested amount: its expiry sweep never gives back a task nobody reported (it stays
``attested``, counted, unless a usage check proves it unused). So a late, lost or never-sent
call can only make the network's view stricter, never looser, and the call need not sit
between a payment and its answer.

One queue per guard, served by one worker: a thread for a blocking authorizer
(``Bookkeeper``), an asyncio task for a coroutine one (``AsyncBookkeeper``). A call that
meets a transient failure (gateway down, 5xx, garbage) is tried again in later rounds with
backoff, then left counted (logged); a JSON-RPC error is the gateway's final word (e.g. the
task is no longer ``attested``) and is not retried. ``Guard.close()`` / ``AsyncGuard.aclose()``
drain the queue within a bound (``flush``); so does interpreter exit, for threads. A forked
child starts with empty queues and fresh locks: its parent sends what it queued.

Batched commits: a commit waits up to ``LINGER`` seconds for others, and the worker sends
every queued commit (at most ``BATCH``) in one call where the authorizer has ``commit_many``
(the reference gateway's ``agentguard_commitTasks``), so under a stream of payments one round
trip carries many while a lone payment still commits within ``LINGER``; ``flush`` sends at
once. A new call due before everything queued wakes the worker, also from a failed call's
backoff (up to ``MAX_BACKOFF``): the retry keeps its own round. Each item is judged alone:
the answer says, per item, that it landed or why not, and an item the answer does not
account for is retried like a lost call.

Exactly once: a task id is queued at most once while its call is pending, and the gateway
itself accepts one commit or release per task (a second finds it no longer ``attested`` and
is refused), so a retry after a lost answer is refused, never counted twice.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import heapq
import inspect
import itertools
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentguard._exceptions import GatewayProtocolError, GatewayUnavailable
from agentguard._logging import get_logger
from agentguard.pipeline._steps import GatewayCommit, GatewayRelease

__all__ = [
    "CLOSE_DRAIN_SECONDS",
    "AsyncBookkeeper",
    "Bookkeeper",
    "aflush",
    "async_bookkeeper",
    "bookkeeper",
    "flush",
]

log = get_logger("agentguard.pipeline")

Call = GatewayCommit | GatewayRelease

CLOSE_DRAIN_SECONDS = 5.0
"""How long closing a guard waits for its pending gateway calls (they stay counted after)."""
ROUNDS = 5
"""Rounds per call (each round is the gateway client's own retried attempt)."""
BACKOFF = 0.5
"""Seconds before the second round; doubles each round, at most ``MAX_BACKOFF``."""
MAX_BACKOFF = 8.0
MAX_WAIT = 3600.0
"""The longest single lock wait in ``flush`` (``flush(math.inf)`` waits in such steps)."""
IDLE_SECONDS = 2.0
"""A worker thread with nothing to do for this long ends (the next call starts one); an
asyncio worker ends as soon as nothing is queued (starting one is cheap)."""
LINGER = 0.05
"""Seconds a commit waits for others to share its round trip (``flush`` does not wait)."""
BATCH = 64
"""Commits one round trip carries at most."""
_REMEMBERED = 4096
"""Task ids whose call is done, remembered so a duplicate submission sends nothing."""


def _transient(exc: Exception) -> bool:
    """Worth another round: the call may not have arrived (or its answer was unreadable).
    Sending it again is safe: the gateway refuses a second commit/release of a task."""
    return isinstance(exc, GatewayUnavailable | GatewayProtocolError)


def _name(call: Call) -> str:
    return "commit" if isinstance(call, GatewayCommit) else "release"


def _args(call: Call) -> tuple[str, ...]:
    if isinstance(call, GatewayCommit):
        return (call.task_id, call.outcome)
    return (call.task_id,)


def _batched(authorizer: Any, calls: list[Call]) -> Callable[..., Any] | None:
    """The authorizer's ``commit_many`` when ``calls`` are several commits and it has one,
    unless its ``commit`` was replaced on the instance (a wrapper that logs or audits each
    commit must see each one, as it did before commits were batched)."""
    if len(calls) < 2 or not isinstance(calls[0], GatewayCommit):
        return None
    if "commit" in getattr(authorizer, "__dict__", ()):
        return None
    many: Callable[..., Any] | None = getattr(authorizer, "commit_many", None)
    return many if callable(many) else None


def _commits(calls: list[Call]) -> list[tuple[str, str]]:
    """(task id, outcome) of each commit (``take`` batches commits only)."""
    return [(call.task_id, call.outcome) for call in calls if isinstance(call, GatewayCommit)]


def _answers(answers: Any, calls: list[Call]) -> Sequence[Exception | None]:
    """``commit_many``'s per-item answers; anything but one ``None``-or-error per call means
    nothing is known to have landed (each is then retried like a lost call)."""
    if (
        isinstance(answers, list)
        and len(answers) == len(calls)
        and all(a is None or isinstance(a, Exception) for a in answers)
    ):
        return answers
    return [GatewayProtocolError("commit_many answered another number of items")] * len(calls)


@dataclass(order=True, slots=True)
class _Job:
    due: float
    seq: int
    call: Call = field(compare=False)
    rounds: int = field(default=0, compare=False)
    early: float = field(default=0.0, compare=False)
    """When it may go if hurried (``flush``) or if a batch is leaving anyway: a commit's
    linger ends early, a retry's backoff does not."""


class _Queue:
    """The state both workers share: due-ordered jobs, pending task ids, finished ids.
    Not thread-safe by itself; ``Bookkeeper`` guards it with a lock."""

    def __init__(self) -> None:
        self.jobs: list[_Job] = []
        self.pending: set[str] = set()
        self.done: OrderedDict[str, None] = OrderedDict()
        self.active = 0
        self._seq = itertools.count()

    def add(self, call: Call, linger: float = 0.0) -> bool:
        task = call.task_id
        if task in self.pending or task in self.done:
            log.info(f"gateway {_name(call)} already queued or sent", task_id=task)
            return False
        self.pending.add(task)
        now = time.monotonic()
        due = now + linger if isinstance(call, GatewayCommit) else now
        heapq.heappush(self.jobs, _Job(due, next(self._seq), call, early=now))
        return True

    def take(
        self, limit: int = 1, hurry: bool = False, linger: float = 0.0
    ) -> list[_Job] | float | None:
        """The next due job with, if it is a commit, the other commits that may go now (at
        most ``limit`` in all; each marked active); else the seconds until one is due, or
        ``None`` when nothing is queued. ``hurry``: lingering commits are due. ``linger``:
        how long a commit lingers (those queued within it are looked at, no others)."""
        jobs = self.jobs
        if not jobs:
            return None
        now = time.monotonic()
        head = jobs[0]
        if head.due <= now:
            heapq.heappop(jobs)
        elif not hurry:
            return head.due - now
        else:
            head = min(jobs, key=lambda job: (job.early, job.seq))
            if head.early > now:
                return head.early - now
            jobs.remove(head)
            heapq.heapify(jobs)
        batch = [head]
        if isinstance(head.call, GatewayCommit):
            aside: list[_Job] = []
            while len(batch) < limit and jobs and jobs[0].due <= now + linger:
                job = heapq.heappop(jobs)
                may_go = isinstance(job.call, GatewayCommit) and job.early <= now
                (batch if may_go else aside).append(job)
            for job in aside:
                heapq.heappush(jobs, job)
        self.active += len(batch)
        return batch

    def finish(
        self, job: _Job, error: Exception | None, backoff: float, rounds: int, now: float
    ) -> None:
        """``now``: when the call ended (one instant for a batch: its retries stay together)."""
        self.active -= 1
        call = job.call
        if error is not None and _transient(error) and job.rounds + 1 < rounds:
            job.rounds += 1
            job.due = now + min(backoff * 2 ** (job.rounds - 1), MAX_BACKOFF)
            job.early = job.due
            heapq.heappush(self.jobs, job)
            log.info(
                f"gateway {_name(call)} failed; retrying",
                task_id=call.task_id,
                error=type(error).__name__,
                round=job.rounds,
            )
            return
        if error is not None:
            _left_counted(call, error)
        self.pending.discard(call.task_id)
        self.done[call.task_id] = None
        if len(self.done) > _REMEMBERED:
            self.done.popitem(last=False)

    def requeue(self, job: _Job) -> None:
        """An attempt that never finished (its task was cancelled with its event loop): the
        call goes back in the queue, for the next worker."""
        self.active -= 1
        heapq.heappush(self.jobs, job)

    def outstanding(self) -> int:
        return len(self.jobs) + self.active

    def forked(self) -> _Queue:
        """The queue a forked child starts with: empty (the parent sends what it queued, and
        its in-flight call never finishes here), remembering every id the parent had."""
        child = _Queue()
        child.done = OrderedDict(self.done)
        child.done.update(dict.fromkeys(self.pending))
        while len(child.done) > _REMEMBERED:
            child.done.popitem(last=False)
        return child

    def abandon(self, why: str) -> int:
        """Give up on every queued job (the guard is gone): they stay counted."""
        left = len(self.jobs)
        for job in self.jobs:
            self.pending.discard(job.call.task_id)
            log.warning(
                f"gateway {_name(job.call)} not sent ({why}); the network keeps counting it",
                task_id=job.call.task_id,
            )
        self.jobs.clear()
        return left


def _held(guard: weakref.ref[Any], kept: Any) -> Any:
    """The guard, strongly held while its calls wait: a commit lingers for company, and a
    wallet dropped right after its last payment must not take that commit with it (the
    queue would find its guard collected and the gateway would never hear). Released once
    nothing is outstanding, so a quiet guard is still collected."""
    return kept if kept is not None else guard()


def _left_counted(call: Call, error: Exception) -> None:
    what = _name(call)
    log.warning(
        f"gateway {what} not delivered; the network keeps counting the attestation"
        + (" until its expiry sweep" if what == "release" else ""),
        task_id=call.task_id,
        error=type(error).__name__,
    )


class Bookkeeper:
    """One blocking guard's gateway calls, sent by a worker thread (started on demand)."""

    rounds: int = ROUNDS
    backoff: float = BACKOFF
    linger: float = LINGER
    batch: int = BATCH

    def __init__(self, guard: Any) -> None:
        self._guard = weakref.ref(guard)
        self._keep: Any = None  # the guard, held while a call waits (see ``_held``)
        self._queue = _Queue()
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._hurry = 0  # flushes waiting: lingering commits go at once

    def _forked(self) -> None:
        """In a forked child: a fresh lock (a parent thread may have held this one at the
        fork) and queue, and no worker (the parent's did not come along); a parent thread's
        flush did not come along either, so nothing hurries the child's commits."""
        self._queue = self._queue.forked()
        self._cond = threading.Condition()
        self._worker = None
        self._hurry = 0
        self._keep = None

    def submit(self, call: Call) -> None:
        with self._cond:
            if not self._queue.add(call, self.linger):
                return
            self._keep = _held(self._guard, self._keep)
            if self._worker is None or not self._worker.is_alive():  # none yet, or forked
                worker = threading.Thread(
                    target=self._work, name="agentguard-bookkeeping", daemon=True
                )
                try:
                    worker.start()
                except RuntimeError as exc:  # no thread to be had: the next call tries again
                    log.warning("bookkeeping worker not started", error=str(exc))
                else:
                    self._worker = worker
            if self._queue.jobs[0].call is call:  # due before anything queued: wake
                self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Calls queued or in flight."""
        with self._cond:
            return self._queue.outstanding()

    def flush(self, timeout: float = CLOSE_DRAIN_SECONDS) -> int:
        """Wait until every queued call is done (at most ``timeout`` seconds); returns how many
        are still pending (they keep being tried while the process lives, and count until
        then)."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            self._hurry += 1
            self._cond.notify_all()
            try:
                while self._queue.outstanding():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(min(left, MAX_WAIT))  # a lock wait refuses ``inf``
                return self._queue.outstanding()
            finally:
                self._hurry -= 1

    def _take(self) -> list[_Job] | float | None:
        return self._queue.take(self.batch, self._hurry > 0, self.linger)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not isinstance(jobs := self._take(), list):
                    if jobs is not None:  # a retry (or a lingering commit) not yet due
                        self._cond.wait(jobs)
                    elif not self._cond.wait(IDLE_SECONDS) and not self._queue.outstanding():
                        self._worker = None  # idle: the next submit starts another
                        return
            errors = self._send([job.call for job in jobs])
            with self._cond:
                now = time.monotonic()
                for job, error in zip(jobs, errors, strict=True):
                    self._queue.finish(job, error, self.backoff, self.rounds, now)
                if not self._queue.outstanding():
                    self._keep = None
                self._cond.notify_all()

    def _send(self, calls: list[Call]) -> Sequence[Exception | None]:
        """Each call's error (kept, judged by ``finish``) or ``None``."""
        guard = self._guard()
        if guard is None:
            return [RuntimeError("the guard was garbage-collected")] * len(calls)
        many = _batched(guard.authorizer, calls)
        if many is not None:
            try:
                return _answers(many(_commits(calls)), calls)
            except Exception as exc:  # the whole call failed: nothing is known to have landed
                return [exc] * len(calls)
        errors: list[Exception | None] = []
        for call in calls:
            try:
                getattr(guard.authorizer, _name(call))(*_args(call))
            except Exception as exc:
                errors.append(exc)
            else:
                errors.append(None)
        return errors


class _Alarm:
    """What the asyncio worker sleeps on: ``seconds`` pass or ``ring`` is called, whichever
    comes first. ``asyncio.wait_for(event.wait(), seconds)`` did the same with a task per
    wait, and cancelled and awaited that task at every timeout (every lingering commit):
    here it is one future and one timer. A ring while the worker is not asleep wakes
    nothing, as a ring of the cleared ``Event`` did not: the worker looks at the queue
    again before each sleep, and nothing can ring between that look and the sleep."""

    __slots__ = ("_waiter",)

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None

    def ring(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(seconds, _wake_up, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None


def _wake_up(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class AsyncBookkeeper:
    """One async guard's gateway calls, sent by an asyncio task on the submitting loop."""

    rounds: int = ROUNDS
    backoff: float = BACKOFF
    linger: float = LINGER
    batch: int = BATCH

    def __init__(self, guard: Any) -> None:
        self._guard = weakref.ref(guard)
        self._keep: Any = None  # the guard, held while a call waits (see ``_held``)
        self._queue = _Queue()
        self._worker: asyncio.Task[None] | None = None
        self._wake = _Alarm()
        self._idle: asyncio.Event | None = None
        self._hurry = 0

    def _forked(self) -> None:
        """In a forked child: the parent's loop, worker and flushes did not come along."""
        self._queue = self._queue.forked()
        self._worker = self._idle = None
        self._wake = _Alarm()
        self._hurry = 0
        self._keep = None

    def submit(self, call: Call) -> None:
        """Queue ``call``; must be called on a running event loop."""
        if not self._queue.add(call, self.linger):
            return
        self._keep = _held(self._guard, self._keep)
        self._start(asyncio.get_running_loop())
        if self._queue.jobs[0].call is call:  # due first: wake
            self._wake.ring()  # (a commit behind a lingering one goes with it, no sooner)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        """A worker on ``loop`` unless one runs there (one whose loop is gone is replaced)."""
        worker = self._worker
        if worker is None or worker.done() or worker.get_loop() is not loop:
            self._wake, self._idle = _Alarm(), asyncio.Event()
            self._worker = loop.create_task(
                self._work(self._wake, self._idle), name="agentguard-bookkeeping"
            )

    @property
    def pending(self) -> int:
        return self._queue.outstanding()

    async def flush(self, timeout: float = CLOSE_DRAIN_SECONDS) -> int:
        """``Bookkeeper.flush`` for asyncio."""
        if not self._queue.outstanding():
            return 0
        self._start(asyncio.get_running_loop())  # the loop that queued them may be gone
        assert self._idle is not None
        self._hurry += 1
        self._wake.ring()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), max(0.0, timeout))
        finally:
            self._hurry -= 1
        return self._queue.outstanding()

    def _take(self) -> list[_Job] | float | None:
        return self._queue.take(self.batch, self._hurry > 0, self.linger)

    async def _work(self, wake: _Alarm, idle: asyncio.Event) -> None:
        """Send until nothing is queued, then end (the next ``submit`` starts another)."""
        try:
            while (jobs := self._take()) is not None:
                if not isinstance(jobs, list):  # not yet due (or a new call, or a flush, sooner)
                    await wake.sleep(jobs)
                    continue
                try:
                    errors = await self._send([job.call for job in jobs])
                except BaseException:  # cancelled (the loop is ending): not lost, queued again
                    for job in jobs:
                        self._queue.requeue(job)
                    raise
                now = time.monotonic()
                for job, error in zip(jobs, errors, strict=True):
                    self._queue.finish(job, error, self.backoff, self.rounds, now)
        finally:
            if not self._queue.outstanding():
                self._keep = None
            idle.set()

    async def _send(self, calls: list[Call]) -> Sequence[Exception | None]:
        guard = self._guard()
        if guard is None:
            return [RuntimeError("the guard was garbage-collected")] * len(calls)
        many = _batched(guard.authorizer, calls)
        if many is not None:
            try:
                if inspect.iscoroutinefunction(many):
                    return _answers(await many(_commits(calls)), calls)
                return _answers(await asyncio.to_thread(many, _commits(calls)), calls)
            except Exception as exc:
                return [exc] * len(calls)
        return [await self._one(guard, call) for call in calls]

    async def _one(self, guard: Any, call: Call) -> Exception | None:
        method: Callable[..., Any] = getattr(guard.authorizer, _name(call))
        try:
            if inspect.iscoroutinefunction(method):
                await method(*_args(call))
            else:
                await asyncio.to_thread(method, *_args(call))
        except Exception as exc:
            return exc
        return None


_books: weakref.WeakKeyDictionary[Any, Bookkeeper] = weakref.WeakKeyDictionary()
_async_books: weakref.WeakKeyDictionary[Any, AsyncBookkeeper] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def bookkeeper(guard: Any) -> Bookkeeper:
    """The (one) blocking bookkeeping queue of ``guard``."""
    with _lock:
        book = _books.get(guard)
        if book is None:
            book = _books[guard] = Bookkeeper(guard)
        return book


def async_bookkeeper(guard: Any) -> AsyncBookkeeper:
    """The (one) asyncio bookkeeping queue of ``guard``."""
    with _lock:
        book = _async_books.get(guard)
        if book is None:
            book = _async_books[guard] = AsyncBookkeeper(guard)
        return book


def flush(guard: Any, timeout: float = CLOSE_DRAIN_SECONDS) -> int:
    """Wait (at most ``timeout`` s) until the gateway was told every outcome ``guard``'s
    pipelines queued; returns how many calls are still pending."""
    with _lock:
        book = _books.get(guard)
    return book.flush(timeout) if book is not None else 0


async def aflush(guard: Any, timeout: float = CLOSE_DRAIN_SECONDS) -> int:
    """``flush`` for asyncio: drains the guard's asyncio queue and its thread queue."""
    deadline = time.monotonic() + timeout
    with _lock:
        book = _async_books.get(guard)
        threaded = _books.get(guard)
    left = await book.flush(timeout) if book is not None else 0
    if threaded is not None:
        rest = max(0.0, deadline - time.monotonic())
        left += await asyncio.to_thread(threaded.flush, rest)
    return left


def _after_fork_in_child() -> None:
    """A forked child keeps no call of its parent's (the parent sends those; sending them here
    too would be a second call) and no lock a parent thread held at the fork."""
    global _lock
    _lock = threading.Lock()
    for book in list(_books.values()):
        book._forked()
    for abook in list(_async_books.values()):
        abook._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _drain_at_exit() -> None:
    """Interpreter exit: give the worker threads a bounded chance to finish."""
    deadline = time.monotonic() + CLOSE_DRAIN_SECONDS
    with _lock:
        books = list(_books.values())
    for book in books:
        book.flush(max(0.0, deadline - time.monotonic()))
