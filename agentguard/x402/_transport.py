"""Transports for ``auth.client()``: a paid request that got no answer becomes
``PaymentOutcomeUnknown`` (httpx's own error says nothing about the payment it carried), and a
payment or an ``upto`` session id is never carried to another URL (httpx, following a
redirect, copies every header but ``Authorization`` into the request for the ``Location``)."""

from __future__ import annotations

import httpx

from agentguard._exceptions import PaymentOutcomeUnknown
from agentguard.x402._answer import UPTO_SESSION, Paid, redirected

__all__ = ["PAYMENT_EXTENSION", "SESSION_EXTENSION", "AsyncTransport", "Transport"]

PAYMENT_EXTENSION = "agentguard.x402.payment"
"""Request extension carrying the ``Paid`` payment a request was sent with."""
SESSION_EXTENSION = "agentguard.x402.session_url"
"""Request extension: the URL an ``X-Upto-Session`` header was attached for."""


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


def _refuse_redirect(request: httpx.Request) -> None:
    """httpx builds a redirect's request from the original's headers and extensions: a
    session id is dropped from it, a payment refused."""
    if request.extensions.get(SESSION_EXTENSION, str(request.url)) != str(request.url):
        request.headers.pop(UPTO_SESSION, None)
    paid = request.extensions.get(PAYMENT_EXTENSION)
    if isinstance(paid, Paid) and str(request.url) != paid.url:
        raise redirected(request, paid, str(request.url))


class Transport(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        _refuse_redirect(request)
        try:
            return self._inner.handle_request(request)
        except httpx.TransportError as exc:
            raise _lost(request, exc) from exc

    def close(self) -> None:
        self._inner.close()


class AsyncTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        _refuse_redirect(request)
        try:
            return await self._inner.handle_async_request(request)
        except httpx.TransportError as exc:
            raise _lost(request, exc) from exc

    async def aclose(self) -> None:
        await self._inner.aclose()
