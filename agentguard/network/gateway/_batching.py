"""One operator link's queue: the tasks waiting for an operator (or an operator host) go to it
together.

A task for an operator goes at once while nothing is in flight to that operator, so a lone
request is never held back. While a message to it is in flight, further tasks for it wait;
when the answer comes, those still wanted go in one ``agentguard_evaluateBatch`` message (at
most ``MAX_BATCH`` tasks and ``MAX_BATCH_BYTES``), so under load the per-message cost (HTTP,
event loop, the envelope) is paid once for several tasks, on both sides of the hop.

The operator checks, evaluates and signs each task on its own and answers each under its task
id. The answer is refused whole unless it answers every task sent exactly once (a task not
sent, one twice, one missing): then no task of it counts. Each answer goes to the task its id
names, and ``vote`` checks its signature against that task's own digest (which covers the task
id) and that operator's key, as for a task sent alone.

An operator host's link (several keys in one process) has one such queue too: each task names
the host's keys it wants (``operators``, as ``call_host`` alone) and the batch goes as
``agentguard_evaluateBatchForKeys``, at most ``MAX_HOST_KEYS`` keys named in all (one message
signs no more than one host call), and it may have two messages in flight (``_depth``), not
one. Each task's answer must then also answer each key it named exactly once
(``host_answers``), or the whole batch counts for none: a host that binds one task's answers
wrongly is lying, and nothing it said in that message is trusted.

Only tasks the operator already holds the policy code and registration for, and that nest
shallow enough for the batch's envelope, are coalesced; the others go alone as before, and so
does everything for an operator that does not know the method (``-32601``, remembered for the
link). A task whose waiter gave up (its timeout, a quorum reached: ``forget``) is not sent,
nor sent again alone after the batch it was in flight in is lost;
one the operator asks the policy or registration for is sent again alone, in full. A batch
lost or refused whole (an answer too long for ``MAX_RESPONSE``, not JSON, a JSON-RPC error;
not a timeout or an HTTP status, which no task causes) is sent again one task a message: one
task can never fail the others of its batch.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

from agentguard._json import _check_depth
from agentguard.network._rpc import (
    EVALUATE_BATCH,
    EVALUATE_BATCH_FOR_KEYS,
    MAX_BATCH,
    MAX_DEPTH,
    MAX_HOST_KEYS,
    METHOD_NOT_FOUND,
    POLICY_REQUIRED,
    REGISTRATION_REQUIRED,
)
from agentguard.network.gateway._operators import (
    Bodies,
    OperatorFailure,
    OperatorLink,
    bind_answers,
    call_host,
    call_operator,
    exchange,
    host_answers,
    named,
    rpc_failure,
)

__all__ = ["MAX_BATCH_BYTES", "LinkQueue"]

MAX_BATCH_BYTES = 128 * 1024  # half an operator's ``MAX_BODY``
_PREFIX = b'{"jsonrpc":"2.0","id":1,"method":"%s","params":{"tasks":[{'
_SUFFIX = b"}]}}"
# a task's members' values nest from level 5 in a batch (3 alone): the operator's limit then
_MEMBER_DEPTH = MAX_DEPTH - 4


class _Job:
    """One task for the link: ``asked``, the keys wanted of a host (else the operator's own);
    its outcome is then ``call_host``'s, else ``call_operator``'s."""

    __slots__ = ("asked", "bodies", "code_hash", "deadline", "future", "params")

    def __init__(
        self,
        bodies: Bodies,
        code_hash: bytes,
        deadline: float,
        future: asyncio.Future[Any],
        asked: Sequence[OperatorLink] | None,
    ) -> None:
        self.bodies = bodies
        self.code_hash = code_hash
        self.deadline = deadline
        self.future = future
        self.asked = asked
        self.params = bodies.lean
        if asked is not None:
            self.params += named([link.address for link in asked])

    @property
    def keys(self) -> int:
        return 1 if self.asked is None else len(self.asked)

    def outcome(self, result: Any) -> Any:
        """The outcome of the ``result`` answered for this task in a batch."""
        return result if self.asked is None else host_answers(self.asked, result)


async def _direct(
    link: OperatorLink,
    code_hash: bytes,
    bodies: Bodies,
    timeout: float,
    asked: Sequence[OperatorLink] | None,
) -> Any:
    """One task in a message of its own."""
    if asked is None:
        return await call_operator(link, code_hash, bodies, timeout)
    return await call_host(asked, code_hash, bodies, timeout)


class _Unsupported(Exception):
    """The operator does not know ``agentguard_evaluateBatch``."""


def _fits(bodies: Bodies) -> bool:
    """Whether a task nests shallow enough to go in a batch: one the operator takes alone
    (a policy client's params may nest to the limit) must not make it refuse the batch whole,
    failing every other client's task in it. Judged once per task, for every operator (a
    host's ``operators`` list adds no depth past its members')."""
    if bodies.batchable is None:
        try:
            _check_depth(bodies.lean.decode(), _MEMBER_DEPTH)
            bodies.batchable = True
        except ValueError:
            bodies.batchable = False
    return bodies.batchable


def _settle(job: _Job, outcome: Any) -> None:
    if not job.future.done():
        if isinstance(outcome, BaseException):
            job.future.set_exception(outcome)
        else:
            job.future.set_result(outcome)


class LinkQueue:
    """The tasks for one operator, or for one operator host's keys (``hosted``: any link of
    the host, whose connection and held names they share): a task waits only behind a
    message in flight to it."""

    def __init__(self, link: OperatorLink, *, hosted: bool = False) -> None:
        self.link = link
        self.hosted = hosted
        self.batching = True  # until the operator answers that it does not know the method
        self._prefix = _PREFIX % (EVALUATE_BATCH_FOR_KEYS if hosted else EVALUATE_BATCH).encode()
        self._busy = 0  # messages in flight
        # a host answers for several keys, so the gateway's work on one answer is long enough
        # for the host to idle through it: it gets the next message meanwhile
        self._depth = 2 if hosted else 1
        self._queue: deque[_Job] = deque()
        self._flying: set[_Job] = set()  # the tasks of the messages being sent, not yet settled
        self._sending: set[asyncio.Future[None]] = set()
        self.sent = 0  # evaluations asked of the operator (a host's call: one, for its keys)
        self.messages = 0  # messages sent to it: ``sent / messages`` tasks per message

    def submit(
        self,
        code_hash: bytes,
        bodies: Bodies,
        timeout: float,
        asked: Sequence[OperatorLink] | None = None,
    ) -> asyncio.Future[Any]:
        """A future of the operator's ``result`` for one task, as ``call_operator`` gives it;
        a host's (``asked``: the keys wanted, of this host), as ``call_host`` does. Queued (no
        task of its own) while the link's messages in flight are at its depth, else sent at
        once. ``_busy`` counts the call from here, before its task first runs: a second task
        submitted in the same step already waits behind it."""
        if (asked is not None) != self.hosted:
            raise ValueError("a host's queue takes the keys asked, an operator's none")
        link = self.link
        loop = asyncio.get_running_loop()
        if not (
            self._busy >= self._depth
            and self.batching
            and code_hash in link.has_code
            and bodies.registration_hash in link.has_registration
        ):
            self._busy += 1
            self.sent += 1
            self.messages += 1
            call = loop.create_task(_direct(link, code_hash, bodies, timeout, asked))
            call.add_done_callback(self._sent)
            return call
        if not _fits(bodies):  # alone, without holding back the queue behind it
            self.sent += 1
            self.messages += 1
            return loop.create_task(_direct(link, code_hash, bodies, timeout, asked))
        job = _Job(bodies, code_hash, loop.time() + timeout, loop.create_future(), asked)
        self._queue.append(job)
        return job.future

    def _sent(self, _: asyncio.Future[Any]) -> None:
        """A message sent at once is answered (or given up, even before it started)."""
        self._busy -= 1
        self._drain()

    def forget(self, bodies: Bodies) -> None:
        """The task of ``bodies`` is answered (its quorum reached): not sent if it still
        waits here, nor again alone if the message it is in flight in is lost (that message
        finishes, as a call sent alone does)."""
        for job in (*self._queue, *self._flying):
            if job.bodies is bodies:
                job.future.cancel()

    def close(self) -> None:
        """Every waiter hears: those of a message made but not yet started too (cancelled
        before its first step, ``_send`` never runs to settle them)."""
        for sending in list(self._sending):
            sending.cancel()
        for job in self._flying:
            job.future.cancel()
        while self._queue:
            self._queue.popleft().future.cancel()

    def _drain(self) -> None:
        if self._busy >= self._depth or not self._queue:
            return
        jobs = self._take()
        if jobs:
            self._busy += 1
            self._flying.update(jobs)
            sending = asyncio.ensure_future(self._send(jobs))
            self._sending.add(sending)
            sending.add_done_callback(self._sending.discard)

    def _take(self) -> list[_Job]:
        """The next message's tasks: still wanted, distinct task ids, within the caps (tasks,
        bytes, keys named)."""
        jobs: list[_Job] = []
        later: list[_Job] = []
        ids: set[str] = set()
        size = keys = 0
        while self._queue and len(jobs) < MAX_BATCH:
            job = self._queue[0]
            if job.future.done():  # its waiter gave up
                self._queue.popleft()
                continue
            if jobs and (
                size + len(job.params) > MAX_BATCH_BYTES or keys + job.keys > MAX_HOST_KEYS
            ):
                break
            self._queue.popleft()
            if job.bodies.task_id in ids:  # one task id once per message
                later.append(job)
                continue
            ids.add(job.bodies.task_id)
            size += len(job.params) + 3
            keys += job.keys
            jobs.append(job)
        self._queue.extendleft(reversed(later))
        return jobs

    async def _send(self, jobs: list[_Job]) -> None:
        try:
            if len(jobs) == 1:
                await self._alone(jobs[0])
            else:
                await self._batch(jobs)
        except asyncio.CancelledError:
            for job in jobs:
                job.future.cancel()
            raise
        except Exception as exc:  # a bug: every waiter hears of it (``FanOut``: internal)
            for job in jobs:
                _settle(job, exc)
        finally:
            self._busy -= 1
            self._flying.difference_update(jobs)
            self._drain()

    async def _alone(self, job: _Job) -> None:
        if job.future.done():  # its waiter gave up
            return
        timeout = max(0.001, job.deadline - asyncio.get_running_loop().time())
        self.sent += 1
        self.messages += 1
        try:
            outcome = await _direct(self.link, job.code_hash, job.bodies, timeout, job.asked)
        except Exception as exc:  # ``OperatorFailure``, or a bug ``FanOut`` reports as internal
            outcome = exc
        _settle(job, outcome)

    async def _batch(self, jobs: list[_Job]) -> None:
        body = self._prefix + b"},{".join(job.params for job in jobs) + _SUFFIX
        timeout = max(0.001, max(j.deadline for j in jobs) - asyncio.get_running_loop().time())
        self.sent += len(jobs)
        self.messages += 1
        try:
            answers = await self._post(body, timeout)
        except _Unsupported:
            self.batching = False
            await asyncio.gather(*(self._alone(job) for job in jobs))
            return
        except OperatorFailure as whole:
            if whole.code == "timeout" or whole.code.startswith("http_"):
                for job in jobs:  # no time left, or the operator's HTTP (overloaded, say)
                    _settle(job, whole)
                return
            # lost or refused whole: one task may be why (its answer too long for the
            # gateway's cap, say), and none may fail for another's sake: each goes alone
            await asyncio.gather(*(self._alone(job) for job in jobs))
            return
        try:
            by_id = bind_answers(answers, "task_id", {job.bodies.task_id for job in jobs}, "batch")
        except OperatorFailure as whole:  # an answer no honest operator gives: none counts
            for job in jobs:
                _settle(job, whole)
            return
        outcomes: list[Any] = []  # each task's, or its ``error`` object
        try:
            for job in jobs:
                answer = by_id[job.bodies.task_id]
                error = answer.get("error")
                outcomes.append(job.outcome(answer.get("result")) if error is None else error)
        except OperatorFailure as whole:  # a host's answers for one task not bound to its keys
            for job in jobs:
                _settle(job, whole)
            return
        again: list[_Job] = []
        link = self.link
        for job, outcome in zip(jobs, outcomes, strict=True):
            if by_id[job.bodies.task_id].get("error") is None:
                _settle(job, outcome)
                continue
            failure = rpc_failure(outcome)
            if failure.rpc_code in (POLICY_REQUIRED, REGISTRATION_REQUIRED):
                link.has_code.discard(job.code_hash)  # the operator restarted: send both
                link.has_registration.discard(job.bodies.registration_hash)
                again.append(job)
                continue
            _settle(job, failure)
        if again:
            await asyncio.gather(*(self._alone(job) for job in again))

    async def _post(self, body: bytes, timeout: float) -> Any:
        """The batch's ``answers``, or ``OperatorFailure`` for every task of it."""
        reply = await exchange(self.link, body, timeout)
        error = reply.get("error")
        if isinstance(error, dict):
            if error.get("code") == METHOD_NOT_FOUND:
                raise _Unsupported
            raise rpc_failure(error)
        result = reply.get("result")
        return result.get("answers") if isinstance(result, dict) else None
