"""``X402Auth``: an ``httpx.Auth`` that pays x402 answers, each only after authorization.

One pure state machine (``_flow``) decides everything; it yields *effects* (send a request,
read a body, authorize an intent, call the ledger or the authorizer) and two small drivers
run them, one blocking (``httpx.Client``) and one async (``httpx.AsyncClient``). So both
clients behave identically, like the gateway's sync and async clients.

Per request, at most one payment is signed, in this order::

    402 → parse → select → PaymentIntent → Guard.authorize → Ledger.reserve → sign
        → Ledger.mark_signed → retry once with the payment → commit | keep counted

A 402 after paying raises ``PaymentRejected``; nothing is signed again. If the paid retry gets
no answer at all (transport error, cancellation), the signed payment is remembered for that
exact request (method, URL, body): sending the same request again re-sends the identical
payment, never a new signature.

Vault mode (``vault=``): the payer is an ``AgentVault``; only ``exact`` is paid, with the
EIP-3009 nonce set to the attestation's task id (chosen after authorization, before the
authorization is built) and the vault's ERC-1271 blob as the signature, so the chain itself
refuses any payment the operators did not attest.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

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
from agentguard._verifier import VerifiedAttestation
from agentguard.ledger import Ledger, Limits, Reservation
from agentguard.x402._receipt import RECEIPT_EXTENSION, Receipt
from agentguard.x402._select import Allowances, select
from agentguard.x402._wire import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    PAYMENT_SIGNATURE,
    X_PAYMENT,
    X_PAYMENT_RESPONSE,
    PaymentRequired,
    Requirement,
    Settlement,
    _address,
    encode_header,
    parse_amount,
    parse_payment_required,
    parse_settlement,
)
from agentguard.x402.exact import client as exact_client
from agentguard.x402.upto import client as upto_client

__all__ = ["UPTO_CHARGE", "UPTO_SESSION", "X402Auth"]

log = get_logger("agentguard.x402")

UPTO_SESSION = "X-Upto-Session"
"""Server → client on a paid ``upto`` answer, client → server on later requests: the session
that keeps charging one signed Permit2 maximum."""
UPTO_CHARGE = "X-Upto-Charge"
"""Server → client: what this request charged against the session (atomic units)."""
PAYMENT_IDENTIFIER = "payment-identifier"
_PAYMENT_EXTENSION = "agentguard.x402.payment"
_SESSION_MARGIN = 5.0  # stop using a session this many seconds before its Permit2 deadline

_Effect = tuple[str, Any]
_Flow = Generator[_Effect, Any, Any]


@dataclass(frozen=True, slots=True)
class _Call:
    target: Literal["ledger", "authorizer"]
    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    best_effort: bool = False


@dataclass(slots=True)
class _Payment:
    """A payment that was signed and handed to the transport."""

    requirement: Requirement
    header: str
    value: str
    reservation_id: str
    reference: str
    task_id: str
    payment_id: str | None


@dataclass(slots=True)
class _Session:
    key: str
    id: str
    payment: _Payment
    deadline: float
    used: int = 0
    known: bool = True  # every charge was reported; otherwise the whole maximum counts


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
    the caps it enforces. ``vault``: pay from this ``AgentVault`` (``exact`` only; the
    guard's policy client must be the vault) instead of the signer's own address; the ledger
    then counts under the vault unless ``agent`` says otherwise. Use ``auth.client()`` /
    ``auth.async_client()`` to also turn a transport failure after paying into
    ``PaymentOutcomeUnknown``; a plain ``httpx.Client(auth=auth)`` is just as safe but raises
    httpx's own error there.
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
        self._clock = clock
        self._lock = threading.Lock()
        self._unanswered: dict[str, _Payment] = {}
        self._sessions: dict[str, _Session] = {}

    def __repr__(self) -> str:
        return f"X402Auth(payer={self._payer}, sessions={len(self._sessions)})"

    # -- public -------------------------------------------------------------------------------

    @property
    def unanswered(self) -> tuple[str, ...]:
        """Reservation ids of payments that were sent and never answered (outcome unknown)."""
        with self._lock:
            return tuple(p.reservation_id for p in self._unanswered.values())

    @property
    def sessions(self) -> Mapping[str, tuple[str, int]]:
        """Open ``upto`` sessions: ``METHOD origin/path`` → (session id, amount used so far)."""
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
        """End every ``upto`` session: commit what was charged, give the rest of the maximum
        back. Unanswered payments stay counted (their outcome is not known)."""
        if isinstance(self._guard, AsyncGuard) and self._sessions:
            raise ConfigurationError("this X402Auth uses an AsyncGuard: close it with aclose()")
        self._run_sync(self._end_all())

    async def aclose(self) -> None:
        await self._run_async(self._end_all())

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
        if not isinstance(self._guard, Guard):
            raise ConfigurationError(
                "an AsyncGuard cannot authorize inside a blocking httpx.Client; pass a Guard"
            )
        flow = self._flow(request)
        value: Any = None
        error: Exception | None = None
        while True:
            try:
                effect = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration:
                return
            value, error = None, None
            kind, arg = effect
            if kind == "send":
                value = yield arg
                continue
            try:
                value = self._effect_sync(kind, arg)
            except Exception as exc:  # handed back to the flow, which decides
                error = exc

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        flow = self._flow(request)
        value: Any = None
        error: Exception | None = None
        while True:
            try:
                effect = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration:
                return
            value, error = None, None
            kind, arg = effect
            if kind == "send":
                value = yield arg
                continue
            try:
                value = await self._effect_async(kind, arg)
            except Exception as exc:
                error = exc

    def _run_sync(self, flow: _Flow) -> Any:
        value: Any = None
        error: Exception | None = None
        while True:
            try:
                kind, arg = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            try:
                value = self._effect_sync(kind, arg)
            except Exception as exc:
                error = exc

    async def _run_async(self, flow: _Flow) -> Any:
        value: Any = None
        error: Exception | None = None
        while True:
            try:
                kind, arg = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            try:
                value = await self._effect_async(kind, arg)
            except Exception as exc:
                error = exc

    def _effect_sync(self, kind: str, arg: Any) -> Any:
        if kind == "read":
            return arg.read()
        if kind == "authorize":
            if not isinstance(self._guard, Guard):
                raise ConfigurationError(
                    "an AsyncGuard authorizes only for httpx.AsyncClient; use a Guard with "
                    "httpx.Client (or auth.async_client())"
                )
            return self._guard.authorize(arg)
        call: _Call = arg
        target = self._ledger if call.target == "ledger" else self._guard.authorizer
        try:
            return getattr(target, call.method)(*call.args, **call.kwargs)
        except Exception as exc:
            if not call.best_effort:
                raise
            log.warning("x402 bookkeeping call failed", call=call.method, error=repr(exc))
            return None

    async def _effect_async(self, kind: str, arg: Any) -> Any:
        if kind == "read":
            return await arg.aread()
        if kind == "authorize":
            if isinstance(self._guard, AsyncGuard):
                return await self._guard.authorize(arg)
            return await asyncio.to_thread(self._guard.authorize, arg)
        call: _Call = arg
        try:
            if call.target == "authorizer" and isinstance(self._guard, AsyncGuard):
                return await getattr(self._guard.authorizer, call.method)(*call.args, **call.kwargs)
            if call.target == "ledger":
                # Sub-millisecond local SQLite writes: a thread hop would cost more than the call.
                return getattr(self._ledger, call.method)(*call.args, **call.kwargs)
            method = getattr(self._guard.authorizer, call.method)
            return await asyncio.to_thread(method, *call.args, **call.kwargs)
        except Exception as exc:
            if not call.best_effort:
                raise
            log.warning("x402 bookkeeping call failed", call=call.method, error=repr(exc))
            return None

    # -- the state machine --------------------------------------------------------------------

    def _flow(self, request: httpx.Request) -> _Flow:
        fingerprint = _fingerprint(request)
        with self._lock:
            unanswered = self._unanswered.get(fingerprint)
        if unanswered is not None:
            log.info("re-sending an unanswered payment", reservation=unanswered.reservation_id)
            yield from self._send_paid(request, unanswered, fingerprint)
            return
        session = yield from self._live_session(request)
        if session is not None:
            request.headers[UPTO_SESSION] = session.id
        response: httpx.Response = yield ("send", request)
        if response.status_code != 402:
            if session is not None:
                self._charge(session, response)
            return
        if session is not None:
            yield from self._end_session(session, "the server ended the session (402)")
            del request.headers[UPTO_SESSION]
        yield ("read", response)
        required = parse_payment_required(response.headers.get(PAYMENT_REQUIRED), response.content)
        requirement = select(required, self._allowances, from_vault=self._vault is not None)
        payment = yield from self._pay(required, requirement)
        yield from self._send_paid(request, payment, fingerprint)

    def _pay(self, required: PaymentRequired, req: Requirement) -> _Flow:
        """Authorize, reserve, sign, mark signed: the only place a payment is signed."""
        payer = self._payer
        intent = PaymentIntent(
            payer=payer,
            scheme=req.scheme,
            network=req.network,
            asset=req.asset,
            amount=req.amount,
            pay_to=req.pay_to,
            resource=req.resource,
            x402_version=req.x402_version,
        )
        verified: VerifiedAttestation = yield ("authorize", intent)
        task_id = verified.task_id
        try:
            reservation: Reservation = yield (
                "call",
                _Call(
                    "ledger",
                    "reserve",
                    (self._agent, intent.spend),
                    {"key": task_id, "expires_at": verified.expires_at, "limits": self._limits},
                ),
            )
        except Exception:
            yield ("call", _Call("authorizer", "release", (task_id,), best_effort=True))
            raise
        try:
            now = int(self._clock())
            # The Signer refuses an authorization that outlives its attestation.
            req = replace(
                req, max_timeout_seconds=min(req.max_timeout_seconds, verified.expires_at - now)
            )
            if self._vault is not None:  # select() offered only ``exact``
                nonce = bytes.fromhex(task_id.removeprefix("0x"))
                typed = exact_client.typed_data(req, payer, now=now, nonce=nonce)
                reference = exact_client.reference(typed)
                blob = self._signer.sign_vault_payment(verified, typed, vault=self._vault)
                inner = exact_client.payload(typed, blob)
            elif req.scheme == "exact":
                typed = exact_client.typed_data(req, payer, now=now)
                reference = exact_client.reference(typed)
                inner = exact_client.payload(typed, self._signer.sign_payment(verified, typed))
            else:
                typed = upto_client.typed_data(req, payer, now=now)
                reference = upto_client.reference(typed, payer)
                signature = self._signer.sign_payment(
                    verified, typed, permit2_spenders=self._allowances.upto_spenders
                )
                inner = upto_client.payload(typed, signature, payer)
            payment_id = self._payment_id(required)
            # Recorded before the signature leaves the process; refused if the attestation
            # (and so the reservation) expired meanwhile, and then nothing is sent.
            yield ("call", _Call("ledger", "mark_signed", (reservation.id, reference)))
        except Exception as exc:
            yield (
                "call",
                _Call(
                    "ledger",
                    "release",
                    (reservation.id, f"not sent: {exc!r:.200}"),
                    best_effort=True,
                ),
            )
            yield ("call", _Call("authorizer", "release", (task_id,), best_effort=True))
            raise
        if req.x402_version == 2:
            document: dict[str, Any] = {"x402Version": 2}
            if required.resource is not None:
                document["resource"] = dict(required.resource)
            document["accepted"] = dict(req.raw)
            document["payload"] = inner
            if payment_id is not None:
                document["extensions"] = {
                    PAYMENT_IDENTIFIER: _identifier(required.extensions, payment_id)
                }
            header = PAYMENT_SIGNATURE
        else:
            document = {
                "x402Version": 1,
                "scheme": req.scheme,
                "network": req.network,
                "payload": inner,
            }
            header = X_PAYMENT
        log.info(
            "x402 payment signed",
            scheme=req.scheme,
            network=req.network,
            amount=req.amount,
            pay_to=req.pay_to,
            task_id=task_id,
            reservation=reservation.id,
        )
        return _Payment(
            requirement=req,
            header=header,
            value=encode_header(document),
            reservation_id=reservation.id,
            reference=reference,
            task_id=task_id,
            payment_id=payment_id,
        )

    @staticmethod
    def _payment_id(required: PaymentRequired) -> str | None:
        if required.x402_version == 2 and isinstance(
            required.extensions.get(PAYMENT_IDENTIFIER), dict
        ):
            return f"pay_{uuid.uuid4().hex}"
        return None

    def _send_paid(self, request: httpx.Request, payment: _Payment, fingerprint: str) -> _Flow:
        request.headers.pop(UPTO_SESSION, None)
        request.headers[payment.header] = payment.value
        request.extensions[_PAYMENT_EXTENSION] = payment
        with self._lock:
            self._unanswered[fingerprint] = payment
        response: httpx.Response = yield ("send", request)
        with self._lock:
            self._unanswered.pop(fingerprint, None)
        yield from self._settle(request, response, payment)

    def _settle(self, request: httpx.Request, response: httpx.Response, payment: _Payment) -> _Flow:
        req = payment.requirement
        header = PAYMENT_RESPONSE if req.x402_version == 2 else X_PAYMENT_RESPONSE
        settlement = parse_settlement(response.headers.get(header))
        if settlement is not None and settlement.pending:
            log.warning("x402 settlement pending", reservation=payment.reservation_id)
            self._attach(response, payment, settlement, amount=None)
            return
        if response.status_code == 402:
            yield ("read", response)
            reason = (settlement.error_reason if settlement else None) or _server_reason(
                response, req.x402_version
            )
            raise PaymentRejected(
                f"{request.method} {request.url} answered 402 to a signed payment of "
                f"{req.amount} {req.asset} to {req.pay_to}",
                reason=reason,
                reference=payment.reference,
                reservation_id=payment.reservation_id,
            )
        if settlement is not None and not settlement.success:
            log.warning(
                "x402 server reports a failed settlement but answered",
                status=response.status_code,
                reason=settlement.error_reason,
            )
            self._attach(response, payment, settlement, amount=None)
            return
        if settlement is None and not response.is_success:
            # The official servers settle only after a successful handler; with no receipt we
            # cannot tell, so the payment stays counted until reconciled.
            log.warning("x402 paid request failed without a receipt", status=response.status_code)
            return
        charge = self._reported_charge(response, settlement)
        session_id = response.headers.get(UPTO_SESSION)
        if req.scheme == "upto" and session_id:
            self._open_session(request, response, payment, session_id, charge, settlement)
            return
        amount = None if req.scheme == "exact" or charge is None else min(charge, req.amount)
        outcome = f"settled {settlement.transaction}" if settlement else "delivered, no receipt"
        yield ("call", _Call("ledger", "commit", (payment.reservation_id, outcome, amount)))
        yield ("call", _Call("authorizer", "commit", (payment.task_id, outcome), best_effort=True))
        self._attach(response, payment, settlement, amount=req.amount if amount is None else amount)

    @staticmethod
    def _reported_charge(response: httpx.Response, settlement: Settlement | None) -> int | None:
        header = response.headers.get(UPTO_CHARGE)
        if header is not None:
            return parse_amount(header.strip())
        return settlement.amount if settlement is not None else None

    def _attach(
        self,
        response: httpx.Response,
        payment: _Payment,
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
            reservation_id=payment.reservation_id,
            reference=payment.reference,
            payment_id=payment.payment_id,
            session=session,
            error_reason=settlement.error_reason if settlement else None,
        )

    # -- upto sessions ------------------------------------------------------------------------

    def _open_session(
        self,
        request: httpx.Request,
        response: httpx.Response,
        payment: _Payment,
        session_id: str,
        charge: int | None,
        settlement: Settlement | None,
    ) -> None:
        req = payment.requirement
        session = _Session(
            key=_session_key(request),
            id=session_id[:256],
            payment=payment,
            deadline=self._clock() + req.max_timeout_seconds,
        )
        self._count(session, charge)
        with self._lock:
            self._sessions[session.key] = session
        self._attach(response, payment, settlement, amount=charge, session=session.id)

    def _live_session(self, request: httpx.Request) -> _Flow:
        key = _session_key(request)
        with self._lock:
            session = self._sessions.get(key)
        if session is None:
            return None
        if self._clock() >= session.deadline - _SESSION_MARGIN:
            yield from self._end_session(session, "the session's Permit2 deadline passed")
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
        charge = self._reported_charge(response, settlement)
        with self._lock:
            self._count(session, charge)
            renewed = response.headers.get(UPTO_SESSION)
            if renewed:
                session.id = renewed[:256]
        self._attach(response, session.payment, settlement, amount=charge, session=session.id)

    def _end_session(self, session: _Session, why: str) -> _Flow:
        with self._lock:
            if self._sessions.get(session.key) is not session:
                return  # ended meanwhile by another request
            del self._sessions[session.key]
        amount = session.used if session.known else None
        outcome = f"upto session {session.id} ended ({why}); charged {amount}"
        payment = session.payment
        yield ("call", _Call("ledger", "commit", (payment.reservation_id, outcome, amount)))
        yield ("call", _Call("authorizer", "commit", (payment.task_id, outcome), best_effort=True))

    def _end_all(self) -> _Flow:
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            yield from self._end_session(session, "client closed")


def _identifier(extensions: Mapping[str, Any], payment_id: str) -> dict[str, Any]:
    """The server's ``payment-identifier`` declaration with our id added under ``info``."""
    declared = dict(extensions.get(PAYMENT_IDENTIFIER) or {})
    info = declared.get("info")
    declared["info"] = {**(info if isinstance(info, dict) else {}), "id": payment_id}
    return declared


def _lost(request: httpx.Request, exc: Exception) -> Exception:
    payment = request.extensions.get(_PAYMENT_EXTENSION)
    if not isinstance(payment, _Payment):
        return exc
    req = payment.requirement
    return PaymentOutcomeUnknown(
        f"{request.method} {request.url} carried a signed payment of {req.amount} {req.asset} "
        f"to {req.pay_to} and got no answer ({type(exc).__name__})",
        reference=payment.reference,
        reservation_id=payment.reservation_id,
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
