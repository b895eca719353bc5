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
body) sent again re-sends those exact bytes. A concurrent identical request whose payment is
merely in flight gets its own authorization and payment.
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
    PaymentOutcomeUnknown,
    PaymentRejected,
    PaymentRequiredError,
)
from agentguard._guard import AsyncGuard, Guard
from agentguard._intent import PaymentIntent
from agentguard._logging import get_logger
from agentguard._signer import Signer
from agentguard.ledger import Ledger, Limits
from agentguard.pipeline import (
    Action,
    AsyncRunner,
    AuditSink,
    Flow,
    InFlight,
    Landed,
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
from agentguard.x402._payment import Payment, PaymentPort
from agentguard.x402._receipt import RECEIPT_EXTENSION, Receipt
from agentguard.x402._select import Allowances, select
from agentguard.x402._wire import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    X_PAYMENT_RESPONSE,
    Settlement,
    _address,
    parse_amount,
    parse_payment_required,
    parse_settlement,
)

__all__ = ["UPTO_CHARGE", "UPTO_SESSION", "X402Auth"]

log = get_logger("agentguard.x402")

UPTO_SESSION = "X-Upto-Session"
"""Server → client on a paid ``upto`` answer, client → server on later requests: the session
that keeps charging one signed Permit2 maximum."""
UPTO_CHARGE = "X-Upto-Charge"
"""Server → client: what this request charged against the session (atomic units)."""
_PAYMENT_EXTENSION = "agentguard.x402.payment"
_SESSION_MARGIN = 5.0  # stop using a session this many seconds before its Permit2 deadline


@dataclass(frozen=True, slots=True)
class _Read:
    response: httpx.Response


@dataclass(frozen=True, slots=True)
class _Do:
    step: Step
    port: Port | None


_Effect = httpx.Request | _Read | _Do
_Flow = Generator[_Effect, Any, Any]


@dataclass(frozen=True, slots=True)
class _Lost:
    """A paid request that got no answer: its bytes and what settling them needs."""

    signed: Signed
    flight: InFlight

    @property
    def payment(self) -> Payment:
        payment: Payment = self.signed.payload
        return payment


@dataclass(slots=True)
class _Session:
    key: str
    id: str
    payment: Payment
    reservation_id: str
    used: int = 0
    known: bool = True  # every charge was reported


def _fingerprint(request: httpx.Request) -> str:
    digest = hashlib.sha256(request.content).hexdigest()
    return f"{request.method} {request.url} {digest}"


def _session_key(request: httpx.Request) -> str:
    url = request.url
    return f"{request.method} {url.scheme}://{url.netloc.decode('ascii')}{url.path}"


def _server_reason(response: httpx.Response, version: int) -> str:
    """The server's own words for a 402 after paying (v2 header ``error``, v1 body ``error``)."""
    header = response.headers.get(PAYMENT_REQUIRED)
    try:
        required = parse_payment_required(header, response.content)
    except PaymentRequiredError:
        return f"HTTP 402 (x402 v{version}) without a readable reason"
    return required.error or "HTTP 402 without a reason"


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
        self._runner = Runner(guard, ledger, audit) if isinstance(guard, Guard) else None
        self._async_runner = AsyncRunner(guard, ledger, audit)
        self._lock = threading.Lock()
        self._unanswered: dict[str, _Lost] = {}
        self._sessions: dict[str, _Session] = {}

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
        with self._lock:
            return {k: (s.id, s.used) for k, s in self._sessions.items()}

    def client(self, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` using this auth, whose transport reports a lost paid request as
        ``PaymentOutcomeUnknown``."""
        inner = kwargs.pop("transport", None) or httpx.HTTPTransport()
        return httpx.Client(auth=self, transport=_Transport(inner), **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        inner = kwargs.pop("transport", None) or httpx.AsyncHTTPTransport()
        return httpx.AsyncClient(auth=self, transport=_AsyncTransport(inner), **kwargs)

    def close(self) -> None:
        """End every ``upto`` session. Each signed maximum stays counted until the chain shows
        what was settled (``ledger.recover(agentguard.x402.resolver(w3))``)."""
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            self._end_session(session, "client closed")

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
        runner = self._runner
        if runner is None:
            raise ConfigurationError(
                "an AsyncGuard cannot authorize inside a blocking httpx.Client; pass a Guard"
            )
        flow = self._flow(request)
        try:
            value: Any = None
            error: Exception | None = None
            while True:
                try:
                    effect = flow.throw(error) if error is not None else flow.send(value)
                except StopIteration:
                    return
                value, error = None, None
                if isinstance(effect, httpx.Request):
                    value = yield effect
                    continue
                try:
                    if isinstance(effect, _Read):
                        value = effect.response.read()
                    else:
                        value = runner.execute(effect.step, effect.port)
                except Exception as exc:  # handed back to the flow, which decides
                    error = exc
        finally:
            flow.close()  # httpx closed us mid-request: the flow learns the answer was lost

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        runner = self._async_runner
        flow = self._flow(request)
        try:
            value: Any = None
            error: Exception | None = None
            while True:
                try:
                    effect = flow.throw(error) if error is not None else flow.send(value)
                except StopIteration:
                    return
                value, error = None, None
                if isinstance(effect, httpx.Request):
                    value = yield effect
                    continue
                try:
                    if isinstance(effect, _Read):
                        value = await effect.response.aread()
                    else:
                        value = await runner.execute(effect.step, effect.port)
                except Exception as exc:
                    error = exc
        finally:
            flow.close()

    # -- the flow -----------------------------------------------------------------------------

    def _flow(self, request: httpx.Request) -> _Flow:
        fingerprint = _fingerprint(request)
        with self._lock:
            lost = self._unanswered.pop(fingerprint, None)
        if lost is not None:
            log.info("re-sending an unanswered payment", reference=lost.signed.reference)
            outcome = yield from self._send_paid(request, lost.signed, lost.flight, fingerprint)
            yield from self._pipeline(
                settle(lost.flight, lost.signed, outcome), None, request, fingerprint
            )
            return
        session = self._live_session(request)
        if session is not None:
            request.headers[UPTO_SESSION] = session.id
        response: httpx.Response = yield request
        if response.status_code != 402:
            if session is not None:
                self._charge(session, response)
            return
        if session is not None:
            self._end_session(session, "the server ended the session (402)")
            del request.headers[UPTO_SESSION]
        yield _Read(response)
        required = parse_payment_required(response.headers.get(PAYMENT_REQUIRED), response.content)
        req = select(required, self._allowances, from_vault=self._vault is not None)
        intent = PaymentIntent(
            payer=self._payer,
            scheme=req.scheme,
            network=req.network,
            asset=req.asset,
            amount=req.amount,
            pay_to=req.pay_to,
            resource=req.resource,
            x402_version=req.x402_version,
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
        action = Action(agent=self._agent, intent=intent, limits=self._limits, rail="payment")
        yield from self._pipeline(guarded(action), port, request, fingerprint)

    def _pipeline(
        self, core: Flow[Settled], port: Port | None, request: httpx.Request, fingerprint: str
    ) -> _Flow:
        """Run the pipeline's steps through the driver; its ``Send`` is the paid retry."""
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
                    value = yield from self._send_paid(
                        request, step.signed, step.flight, fingerprint
                    )
                else:
                    value = yield _Do(step, port)
            except Exception as exc:
                error = exc

    def _send_paid(
        self, request: httpx.Request, signed: Signed, flight: InFlight, fingerprint: str
    ) -> Generator[_Effect, Any, Outcome]:
        payment: Payment = signed.payload
        request.headers.pop(UPTO_SESSION, None)
        request.headers[payment.header] = payment.value
        request.extensions[_PAYMENT_EXTENSION] = (payment, flight.holds[0].id)
        try:
            response: httpx.Response = yield request
        except GeneratorExit:  # no answer will come: remember these bytes for a re-send
            self._lost(fingerprint, _Lost(signed, flight))
            raise
        return (yield from self._outcome(request, response, payment, flight))

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

    def _outcome(
        self, request: httpx.Request, response: httpx.Response, payment: Payment, flight: InFlight
    ) -> Generator[_Effect, Any, Outcome]:
        req = payment.requirement
        reservation_id = flight.holds[0].id
        header = PAYMENT_RESPONSE if req.x402_version == 2 else X_PAYMENT_RESPONSE
        settlement = parse_settlement(response.headers.get(header))
        status = {"status": response.status_code}
        if settlement is not None and settlement.pending:
            self._attach(response, payment, reservation_id, settlement, amount=None)
            return StillCounted(
                "payment_pending", "settlement_pending", record=self._seen(settlement, status)
            )
        if response.status_code == 402:
            yield _Read(response)
            reason = (settlement.error_reason if settlement else None) or _server_reason(
                response, req.x402_version
            )
            return StillCounted(
                "payment_rejected",
                reason,
                error=PaymentRejected(
                    f"{request.method} {request.url} answered 402 to a signed payment of "
                    f"{req.amount} {req.asset} to {req.pay_to}",
                    reason=reason,
                    reference=payment.reference,
                    reservation_id=reservation_id,
                ),
            )
        if settlement is not None and not settlement.success:
            self._attach(response, payment, reservation_id, settlement, amount=None)
            return StillCounted(
                "payment_unsettled",
                settlement.error_reason or "the server reports a failed settlement",
                record=self._seen(settlement, status),
            )
        if settlement is None and not response.is_success:
            # The official servers settle only after a successful handler; with no receipt we
            # cannot tell, so the payment stays counted until reconciled.
            return StillCounted(
                "outcome_unknown", "paid request failed without a receipt", record=status
            )
        charge = _reported_charge(response, settlement)
        if req.scheme == "upto":
            session_id = response.headers.get(UPTO_SESSION)
            if session_id:
                self._open_session(request, payment, reservation_id, session_id, charge)
            self._attach(
                response, payment, reservation_id, settlement, amount=charge, session=session_id
            )
            return StillCounted(
                "payment_charged",
                "upto: the signed maximum counts until the chain shows what was settled",
                record={**self._seen(settlement, status), "charged": _text(charge)},
            )
        self._attach(response, payment, reservation_id, settlement, amount=req.amount)
        outcome = f"settled {settlement.transaction}" if settlement else "delivered, no receipt"
        return Landed(outcome, record=self._seen(settlement, status))

    @staticmethod
    def _seen(settlement: Settlement | None, extra: Mapping[str, Any]) -> dict[str, Any]:
        if settlement is None:
            return dict(extra)
        return {**extra, "transaction": settlement.transaction, "network": settlement.network}

    def _attach(
        self,
        response: httpx.Response,
        payment: Payment,
        reservation_id: str,
        settlement: Settlement | None,
        *,
        amount: int | None,
        session: str | None = None,
    ) -> None:
        req = payment.requirement
        response.extensions[RECEIPT_EXTENSION] = Receipt(
            scheme=req.scheme,
            network=settlement.network if settlement and settlement.network else req.network,
            asset=req.asset,
            pay_to=req.pay_to,
            payer=self._payer,
            amount=amount,
            transaction=settlement.transaction if settlement else "",
            pending=bool(settlement and settlement.pending),
            x402_version=req.x402_version,
            reservation_id=reservation_id,
            reference=payment.reference,
            payment_id=payment.payment_id,
            session=session[:256] if session else None,
            error_reason=settlement.error_reason if settlement else None,
        )

    def _record(self, kind: str, record: Mapping[str, Any]) -> None:
        if self._audit is not None:
            self._audit.append(kind, record)

    # -- upto sessions ------------------------------------------------------------------------

    def _open_session(
        self,
        request: httpx.Request,
        payment: Payment,
        reservation_id: str,
        session_id: str,
        charge: int | None,
    ) -> None:
        session = _Session(
            key=_session_key(request),
            id=session_id[:256],
            payment=payment,
            reservation_id=reservation_id,
        )
        self._count(session, charge)
        with self._lock:
            self._sessions[session.key] = session

    def _live_session(self, request: httpx.Request) -> _Session | None:
        key = _session_key(request)
        with self._lock:
            session = self._sessions.get(key)
        if session is None:
            return None
        if self._clock() >= session.payment.valid_until - _SESSION_MARGIN:
            self._end_session(session, "the session's Permit2 deadline passed")
            return None
        return session

    def _count(self, session: _Session, charge: int | None) -> None:
        maximum = session.payment.requirement.amount
        if charge is None:
            session.known = False
        elif session.used + charge > maximum:
            log.warning("x402 upto charges exceed the signed maximum", session=session.id)
            session.used = maximum
        else:
            session.used += charge

    def _charge(self, session: _Session, response: httpx.Response) -> None:
        version = session.payment.requirement.x402_version
        settlement = parse_settlement(
            response.headers.get(PAYMENT_RESPONSE if version == 2 else X_PAYMENT_RESPONSE)
        )
        charge = _reported_charge(response, settlement)
        with self._lock:
            self._count(session, charge)
            renewed = response.headers.get(UPTO_SESSION)
            if renewed:
                session.id = renewed[:256]
        self._attach(
            response,
            session.payment,
            session.reservation_id,
            settlement,
            amount=charge,
            session=session.id,
        )
        self._record(
            "payment_charged",
            {
                "rail": "payment",
                "reservation": session.reservation_id,
                "reference": session.payment.reference,
                "session": session.id,
                "charged": _text(charge),
            },
        )

    def _end_session(self, session: _Session, why: str) -> None:
        with self._lock:
            if self._sessions.get(session.key) is not session:
                return  # ended meanwhile by another request
            del self._sessions[session.key]
        self._record(
            "payment_session_closed",
            {
                "rail": "payment",
                "reservation": session.reservation_id,
                "reference": session.payment.reference,
                "session": session.id,
                "reported": _text(session.used if session.known else None),
                "why": why,
            },
        )


def _text(amount: int | None) -> str | None:
    return None if amount is None else str(amount)


def _reported_charge(response: httpx.Response, settlement: Settlement | None) -> int | None:
    header = response.headers.get(UPTO_CHARGE)
    if header is not None:
        return parse_amount(header.strip())
    return settlement.amount if settlement is not None else None


def _lost(request: httpx.Request, exc: Exception) -> Exception:
    carried = request.extensions.get(_PAYMENT_EXTENSION)
    if not isinstance(carried, tuple):
        return exc
    payment, reservation_id = carried
    req = payment.requirement
    return PaymentOutcomeUnknown(
        f"{request.method} {request.url} carried a signed payment of {req.amount} {req.asset} "
        f"to {req.pay_to} and got no answer ({type(exc).__name__})",
        reference=payment.reference,
        reservation_id=reservation_id,
        payment_id=payment.payment_id,
    )


class _Transport(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return self._inner.handle_request(request)
        except httpx.TransportError as exc:
            raise _lost(request, exc) from exc

    def close(self) -> None:
        self._inner.close()


class _AsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._inner.handle_async_request(request)
        except httpx.TransportError as exc:
            raise _lost(request, exc) from exc

    async def aclose(self) -> None:
        await self._inner.aclose()
