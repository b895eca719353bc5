"""``X402Auth``: an ``httpx.Auth`` that pays x402 answers, each through the guarded pipeline.

Per request, at most one payment is signed::

    402 → parse → select → PaymentIntent → the pipeline (reserve → authorize → bind → build
        the authorization → sign → mark signed) → retry once with the payment → outcome

``_flow`` is one generator for both httpx clients: it yields requests (for httpx), reads and
pipeline steps (for the sync or async driver). The pipeline's ``Send`` is the paid retry;
its answer becomes an outcome the pipeline settles:

* ``exact`` settled (or delivered without a receipt): committed;
* ``upto``: the signed maximum stays counted — a payee's reported charge is not proof; only
  the chain is (``ledger.recover(agentguard.x402.resolver(w3))``);
* a 402 after paying, ``settlement_pending``, a failed answer: stays counted.

Lost answers: only a paid request whose answer never came (httpx closed the flow while it was
in flight: transport error, cancellation) is remembered, and the same request (method, URL,
body) sent again re-sends those exact bytes. A paid request the transport refused before writing
any byte of it (``auth.client()``'s transport marks it, see ``_transport``) released its hold
instead: the signed payment never left the process, and it is dropped from the request (first
sends only; a re-send of a lost payment stays counted, the first send may have been taken).
A concurrent identical request whose payment is merely in flight gets its own authorization
and payment (``exact``; ``upto``: see below). A run cancelled or interrupted before its ``Send``
unwinds as a failed step would (``_Unwind``); a 402's body is read to ``MAX_BODY_BYTES`` at most.

``upto`` sessions: requests racing to pay one endpoint's ``upto`` 402 claim its opening in
turn (``Sessions.claim``); one pays, the others wait (within their pool timeout, cancellable)
and then ride its session, so N racing first requests make one signature and one hold.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from agentguard._exceptions import (
    ConfigurationError,
    PaymentSessionBusy,
    RequestNotSent,
)
from agentguard._guard import AsyncGuard, Guard
from agentguard._intent import PaymentIntent
from agentguard._logging import get_logger
from agentguard._signer import Signer
from agentguard.ledger import Ledger, Limits
from agentguard.pipeline import (
    LATER,
    Action,
    AsyncRunner,
    AuditSink,
    AwaitApproval,
    Flow,
    InFlight,
    NeverLanded,
    Outcome,
    Port,
    Runner,
    Send,
    Settled,
    Signed,
    Step,
    StillCounted,
    guarded,
    settle,
)
from agentguard.x402._answer import UPTO_CHARGE, UPTO_SESSION, Paid, SessionOpened, outcome
from agentguard.x402._body import aread_bounded, read_bounded
from agentguard.x402._payment import Payment, PaymentPort
from agentguard.x402._select import Allowances, select
from agentguard.x402._sessions import Opening, Session, Sessions
from agentguard.x402._transport import (
    NOT_SENT_EXTENSION,
    PAYMENT_EXTENSION,
    RELAY_EXTENSION,
    SESSION_EXTENSION,
    AsyncTransport,
    Transport,
    Unsent,
)
from agentguard.x402._wire import (
    PAYMENT_REQUIRED,
    PaymentRequired,
    Requirement,
    _address,
    parse_payment_required,
)

__all__ = ["UPTO_CHARGE", "UPTO_SESSION", "X402Auth"]

log = get_logger("agentguard.x402")


@dataclass(frozen=True, slots=True)
class _Read:
    response: httpx.Response


@dataclass(frozen=True, slots=True)
class _Do:
    step: Step
    port: Port | None


@dataclass(frozen=True, slots=True)
class _Wait:
    """Wait for another request's session opening; the driver sends back whether it ended."""

    opening: Opening
    timeout: float | None


_Effect = httpx.Request | _Read | _Do | _Wait
_Flow = Generator[_Effect, Any, Any]


@dataclass(frozen=True, slots=True)
class _Lost:
    """A paid request that got no answer: its bytes and what settling them needs."""

    signed: Signed
    flight: InFlight


class _Unwind(BaseException):
    """Raised out of the flow when nothing of its payment was sent and it can no longer yield
    steps: httpx closed it after the paid retry was refused before sending, or the caller was
    cancelled or interrupted (``cause``) before the payment was sent. The driver runs
    ``release``, then raises ``cause``. A ``BaseException`` so no ``except Exception`` on the
    way hands it to the pipeline."""

    def __init__(
        self, release: Flow[Settled], cause: BaseException | None = None, port: Port | None = None
    ) -> None:
        self.release = release
        self.cause = cause
        self.port = port  # the run's, for its ``Abandon`` after ``Prepare``


class _RelayState:
    """Where one request's flow stands, for a relay. ``waiting``: the request the flow waits
    an answer to; ``history``: answers the transport gave the flow and httpx never saw;
    ``ended``: the transport ran the flow to its end; ``handed``: httpx handed the flow an
    answer (its history of this request has begun: the transport then sends nothing of the
    flow's); ``owner``: the one transport that may drive it (``_Relayed``), or None."""

    __slots__ = ("ended", "flow", "handed", "history", "owner", "waiting")

    def __init__(self, flow: _Flow, owner: object) -> None:
        self.flow = flow
        self.owner = owner
        self.waiting: httpx.Request | None = None
        self.ended = self.handed = False
        self.history: list[httpx.Response] = []


class _Relay(_RelayState):
    """Drives one request's flow to its next request: for httpx's auth flow, and for
    ``auth.client()``'s transport, which sends that request itself while the flow only reads
    answers (``_transport``)."""

    __slots__ = ("runner",)

    def __init__(self, flow: _Flow, runner: Runner, owner: object) -> None:
        super().__init__(flow, owner)
        self.runner = runner

    def advance(self, value: httpx.Response | None) -> httpx.Request | None:
        """Send ``value`` to the flow and perform its effects; its next request, or ``None``."""
        flow, runner = self.flow, self.runner
        sent: Any = value
        error: BaseException | None = None
        while True:
            try:
                effect = flow.throw(error) if error is not None else flow.send(sent)
            except StopIteration:
                self.waiting = None
                return None
            except _Unwind as unwind:  # cancelled or interrupted before sending
                try:
                    runner.drive(unwind.release, unwind.port)
                except Exception as exc:
                    _not_released(exc)
                cause: BaseException | None = unwind.cause or unwind
            else:
                cause = None
            if cause is not None:  # raised here, its context not the unwinding (nor the run)
                raise cause
            sent, error = None, None
            if isinstance(effect, httpx.Request):
                self.waiting = effect
                return effect
            try:
                if isinstance(effect, _Read):
                    sent = read_bounded(effect.response)
                elif isinstance(effect, _Wait):
                    sent = effect.opening.wait(effect.timeout)
                else:
                    sent = runner.execute(effect.step, effect.port)
            except BaseException as exc:  # handed back to the flow, which decides (it
                error = exc  # unwinds an unsent run cancelled or interrupted: ``_pipeline``)


class _AsyncRelay(_RelayState):
    """``_Relay`` for the async client."""

    __slots__ = ("runner",)

    def __init__(self, flow: _Flow, runner: AsyncRunner, owner: object) -> None:
        super().__init__(flow, owner)
        self.runner = runner

    async def advance(self, value: httpx.Response | None) -> httpx.Request | None:
        flow, runner = self.flow, self.runner
        sent: Any = value
        error: BaseException | None = None
        while True:
            try:
                effect = flow.throw(error) if error is not None else flow.send(sent)
            except StopIteration:
                self.waiting = None
                return None
            except _Unwind as unwind:  # runs while cancelled: local steps, never suspends
                try:
                    await runner.drive(unwind.release, unwind.port)
                except Exception as exc:
                    _not_released(exc)
                cause: BaseException | None = unwind.cause or unwind
            else:
                cause = None
            if cause is not None:
                raise cause
            sent, error = None, None
            if isinstance(effect, httpx.Request):
                self.waiting = effect
                return effect
            try:
                if isinstance(effect, _Read):
                    sent = await aread_bounded(effect.response)
                elif isinstance(effect, _Wait):
                    sent = await effect.opening.wait_async(effect.timeout)
                else:
                    sent = await runner.execute(effect.step, effect.port)
            except BaseException as exc:
                error = exc


def _fingerprint(request: httpx.Request) -> str:
    digest = hashlib.sha256(request.content).hexdigest()
    return f"{request.method} {request.url} {digest}"


class X402Auth(httpx.Auth):
    """Pays x402 ``402 Payment Required`` answers under a verified attestation.

    ``guard`` may be a ``Guard`` (works with both clients; async runs it in a thread) or an
    ``AsyncGuard`` (async client only). ``ledger`` is the agent's spend ledger; ``limits``
    the caps it enforces (checked before the network is asked). ``vault``: pay from this
    ``AgentVault`` (``exact`` only; the guard's policy client must be the vault); the ledger
    then counts under the vault unless ``agent`` says otherwise. ``audit`` records every
    decision and outcome. Use ``auth.client()`` / ``auth.async_client()`` to also turn a
    transport failure after paying into ``PaymentOutcomeUnknown``; a plain
    ``httpx.Client(auth=auth)`` is just as safe but raises httpx's own error there.
    ``approval_timeout``: seconds a payment the policy sends to a human may wait for the
    decision (the request waits with it); ``None`` refuses it at once (``ApprovalRequired``).
    """

    requires_request_body = True

    def __init__(
        self,
        *,
        signer: Signer,
        guard: Guard | AsyncGuard,
        ledger: Ledger,
        allowances: Allowances,
        limits: Limits | None = None,
        agent: str | None = None,
        vault: str | None = None,
        audit: AuditSink | None = None,
        clock: Callable[[], float] = time.time,
        approval_timeout: float | None = None,
    ) -> None:
        if not isinstance(guard, Guard | AsyncGuard):
            raise ConfigurationError("X402Auth needs an agentguard Guard or AsyncGuard")
        if not isinstance(allowances, Allowances):
            raise ConfigurationError("allowances must be an agentguard.x402.Allowances")
        self._vault = _address(vault) if vault is not None else None
        if vault is not None and self._vault is None:
            raise ConfigurationError(f"vault {vault!r} is not a 0x address")
        self._signer = signer
        self._guard = guard
        self._ledger = ledger
        self._allowances = allowances
        self._limits = limits or Limits()
        self._payer = self._vault or signer.address
        self._agent = agent or self._payer
        self._audit = audit
        self._clock = clock
        self._approval_timeout = approval_timeout
        self._runner = Runner(guard, ledger, audit) if isinstance(guard, Guard) else None
        self._async_runner = AsyncRunner(guard, ledger, audit)
        self._lock = threading.Lock()
        self._unanswered: dict[str, _Lost] = {}
        self._sessions = Sessions(self._record, clock)
        self._chosen: tuple[PaymentRequired, Requirement] | None = None

    def __repr__(self) -> str:
        return f"X402Auth(payer={self._payer}, sessions={len(self._sessions)})"

    # -- public -------------------------------------------------------------------------------

    @property
    def unanswered(self) -> tuple[str, ...]:
        """Reservation ids of payments that were sent and never answered (outcome unknown)."""
        with self._lock:
            return tuple(lost.flight.holds[0].id for lost in self._unanswered.values())

    @property
    def sessions(self) -> Mapping[str, tuple[str, int]]:
        """Open ``upto`` sessions: ``METHOD origin/path`` → (session id, charges reported)."""
        return self._sessions.snapshot()

    def client(self, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` using this auth, whose transport reports a lost paid request as
        ``PaymentOutcomeUnknown`` and sends a 402's paid retry itself (``_transport``)."""
        inner = kwargs.pop("transport", None) or httpx.HTTPTransport()
        transport = Transport(inner)
        client = httpx.Client(auth=_Relayed(self, transport), transport=transport, **kwargs)
        transport.client = client
        return client

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        inner = kwargs.pop("transport", None) or httpx.AsyncHTTPTransport()
        transport = AsyncTransport(inner)
        client = httpx.AsyncClient(auth=_Relayed(self, transport), transport=transport, **kwargs)
        transport.client = client
        return client

    def close(self) -> None:
        """End every ``upto`` session. Each signed maximum stays counted until the chain shows
        what was settled (``ledger.recover(agentguard.x402.resolver(w3))``)."""
        self._sessions.end_all("client closed")

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> X402Auth:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    async def __aenter__(self) -> X402Auth:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # -- drivers ------------------------------------------------------------------------------

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        return self._sync_flow(request, None)

    def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        return self._async_flow(request, None)

    def _sync_flow(
        self, request: httpx.Request, owner: Transport | None
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """The flow for httpx's auth machinery; with ``owner`` (``auth.client()``'s transport)
        that transport may also drive it (``_Relayed``)."""
        runner = self._runner
        if runner is None:
            raise ConfigurationError(
                "an AsyncGuard cannot authorize inside a blocking httpx.Client; pass a Guard"
            )
        relay = _Relay(self._flow(request, runner), runner, owner)
        if owner is not None:
            request.extensions[RELAY_EXTENSION] = relay
        try:
            sent = relay.advance(None)
            while sent is not None:
                response = yield sent
                if relay.ended:
                    break
                relay.handed = True  # httpx's history runs on: the rest is httpx's to send
                sent = relay.advance(response)
            if relay.history:  # the transport sent them: httpx's history lacks them
                response.history = [*relay.history, *response.history]
        finally:
            request.extensions.pop(RELAY_EXTENSION, None)  # (would hold the answers in a cycle)
            try:
                relay.flow.close()  # httpx closed us mid-request: the answer was lost
            except _Unwind as refused:  # ... or that it was never sent
                try:
                    runner.drive(refused.release)
                except Exception as exc:  # httpx raises the transport's error, not this
                    _not_released(exc)

    async def _async_flow(
        self, request: httpx.Request, owner: AsyncTransport | None
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        runner = self._async_runner
        relay = _AsyncRelay(self._flow(request, runner), runner, owner)
        if owner is not None:
            request.extensions[RELAY_EXTENSION] = relay
        try:
            sent = await relay.advance(None)
            while sent is not None:
                response = yield sent
                if relay.ended:
                    break
                relay.handed = True  # httpx's history runs on: the rest is httpx's to send
                sent = await relay.advance(response)
            if relay.history:
                response.history = [*relay.history, *response.history]
        finally:
            request.extensions.pop(RELAY_EXTENSION, None)
            try:
                relay.flow.close()
            except _Unwind as refused:
                try:
                    await runner.drive(refused.release)
                except Exception as exc:
                    _not_released(exc)

    # -- the flow -----------------------------------------------------------------------------

    def _flow(self, request: httpx.Request, runner: Runner | AsyncRunner) -> _Flow:
        lost = None
        if self._unanswered:  # only then is the request's fingerprint worth computing
            fingerprint = _fingerprint(request)
            with self._lock:
                lost = self._unanswered.pop(fingerprint, None)
        if lost is not None:
            log.info("re-sending an unanswered payment", reference=lost.signed.reference)
            outcome = yield from self._send_paid(request, lost.signed, lost.flight, resend=True)
            yield from self._pipeline(
                settle(lost.flight, lost.signed, outcome), None, request, runner, unsent=False
            )
            return
        session = self._sessions.live(request)
        for attempt in range(2):
            response = yield from self._send(request, session)
            if response is None:
                return
            yield _Read(response)
            required = parse_payment_required(
                response.headers.get(PAYMENT_REQUIRED), response.content
            )
            req = self._select(required)
            if req.scheme != "upto":
                yield from self._pay(request, required, req, runner)
                return
            # Racing requests would each sign and hold a session maximum: one pays, the
            # others wait for it and ride its session (at most once, then they pay).
            opening = yield from self._claim(request)
            try:
                session = self._sessions.live(request)
                if session is None or attempt:
                    yield from self._pay(request, required, req, runner)
                    return
            finally:
                self._sessions.release(opening)

    def _select(self, required: PaymentRequired) -> Requirement:
        """``select`` under this auth's allowances, remembered for the last answer chosen from:
        a v2 server's identical ``PAYMENT-REQUIRED`` parses to the same (cached, immutable)
        object, held here so its identity cannot pass to another. A refusal is not remembered."""
        chosen = self._chosen
        if chosen is not None and chosen[0] is required:
            return chosen[1]
        req = select(required, self._allowances, from_vault=self._vault is not None)
        self._chosen = (required, req)
        return req

    def _send(
        self, request: httpx.Request, session: Session | None
    ) -> Generator[_Effect, Any, httpx.Response | None]:
        """Send ``request`` (riding ``session`` if any); its 402, or ``None`` when answered."""
        if session is not None:
            sent = request.headers[UPTO_SESSION] = session.id
            request.extensions[SESSION_EXTENSION] = str(request.url)
        response: httpx.Response = yield request
        if session is None:
            return response if response.status_code == 402 else None
        if any(
            r.has_redirect_location
            for r in (*response.history, response)
            if r.request.headers.get(UPTO_SESSION) == sent
        ):
            # Followed a redirect: the session id (a bearer credential for the signed
            # maximum) may have gone to another host with it. Never use it again.
            self._sessions.end(session, "the request carrying the session was redirected")
            return None
        if response.status_code != 402:
            self._sessions.charge(session, response)
            return None
        self._sessions.end(session, "the server ended the session (402)")
        del request.headers[UPTO_SESSION]
        return response

    def _claim(self, request: httpx.Request) -> Generator[_Effect, Any, Opening]:
        """This endpoint's session-opening claim, waiting (within the request's pool timeout)
        while another request holds it."""
        timeout = request.extensions.get("timeout", {}).get("pool")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            opening, ours = self._sessions.claim(request)
            if ours:
                return opening
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not (yield _Wait(opening, left)):
                raise PaymentSessionBusy(
                    f"{opening.key}: another request was still opening its x402 upto session "
                    f"after {timeout}s"
                )

    def _pay(
        self,
        request: httpx.Request,
        required: PaymentRequired,
        req: Requirement,
        runner: Runner | AsyncRunner,
    ) -> _Flow:
        intent = PaymentIntent.from_fields(
            {
                "payer": self._payer,
                "scheme": req.scheme,
                "network": req.network,
                "asset": req.asset,
                "amount": req.amount,
                "pay_to": req.pay_to,
                "resource": req.resource,
                "x402_version": req.x402_version,
            }
        )
        port = PaymentPort(
            signer=self._signer,
            payer=self._payer,
            vault=self._vault,
            required=required,
            req=req,
            permit2_spenders=self._allowances.upto_spenders,
            clock=self._clock,
        )
        action = Action(
            agent=self._agent,
            intent=intent,
            limits=self._limits,
            rail="payment",
            approval_timeout=self._approval_timeout,
            audited=self._audit is not None,
        )
        yield from self._pipeline(guarded(action, owned=True), port, request, runner, unsent=True)

    def _pipeline(
        self,
        core: Flow[Settled],
        port: Port | None,
        request: httpx.Request,
        runner: Runner | AsyncRunner,
        *,
        unsent: bool,
    ) -> _Flow:
        """Run the pipeline's steps: the driver's ``runner`` performs each (at once if it
        never waits, ``runner.now``; else through the driver); ``Send`` is the paid retry.
        ``unsent``: ``core`` is a whole run, whose payment is unsent until its ``Send``."""
        value: Any = None
        error: Exception | None = None
        while True:
            try:
                step = core.throw(error) if error is not None else core.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            try:
                if isinstance(step, Send):
                    unsent = False
                    value = yield from self._send_paid(request, step.signed, step.flight)
                else:
                    value = runner.now(step, port)
                    if value is LATER:
                        value = yield _Do(step, port)
            except Exception as exc:
                error = exc
            except BaseException as exc:
                # Cancelled or interrupted: before ``Send`` nothing left the process, so the
                # run unwinds as for a failed step (holds released, the network told). A wait
                # for a person gives its hold back itself (the runner's ``AwaitApproval``).
                if not unsent or isinstance(step, AwaitApproval) or isinstance(exc, GeneratorExit):
                    raise
                why = f"interrupted ({type(exc).__name__}) before the payment was sent"
                raise _Unwind(_thrown(core, RequestNotSent(why)), exc, port) from None

    def _send_paid(
        self,
        request: httpx.Request,
        signed: Signed,
        flight: InFlight,
        *,
        resend: bool = False,
    ) -> Generator[_Effect, Any, Outcome]:
        payment: Payment = signed.payload
        url = request.url
        paid = Paid(payment, flight.holds[0].id, self._payer, str(url), resend, url)
        if UPTO_SESSION in request.headers:  # (``pop`` raises and catches a KeyError when absent)
            del request.headers[UPTO_SESSION]
        request.headers[payment.header] = payment.value
        request.extensions[PAYMENT_EXTENSION] = paid
        request.extensions.pop(NOT_SENT_EXTENSION, None)
        try:
            response: httpx.Response = yield request
        except GeneratorExit:
            unsent = request.extensions.pop(NOT_SENT_EXTENSION, None)
            if not isinstance(unsent, Unsent) or unsent.paid is not paid or resend:
                # No answer will come: remember these bytes for a re-send (method, URL and
                # body are as they came in: only headers were added).
                self._lost(_fingerprint(request), _Lost(signed, flight))
                raise
            # Never sent: nobody may present this payment later (the caller holds the
            # request through httpx's error), and its budget goes back.
            del request.headers[payment.header]
            del request.extensions[PAYMENT_EXTENSION]
            reason = f"the paid request was refused before sending ({unsent.reason})"
            refusal = RequestNotSent(f"{request.method} {request.url}: {reason}")
            raise _Unwind(settle(flight, signed, NeverLanded(reason, refusal))) from None
        if response.status_code == 402:
            yield _Read(response)
        result = outcome(request, response, paid)
        if isinstance(result, StillCounted) and isinstance(result.result, SessionOpened):
            self._sessions.open(request, paid, result.result.id, result.result.charge)
        return result

    def _lost(self, fingerprint: str, lost: _Lost) -> None:
        with self._lock:
            self._unanswered[fingerprint] = lost
        self._record(
            "outcome_unknown",
            {
                "rail": "payment",
                "task_id": lost.flight.verified.task_id,
                "reference": lost.signed.reference,
                "reason": "the paid request got no answer; the same request re-sends it",
            },
        )

    def _record(self, kind: str, record: Mapping[str, Any]) -> None:
        if self._audit is not None:
            self._audit.append(kind, record)


class _Relayed(httpx.Auth):
    """``auth.client()``'s auth: ``X402Auth``'s flow, which that client's own transport may
    drive (send the 402's paid retry itself). Only there does httpx's auth machinery hand the
    flow each answer unseen by anything else: ``X402Auth`` itself, called by an auth wrapping
    it (that may veto a 402) or by another client over the same transport (with its own event
    hooks, jar), is never relayed."""

    requires_request_body = True

    def __init__(self, auth: X402Auth, transport: Transport | AsyncTransport) -> None:
        self.auth = auth
        self._transport = transport

    def __repr__(self) -> str:
        return repr(self.auth)

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        transport = self._transport
        return self.auth._sync_flow(
            request, transport if isinstance(transport, Transport) else None
        )

    def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        transport = self._transport
        owner = transport if isinstance(transport, AsyncTransport) else None
        return self.auth._async_flow(request, owner)


def _thrown(core: Flow[Settled], exc: Exception) -> Flow[Settled]:
    """``core`` resumed with ``exc`` thrown in at the step it waits on, as if that step failed:
    its own unwinding, for a driver to run."""
    value: Any = None
    error: Exception | None = exc
    while True:
        try:
            step = core.throw(error) if error is not None else core.send(value)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        try:
            value, error = (yield step), None
        except Exception as failed:
            value, error = None, failed


def _not_released(exc: Exception) -> None:
    """The release of an unsent payment failed (ledger or audit down): the hold counts until
    it expires, never less."""
    if not isinstance(exc, RequestNotSent):  # the release's own end, not a failure
        log.info("unsent payment's hold not released", error=type(exc).__name__)
