"""Runners: perform the pipeline's steps, blocking (``Runner``) or in asyncio (``AsyncRunner``).

A runner knows the guard, the ledger and the audit sink; the entry point passes its ``Port``
(how to prepare, sign, send and confirm). A step that fails is thrown back into the flow at
the point that asked for it, so the flow alone decides what a failure means. Gateway
bookkeeping (commit/release) is queued for the guard's background worker
(``_bookkeeping``): off the critical path, retried, sent once; until it arrives the network
keeps counting, never less.

Both runners execute one step per ``execute`` call, which is the seam for tracing and fault
injection (wrap ``execute``, or pass a port whose ``send`` misbehaves). Steps that never wait
(ledger, audit, queueing gateway bookkeeping, a non-blocking port's plain methods) a stock
runner performs on the spot (``now``), without a coroutine per step; a runner whose
``execute`` was replaced gets every step through it.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Coroutine, Mapping
from inspect import CO_COROUTINE
from types import FunctionType, MethodType
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard, TypeVar

from agentguard._exceptions import (
    ApprovalRejected,
    ApprovalTimedOut,
    ConfigurationError,
    GatewayProtocolError,
    GatewayUnavailable,
)
from agentguard._gateway import ApprovalStatus
from agentguard._logging import get_logger
from agentguard._verifier import VerifiedAttestation
from agentguard.ledger import Ledger, Reservation
from agentguard.pipeline._bookkeeping import (
    AsyncBookkeeper,
    Bookkeeper,
    async_bookkeeper,
    bookkeeper,
)
from agentguard.pipeline._flow import Action, guarded
from agentguard.pipeline._outcomes import Outcome, Prepared, Sent, Settled, Signed
from agentguard.pipeline._steps import (
    Abandon,
    Audit,
    Authorize,
    AwaitApproval,
    Bind,
    Commit,
    Confirm,
    Flow,
    GatewayCommit,
    GatewayRelease,
    MarkSigned,
    Prepare,
    Release,
    Reserve,
    Send,
    Sign,
    Step,
)

if TYPE_CHECKING:
    from agentguard._guard import AsyncGuard, Guard

__all__ = ["LATER", "AsyncPort", "AsyncRunner", "AuditSink", "Port", "Runner"]

log = get_logger("agentguard.pipeline")
R = TypeVar("R")


class AuditSink(Protocol):
    """Where decisions are recorded (``agentguard.audit.AuditLog`` or anything alike)."""

    def append(self, kind: str, record: Mapping[str, Any]) -> object: ...


class Port(Protocol):
    """What an entry point supplies: how to sign and send, and how to read what happened.

    Methods may be plain or ``async``; ``AsyncRunner`` runs plain ones in a worker thread,
    unless the port says ``blocking = False`` (no I/O in ``prepare``/``sign``/``abandon``/
    ``confirm``, e.g. signing an x402 authorization), then inline.
    """

    def prepare(self, verified: VerifiedAttestation) -> Prepared: ...

    def sign(self, verified: VerifiedAttestation, prepared: Prepared) -> Signed: ...

    def abandon(self, prepared: Prepared) -> None: ...

    def send(self, signed: Signed) -> Sent | Outcome: ...

    def confirm(self, signed: Signed) -> Outcome: ...


class AsyncPort(Protocol):
    """``Port`` with coroutine methods, for ``AsyncRunner``. ``abandon`` must not suspend: it
    also runs while the task is being cancelled."""

    async def prepare(self, verified: VerifiedAttestation) -> Prepared: ...

    async def sign(self, verified: VerifiedAttestation, prepared: Prepared) -> Signed: ...

    async def abandon(self, prepared: Prepared) -> None: ...

    async def send(self, signed: Signed) -> Sent | Outcome: ...

    async def confirm(self, signed: Signed) -> Outcome: ...


def _local_step(ledger: Ledger, audit: AuditSink | None, step: Step) -> Reservation | None:
    """The ledger and audit steps: local, synchronous, the same for both runners."""
    match step:
        case Audit():
            if audit is not None:
                audit.append(step.kind, step.record)
            return None
        case Reserve():
            expires_at = step.expires_at
            if expires_at is None:
                expires_at = ledger.now() + step.hold_seconds
            return ledger.reserve(
                step.agent,
                step.spend,
                key=step.key,
                expires_at=expires_at,
                limits=step.limits,
                action=step.action,
            )
        case Bind():
            return ledger.bind(
                step.reservation_id, task_id=step.task_id, expires_at=step.expires_at
            )
        case MarkSigned():
            return ledger.mark_signed(step.reservation_id, step.reference)
        case Commit():
            return ledger.commit(step.reservation_id, step.outcome, step.amount)
        case Release():
            return ledger.release(step.reservation_id, step.reason)
    raise TypeError(f"not a local step: {step!r}")


def _port_call(
    port: Port | AsyncPort | None, step: Step
) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    if port is None:
        raise TypeError(f"{type(step).__name__} needs the entry point's port")
    match step:
        case Prepare():
            return port.prepare, (step.verified,)
        case Sign():
            return port.sign, (step.verified, step.prepared)
        case Abandon():
            return port.abandon, (step.prepared,)
        case Send():
            return port.send, (step.signed,)
        case Confirm():
            return port.confirm, (step.signed,)
    raise TypeError(f"not a port step: {step!r}")


_LOCAL = (Reserve, Bind, MarkSigned, Commit, Release, Audit)
_PORT = (Prepare, Sign, Abandon, Send, Confirm)
_LOCAL_TYPES = frozenset(_LOCAL)
_PORT_TYPES = frozenset(_PORT)
_BOOK_TYPES = frozenset((GatewayCommit, GatewayRelease))

LATER: Any = object()
"""``now``'s answer for a step that has to go through ``execute``."""


def _now(runner: Any, stock: Callable[..., Any], step: Step, port: object) -> Any:
    """What ``runner.execute(step, port)`` would return (or raise) for a step of exactly a step
    class that never waits: a ledger or audit step, a gateway call handed to the bookkeeping
    queue, or a plain method of a port that says ``blocking = False`` (both runners call such a
    method directly); ``LATER`` for anything
    else, and for every step when ``execute`` is not ``stock`` (a subclass's or an instance's
    own: the seam for tracing and fault injection sees every step)."""
    if type(runner).execute is not stock or "execute" in runner.__dict__:  # not the stock one
        return LATER
    kind = type(step)
    if kind in _LOCAL_TYPES:
        return _local_step(runner.ledger, runner.audit, step)
    if kind in _BOOK_TYPES:
        return runner._book(step)
    if kind in _PORT_TYPES and port is not None and not getattr(port, "blocking", True):
        method, args = _port_call(port, step)  # type: ignore[arg-type]
        if not _coroutine(method):
            return method(*args)
    return LATER


def _pending(pending: Prepared | None, step: Step, value: Any, ok: bool) -> Prepared | None:
    """What the port prepared and nobody has sent or abandoned yet. A run interrupted in
    between (cancelled, KeyboardInterrupt: not an ``Exception``, so the flow never sees it)
    abandons it on the way out, so a nonce lock is never left held."""
    if isinstance(step, Prepare) and ok:
        return value  # type: ignore[no-any-return]
    if isinstance(step, Send | Abandon):
        return None
    return pending


APPROVAL_POLL_SECONDS = 0.5


def _status_method(guard: Any) -> Callable[..., Any]:
    method = getattr(guard.authorizer, "approval_status", None)
    if method is None:
        raise ConfigurationError(
            f"the guard's authorizer ({type(guard.authorizer).__name__}) cannot report approval "
            "status; use NewtonGateway, or approval_timeout=None"
        )
    return method  # type: ignore[no-any-return]


def _approval_verdict(step: AwaitApproval, status: object) -> bool:
    """True: read approved (authorize again). False: keep waiting. Raises when it is over.
    ``used`` (another task spent that approval) also means ask again: the gateway then parks a
    new request."""
    if not isinstance(status, ApprovalStatus) or status.intent_hash != step.intent_hash:
        raise GatewayProtocolError("the approval status answered about another intent")
    if status.status in ("approved", "used"):
        return True
    if status.status == "rejected":
        raise ApprovalRejected(
            f"a person rejected intent {step.intent_hash}; nothing was signed",
            intent_hash=step.intent_hash,
        )
    if status.status == "expired":
        raise ApprovalTimedOut(
            f"the approval request for intent {step.intent_hash} expired undecided; nothing "
            "was signed",
            intent_hash=step.intent_hash,
        )
    return False


def _timed_out(step: AwaitApproval) -> ApprovalTimedOut:
    return ApprovalTimedOut(
        f"no approval for intent {step.intent_hash} before the wait ended; nothing was signed",
        intent_hash=step.intent_hash,
    )


def _interrupted(
    ledger: Ledger, audit: AuditSink | None, step: AwaitApproval, exc: BaseException
) -> None:
    """A wait cancelled or interrupted (not an ``Exception``: the flow handles those) ends the
    run without the flow: give its hold back here, or it would count until it expires
    (``approval_timeout`` later). Nothing was signed: no attestation exists while waiting."""
    if isinstance(exc, Exception):
        return
    reason = f"the wait for a person was interrupted ({type(exc).__name__}); nothing was signed"
    try:
        _local_step(ledger, audit, Release(step.hold, reason))
        _local_step(ledger, audit, Audit("released", {"reservation": step.hold, "reason": reason}))
    except Exception as failed:  # the interruption is what the caller must see
        log.info("hold not released", reservation=step.hold, error=type(failed).__name__)


def _coroutine(method: object) -> TypeGuard[Callable[..., Coroutine[Any, Any, Any]]]:
    """``inspect.iscoroutinefunction``, without its unwrapping on the common case: a plain
    function or a bound method of one is judged by its code's flag, read now (nothing is
    remembered: the host may re-point ``__code__`` between calls, and a remembered answer
    would skip an ``await`` or await a plain value). A function marked by hand, and anything
    else (a callable object, a partial), is asked of ``inspect`` every time."""
    function = method.__func__ if type(method) is MethodType else method
    if type(function) is not FunctionType or "_is_coroutine_marker" in function.__dict__:
        return inspect.iscoroutinefunction(method)
    return bool(function.__code__.co_flags & CO_COROUTINE)


def _queue(
    book: Callable[[Any], Bookkeeper | AsyncBookkeeper],
    guard: Any,
    step: GatewayCommit | GatewayRelease,
) -> None:
    """Hand a gateway call to the guard's background worker (``_bookkeeping``). Never raises
    into the flow: the outcome is already settled locally, and the network keeps counting
    what it is not told."""
    try:
        book(guard).submit(step)
    except Exception as exc:
        log.warning("gateway call not queued", task_id=step.task_id, error=type(exc).__name__)


class Runner:
    """Runs flows blocking: ``runner.run(action, port)``."""

    approval_poll: float = APPROVAL_POLL_SECONDS

    def __init__(self, guard: Guard, ledger: Ledger, audit: AuditSink | None = None) -> None:
        self.guard, self.ledger, self.audit = guard, ledger, audit

    def run(self, action: Action, port: Port) -> Settled:
        return self.drive(guarded(action), port)

    def drive(self, flow: Flow[R], port: Port | None = None) -> R:
        value: Any = None
        error: Exception | None = None
        pending: Prepared | None = None
        try:
            while True:
                try:
                    step = flow.throw(error) if error is not None else flow.send(value)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                value, error = None, None
                try:
                    value = self.now(step, port)
                    if value is LATER:
                        value = self.execute(step, port)
                except Exception as exc:  # handed back to the flow, which decides
                    error = exc
                pending = _pending(pending, step, value, error is None)
        except BaseException:
            if pending is not None and port is not None:
                port.abandon(pending)
            raise

    def now(self, step: Step, port: Port | None = None) -> Any:
        """``execute(step, port)`` for a step that never waits, or ``LATER`` (``_now``)."""
        return _now(self, _RUNNER_EXECUTE, step, port)

    def execute(self, step: Step, port: Port | None = None) -> Any:
        if isinstance(step, _LOCAL):
            return _local_step(self.ledger, self.audit, step)
        if isinstance(step, _PORT):
            method, args = _port_call(port, step)
            return method(*args)
        match step:
            case Authorize():
                return self.guard.authorize(step.intent, wasm_args=step.wasm_args)
            case AwaitApproval():
                return self._await_approval(step)
            case GatewayRelease() | GatewayCommit():
                return self._book(step)
        raise TypeError(f"unknown pipeline step {step!r}")

    def _book(self, step: GatewayCommit | GatewayRelease) -> None:
        _queue(bookkeeper, self.guard, step)

    def _await_approval(self, step: AwaitApproval) -> None:
        try:
            self._poll_approval(step)
        except BaseException as exc:
            _interrupted(self.ledger, self.audit, step, exc)
            raise

    def _poll_approval(self, step: AwaitApproval) -> None:
        status = _status_method(self.guard)
        while True:
            left = step.deadline - time.monotonic()
            if left <= 0:
                raise _timed_out(step)
            time.sleep(min(self.approval_poll, left))
            try:
                if _approval_verdict(step, status(step.intent_hash)):
                    return
            except GatewayUnavailable:
                continue  # transient: ask again until the deadline


class AsyncRunner:
    """Runs flows in asyncio. ``guard`` may be an ``AsyncGuard`` or a blocking ``Guard`` (run
    in a worker thread); plain port methods run in a worker thread too. Ledger and audit writes
    are sub-millisecond local appends and run inline."""

    approval_poll: float = APPROVAL_POLL_SECONDS

    def __init__(
        self, guard: Guard | AsyncGuard, ledger: Ledger, audit: AuditSink | None = None
    ) -> None:
        self.guard, self.ledger, self.audit = guard, ledger, audit

    async def run(self, action: Action, port: Port | AsyncPort) -> Settled:
        return await self.drive(guarded(action), port)

    async def drive(self, flow: Flow[R], port: Port | AsyncPort | None = None) -> R:
        value: Any = None
        error: Exception | None = None
        pending: Prepared | None = None
        try:
            while True:
                try:
                    step = flow.throw(error) if error is not None else flow.send(value)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                value, error = None, None
                try:
                    value = self.now(step, port)
                    if value is LATER:
                        value = await self.execute(step, port)
                except Exception as exc:
                    error = exc
                pending = _pending(pending, step, value, error is None)
        except BaseException:
            if pending is not None and port is not None:
                done = port.abandon(pending)  # must not suspend: it runs while cancelled
                if inspect.isawaitable(done):
                    await done
            raise

    def now(self, step: Step, port: Port | AsyncPort | None = None) -> Any:
        """What ``await execute(step, port)`` gives for a step that never waits, performed
        without a coroutine; ``LATER`` for any other step (``_now``)."""
        return _now(self, _ASYNC_RUNNER_EXECUTE, step, port)

    async def execute(self, step: Step, port: Port | AsyncPort | None = None) -> Any:
        if isinstance(step, _LOCAL):
            return _local_step(self.ledger, self.audit, step)
        if isinstance(step, _PORT):
            method, args = _port_call(port, step)
            if _coroutine(method):
                return await method(*args)
            if not getattr(port, "blocking", True):  # CPU-light: a thread hop costs more
                return method(*args)
            return await asyncio.to_thread(method, *args)
        guard = self.guard
        match step:
            case Authorize():
                if _coroutine(guard.authorize):
                    return await guard.authorize(step.intent, wasm_args=step.wasm_args)
                return await asyncio.to_thread(
                    guard.authorize, step.intent, wasm_args=step.wasm_args
                )
            case AwaitApproval():
                return await self._await_approval(step)
            case GatewayRelease() | GatewayCommit():
                return self._book(step)
        raise TypeError(f"unknown pipeline step {step!r}")

    def _book(self, step: GatewayCommit | GatewayRelease) -> None:
        """Queue the gateway call: never waits (``now`` does it on the spot too)."""
        name = "release" if isinstance(step, GatewayRelease) else "commit"
        asynchronous = _coroutine(getattr(self.guard.authorizer, name, None))
        _queue(async_bookkeeper if asynchronous else bookkeeper, self.guard, step)

    async def _await_approval(self, step: AwaitApproval) -> None:
        try:
            await self._poll_approval(step)
        except BaseException as exc:
            _interrupted(self.ledger, self.audit, step, exc)
            raise

    async def _poll_approval(self, step: AwaitApproval) -> None:
        status = _status_method(self.guard)
        while True:
            left = step.deadline - time.monotonic()
            if left <= 0:
                raise _timed_out(step)
            await asyncio.sleep(min(self.approval_poll, left))
            try:
                if inspect.iscoroutinefunction(status):
                    answer = await status(step.intent_hash)
                else:
                    answer = await asyncio.to_thread(status, step.intent_hash)
                if _approval_verdict(step, answer):
                    return
            except GatewayUnavailable:
                continue  # transient: ask again until the deadline


# Each runner's own ``execute``, as defined above: ``now`` defers to whatever replaced it
# (a subclass, an instance attribute, or the class attribute itself, as a tracer does).
_RUNNER_EXECUTE = Runner.execute
_ASYNC_RUNNER_EXECUTE = AsyncRunner.execute
