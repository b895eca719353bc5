"""Transports for ``auth.client()``: a paid request that got no answer becomes
``PaymentOutcomeUnknown`` (httpx's own error says nothing about the payment it carried), and a
payment or an ``upto`` session id is never carried to another URL (httpx, following a
redirect, copies every header but ``Authorization`` into the request for the ``Location``).

A paid request refused before any byte of it was written is marked ``NOT_SENT_EXTENSION``
(``X402Auth`` then releases its budget): when the error says so (``RequestNotSent``, raised by
agentguard's own transports) or is httpx's ``ConnectError``/``ConnectTimeout`` whose last
httpcore event was the failed connect or TLS handshake; and in either case only if httpcore
reported no send for the request (a pool retry after an HTTP/2 GOAWAY, or a proxy tunnel's
CONNECT, may have written it first: that stays a lost answer).

The transport also sends the requests of ``X402Auth``'s flow that follow an answer it got (a
402's paid retry), instead of returning each answer to httpx's auth machinery (which would
run its per-request client work once more, as x402's own transport avoids): it does, for an
answer the flow read and httpx never saw, what httpx does with one (cookies, default
encoding, ``elapsed``, log line, history). It returns to httpx a redirect (httpx follows it
or not, then hands the flow the answer, as without this), the flow's last answer, and its
errors; with event hooks on the client, or a request it did not see the flow yield (a
redirect's), it leaves everything to httpx."""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from agentguard._exceptions import PaymentOutcomeUnknown, RequestNotSent
from agentguard.x402._answer import UPTO_SESSION, Paid, redirected

__all__ = [
    "NOT_SENT_EXTENSION",
    "PAYMENT_EXTENSION",
    "RELAY_EXTENSION",
    "SESSION_EXTENSION",
    "AsyncTransport",
    "Transport",
    "Unsent",
]

PAYMENT_EXTENSION = "agentguard.x402.payment"
"""Request extension carrying the ``Paid`` payment a request was sent with."""
SESSION_EXTENSION = "agentguard.x402.session_url"
"""Request extension: the URL an ``X-Upto-Session`` header was attached for."""
RELAY_EXTENSION = "agentguard.x402.relay"
"""Request extension: the ``X402Auth`` relay driving the request's flow."""
NOT_SENT_EXTENSION = "agentguard.x402.not_sent"
"""Request extension: an ``Unsent`` when the payment it names was refused before sending."""

_httpx_log = logging.getLogger("httpx")

_CONNECT_FAILED = (".connect_tcp.failed", ".connect_unix_socket.failed", ".start_tls.failed")


@dataclass(frozen=True, slots=True)
class Unsent:
    """``paid`` never left the process: ``reason`` is the transport's refusal."""

    paid: Paid
    reason: str


class _Relay(Protocol):
    owner: object
    waiting: httpx.Request | None
    ended: bool
    handed: bool
    history: list[httpx.Response]

    def advance(self, value: httpx.Response | None) -> httpx.Request | None: ...


class _AsyncRelay(Protocol):
    owner: object
    waiting: httpx.Request | None
    ended: bool
    handed: bool
    history: list[httpx.Response]

    async def advance(self, value: httpx.Response | None) -> httpx.Request | None: ...


class _Timed(httpx.SyncByteStream):
    """Sets ``elapsed`` on close, from this request's start (as httpx does)."""

    def __init__(self, response: httpx.Response, start: float) -> None:
        self._stream, self._response, self._start = response.stream, response, start

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream  # type: ignore[misc]

    def close(self) -> None:
        self._response.elapsed = datetime.timedelta(seconds=time.perf_counter() - self._start)
        self._stream.close()  # type: ignore[union-attr]


class _ATimed(httpx.AsyncByteStream):
    def __init__(self, response: httpx.Response, start: float) -> None:
        self._stream, self._response, self._start = response.stream, response, start

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:  # type: ignore[union-attr]
            yield chunk

    async def aclose(self) -> None:
        self._response.elapsed = datetime.timedelta(seconds=time.perf_counter() - self._start)
        await self._stream.aclose()  # type: ignore[union-attr]


def _received(client: httpx.Client | httpx.AsyncClient, response: httpx.Response) -> None:
    """What httpx does with an answer it receives (``_send_single_request``) before anything
    reads it, for one it may never see (again for one it does: the same cookies, the same
    encoding). A jar takes nothing from an answer without a cookie header: skipped."""
    headers = response.headers
    if "set-cookie" in headers or "set-cookie2" in headers:
        client.cookies.extract_cookies(response)
    response.default_encoding = client._default_encoding


def _logged(request: httpx.Request, response: httpx.Response) -> None:
    """httpx's log line for an answer it never sees (after the flow read it: httpx would log
    the flow's last answer a second time)."""
    _httpx_log.info(
        'HTTP Request: %s %s "%s %d %s"',
        request.method,
        request.url,
        response.http_version,
        response.status_code,
        response.reason_phrase,
    )


def _relay(request: httpx.Request, transport: Transport | AsyncTransport) -> Any:
    """The relay of the flow waiting on ``request``, when this transport may drive it (its
    own client's auth made it: ``_auth._Relayed``)."""
    relay = request.extensions.get(RELAY_EXTENSION)
    client = transport.client
    if relay is None or relay.owner is not transport or relay.waiting is not request:
        return None
    if relay.handed or client is None:
        return None
    hooks = client.event_hooks
    return None if hooks["request"] or hooks["response"] else relay


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
        self.client: httpx.Client | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        start = time.perf_counter()
        response = self._send(request)
        relay: _Relay | None = _relay(request, self)
        if relay is None:
            return response
        client = self.client
        assert client is not None
        while not response.has_redirect_location:
            response.request = request
            response.stream = _Timed(response, start)
            _received(client, response)
            try:
                sent = relay.advance(response)
            except BaseException:
                _logged(request, response)
                response.close()
                raise
            if sent is None:
                relay.ended = True
                return response
            _logged(request, response)  # then what httpx's auth machinery does with it:
            response.history = list(relay.history)
            response.read()
            relay.history.append(response)
            request, start = sent, time.perf_counter()
            response = self._send(request)
        return response

    def _send(self, request: httpx.Request) -> httpx.Response:
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
        self.client: httpx.AsyncClient | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        start = time.perf_counter()
        response = await self._send(request)
        relay: _AsyncRelay | None = _relay(request, self)
        if relay is None:
            return response
        client = self.client
        assert client is not None
        while not response.has_redirect_location:
            response.request = request
            response.stream = _ATimed(response, start)
            _received(client, response)
            try:
                sent = await relay.advance(response)
            except BaseException:
                _logged(request, response)
                await response.aclose()
                raise
            if sent is None:
                relay.ended = True
                return response
            _logged(request, response)
            response.history = list(relay.history)
            await response.aread()
            relay.history.append(response)
            request, start = sent, time.perf_counter()
            response = await self._send(request)
        return response

    async def _send(self, request: httpx.Request) -> httpx.Response:
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
