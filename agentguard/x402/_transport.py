"""Transports for ``auth.client()``: a paid request that got no answer becomes
``PaymentOutcomeUnknown`` (httpx's own error says nothing about the payment it carried), and a
payment or an ``upto`` session id is never carried to another URL (httpx, following a
redirect, copies every header but ``Authorization`` into the request for the ``Location``).

A paid request refused before any byte of it was written is marked ``NOT_SENT_EXTENSION``
(``X402Auth`` then releases its budget): when the error says so (``RequestNotSent``, raised by
agentguard's own transports) or is httpx's ``ConnectError``/``ConnectTimeout`` whose last
httpcore event was the failed connect or TLS handshake; and in either case only if httpcore
reported no send for the request (a pool retry after an HTTP/2 GOAWAY, or a proxy tunnel's
CONNECT, may have written it first: that stays a lost answer)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from agentguard._exceptions import PaymentOutcomeUnknown, RequestNotSent
from agentguard.x402._answer import UPTO_SESSION, Paid, redirected

__all__ = [
    "NOT_SENT_EXTENSION",
    "PAYMENT_EXTENSION",
    "SESSION_EXTENSION",
    "AsyncTransport",
    "Transport",
    "Unsent",
]

PAYMENT_EXTENSION = "agentguard.x402.payment"
"""Request extension carrying the ``Paid`` payment a request was sent with."""
SESSION_EXTENSION = "agentguard.x402.session_url"
"""Request extension: the URL an ``X-Upto-Session`` header was attached for."""
NOT_SENT_EXTENSION = "agentguard.x402.not_sent"
"""Request extension: an ``Unsent`` when the payment it names was refused before sending."""

_CONNECT_FAILED = (".connect_tcp.failed", ".connect_unix_socket.failed", ".start_tls.failed")


@dataclass(frozen=True, slots=True)
class Unsent:
    """``paid`` never left the process: ``reason`` is the transport's refusal."""

    paid: Paid
    reason: str


class _Events:
    """httpcore's trace of one request (``request.extensions["trace"]``), passed on to the
    caller's own trace callback if there was one."""

    def __init__(self, request: httpx.Request) -> None:
        self.names: list[str] = []
        self.outer: Any = request.extensions.get("trace")

    def record(self, name: str) -> None:
        self.names.append(name)

    def unsent(self, request: httpx.Request, exc: Exception) -> bool:
        """Mark ``request`` unsent if ``exc`` and the trace prove none of its payment was
        written; whether it was marked."""
        paid = request.extensions.get(PAYMENT_EXTENSION)
        if not isinstance(paid, Paid) or paid.resent or any(".send_" in n for n in self.names):
            return False
        connect_failed = bool(self.names) and self.names[-1].endswith(_CONNECT_FAILED)
        if not isinstance(exc, RequestNotSent) and not (
            isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout) and connect_failed
        ):
            return False
        request.extensions[NOT_SENT_EXTENSION] = Unsent(paid, type(exc).__name__)
        return True

    def restore(self, request: httpx.Request) -> None:
        if self.outer is None:
            request.extensions.pop("trace", None)
        else:
            request.extensions["trace"] = self.outer


def _traced(request: httpx.Request) -> _Events:
    events = _Events(request)
    outer: Callable[[str, Any], Any] | None = events.outer

    def trace(name: str, info: Any) -> Any:
        events.record(name)
        return None if outer is None else outer(name, info)

    request.extensions["trace"] = trace
    return events


def _atraced(request: httpx.Request) -> _Events:
    events = _Events(request)
    outer: Callable[[str, Any], Awaitable[Any]] | None = events.outer

    async def trace(name: str, info: Any) -> None:
        events.record(name)
        if outer is not None:
            await outer(name, info)

    request.extensions["trace"] = trace
    return events


def _lost(request: httpx.Request, exc: Exception) -> Exception:
    paid = request.extensions.get(PAYMENT_EXTENSION)
    if not isinstance(paid, Paid):
        return exc
    req, payment = paid.payment.requirement, paid.payment
    return PaymentOutcomeUnknown(
        f"{request.method} {request.url} carried a signed payment of {req.amount} {req.asset} "
        f"to {req.pay_to} and got no answer ({type(exc).__name__})",
        reference=payment.reference,
        reservation_id=paid.reservation_id,
        payment_id=payment.payment_id,
    )


def _refuse_redirect(request: httpx.Request) -> Paid | None:
    """httpx builds a redirect's request from the original's headers and extensions: a
    session id is dropped from it, a payment refused. Returns the payment the request carries."""
    session = request.extensions.get(SESSION_EXTENSION)
    paid = request.extensions.get(PAYMENT_EXTENSION)
    if session is None and paid is None:  # nothing to guard (most requests): no URL rendering
        return None
    url = request.url
    if session is not None and session != str(url):
        request.headers.pop(UPTO_SESSION, None)
    if isinstance(paid, Paid):
        if url is not paid.sent_url and str(url) != paid.url:  # the URL paid for, unrendered
            raise redirected(request, paid, str(url))
        return paid
    return None


class Transport(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if _refuse_redirect(request) is None:  # no payment: nothing to trace or report
            return self._inner.handle_request(request)
        events = _traced(request)
        try:
            return self._inner.handle_request(request)
        except httpx.TransportError as exc:
            if events.unsent(request, exc):
                raise  # the payment is released: httpx's own error, as for an unpaid request
            raise _lost(request, exc) from exc
        except RequestNotSent as exc:
            events.unsent(request, exc)
            raise
        finally:
            events.restore(request)

    def close(self) -> None:
        self._inner.close()


class AsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if _refuse_redirect(request) is None:  # no payment: nothing to trace or report
            return await self._inner.handle_async_request(request)
        events = _atraced(request)
        try:
            return await self._inner.handle_async_request(request)
        except httpx.TransportError as exc:
            if events.unsent(request, exc):
                raise  # the payment is released: httpx's own error, as for an unpaid request
            raise _lost(request, exc) from exc
        except RequestNotSent as exc:
            events.unsent(request, exc)
            raise
        finally:
            events.restore(request)

    async def aclose(self) -> None:
        await self._inner.aclose()
