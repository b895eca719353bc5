"""TLS to an OpenGradient enclave, pinned to the certificate its registry entry holds.

The registry binds each enclave's TLS certificate to its attested build, so the connection is
trusted when, and only when, the server presents exactly that certificate (byte for byte):
no CA, no hostname, no certificate the pinned one might have issued (trusting the registered
certificate as a CA, as ``ssl`` ``cadata`` does, would accept any certificate signed with its
key). The TLS handshake itself proves the server holds that certificate's private key.

The check runs inside the connection, right after the handshake and before any request byte
is written, so a payment header never reaches an impostor. The certificates come from a
``TeeRegistry`` at each request (re-read when its cache is older than its refresh interval);
when an endpoint's registered certificates change, connections opened under the old ones are
not reused.
"""

from __future__ import annotations

import ssl
import threading
import typing
from collections.abc import Callable, Iterable

import anyio
import anyio.to_thread
import httpcore
import httpx

from agentguard import EndpointNotActive, TeeNotActive, TlsPinMismatch
from agentguard_opengradient._tee_registry import TeeRegistry, origin

__all__ = ["AsyncPinnedTransport", "PinnedTransport", "pinned_ssl_context"]

_Pins = Callable[[str, int], frozenset[bytes]]
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx defaults


def pinned_ssl_context() -> ssl.SSLContext:
    """The client context pinned connections use: TLS 1.2+, no CA or hostname check (the
    exact-certificate check after the handshake replaces both)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _peer_certificate(stream: httpcore.NetworkStream | httpcore.AsyncNetworkStream) -> bytes:
    sock = stream.get_extra_info("socket")
    if isinstance(sock, ssl.SSLSocket):
        return sock.getpeercert(binary_form=True) or b""
    ssl_object = stream.get_extra_info("ssl_object")
    if isinstance(ssl_object, ssl.SSLObject):
        return ssl_object.getpeercert(binary_form=True) or b""
    return b""


def _mismatch(host: str, port: int) -> TlsPinMismatch:
    return TlsPinMismatch(
        f"{host}:{port} presented a TLS certificate that OpenGradient's TEE registry does not "
        "hold for it; the connection was closed before anything was sent"
    )


class _PinnedStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, host: str, port: int, pins: _Pins) -> None:
        self._inner, self._host, self._port, self._pins = inner, host, port, pins

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._inner.start_tls(ssl_context, server_hostname, timeout)
        if _peer_certificate(tls) not in self._pins(self._host, self._port):
            tls.close()
            raise _mismatch(self._host, self._port)
        return tls


class _PinnedBackend(httpcore.NetworkBackend):
    def __init__(self, pins: _Pins) -> None:
        self._inner, self._pins = httpcore.SyncBackend(), pins

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _PinnedStream(inner, host.lower(), port, self._pins)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _AsyncPinnedStream(httpcore.AsyncNetworkStream):
    def __init__(
        self, inner: httpcore.AsyncNetworkStream, host: str, port: int, pins: _Pins
    ) -> None:
        self._inner, self._host, self._port, self._pins = inner, host, port, pins

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        tls = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        if _peer_certificate(tls) not in self._pins(self._host, self._port):
            await tls.aclose()
            raise _mismatch(self._host, self._port)
        return tls


class _AsyncPinnedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, pins: _Pins) -> None:
        self._inner, self._pins = httpcore.AnyIOBackend(), pins

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        inner = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _AsyncPinnedStream(inner, host.lower(), port, self._pins)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _refused(exc: TeeNotActive) -> EndpointNotActive:
    """The registry's refusal of an endpoint, raised before connecting: marked unsent."""
    return EndpointNotActive(exc.message)


class _Pinboard:
    """The certificates each origin may present, as last read from the registry; a change
    for an origin starts a new connection pool (connections under old pins are not reused)."""

    def __init__(self) -> None:
        self._pins: dict[tuple[str, int], frozenset[bytes]] = {}
        self._lock = threading.Lock()

    def update(self, where: tuple[str, int], pins: frozenset[bytes]) -> bool:
        """Record ``pins`` for ``where``; True when they replaced different ones."""
        with self._lock:
            previous = self._pins.get(where)
            self._pins[where] = pins
            return previous is not None and previous != pins

    def __call__(self, host: str, port: int) -> frozenset[bytes]:
        with self._lock:
            return self._pins.get((host, port), frozenset())


class PinnedTransport(httpx.HTTPTransport):
    """An ``httpx`` transport that talks only to registered TEE endpoints, over TLS pinned to
    the registry's certificate. A request to an endpoint no active TEE is registered at is
    ``TeeNotActive`` (``EndpointNotActive``); a server with another certificate is
    ``TlsPinMismatch``; in both cases nothing was sent, and both say so (``RequestNotSent``).
    Use it with ``trust_env=False`` (an environment proxy would bypass it).
    """

    def __init__(
        self, registry: TeeRegistry, *, limits: httpx.Limits = _LIMITS, retries: int = 0
    ) -> None:
        super().__init__(verify=pinned_ssl_context(), limits=limits, retries=retries)
        self._registry, self._limits, self._retries = registry, limits, retries
        self._board = _Pinboard()
        self._lock = threading.Lock()
        self._retired: list[httpcore.ConnectionPool] = []
        self._pool = self._new_pool()

    def _new_pool(self) -> httpcore.ConnectionPool:
        return httpcore.ConnectionPool(
            ssl_context=pinned_ssl_context(),
            max_connections=self._limits.max_connections,
            max_keepalive_connections=self._limits.max_keepalive_connections,
            keepalive_expiry=self._limits.keepalive_expiry,
            retries=self._retries,
            network_backend=_PinnedBackend(self._board),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        where = origin(request.url)
        with self._lock:  # read and record in one step: a slower reader cannot restore old pins
            try:
                pins = self._registry.pins(request.url)
            except TeeNotActive as exc:
                raise _refused(exc) from None
            if self._board.update(where, pins):
                self._retired.append(self._pool)
                self._pool = self._new_pool()
        return super().handle_request(request)

    @property
    def registry(self) -> TeeRegistry:
        """The registry whose endpoints and certificates this transport admits."""
        return self._registry

    def close(self) -> None:
        for pool in self._retired:
            pool.close()
        super().close()


class AsyncPinnedTransport(httpx.AsyncHTTPTransport):
    """The async twin of ``PinnedTransport`` (registry reads run in a worker thread)."""

    def __init__(
        self, registry: TeeRegistry, *, limits: httpx.Limits = _LIMITS, retries: int = 0
    ) -> None:
        super().__init__(verify=pinned_ssl_context(), limits=limits, retries=retries)
        self._registry, self._limits, self._retries = registry, limits, retries
        self._board = _Pinboard()
        self._lock = anyio.Lock()
        self._retired: list[httpcore.AsyncConnectionPool] = []
        self._pool = self._new_pool()

    def _new_pool(self) -> httpcore.AsyncConnectionPool:
        return httpcore.AsyncConnectionPool(
            ssl_context=pinned_ssl_context(),
            max_connections=self._limits.max_connections,
            max_keepalive_connections=self._limits.max_keepalive_connections,
            keepalive_expiry=self._limits.keepalive_expiry,
            retries=self._retries,
            network_backend=_AsyncPinnedBackend(self._board),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        where = origin(request.url)
        async with self._lock:  # read and record in one step (see PinnedTransport)
            try:
                pins = await anyio.to_thread.run_sync(self._registry.pins, request.url)
            except TeeNotActive as exc:
                raise _refused(exc) from None
            if self._board.update(where, pins):
                self._retired.append(self._pool)
                self._pool = self._new_pool()
        return await super().handle_async_request(request)

    @property
    def registry(self) -> TeeRegistry:
        return self._registry

    async def aclose(self) -> None:
        for pool in self._retired:
            await pool.aclose()
        await super().aclose()
