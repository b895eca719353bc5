"""The spend ledger: one budget for every transfer, call and x402 payment an agent makes.

The guarded pipeline (``agentguard.pipeline``) drives each spend through four calls::

    r = ledger.reserve(agent, intent.spend, key=local_key, expires_at=now + hold, limits=...)
    ledger.bind(r.id, task_id=attestation.task_id, expires_at=attestation_expiry)
    ledger.mark_signed(r.id, reference=tx_hash_or_payment_nonce)   # BEFORE the signature leaves
    ledger.commit(r.id, outcome) or ledger.release(r.id, reason)

The reservation comes first, before the authorization network is asked, so an action the
local caps refuse never uses up the network's budget; a deny releases it.

A reservation that expires without being marked signed is given back (by ``recover`` or by the
next ``reserve``): safe, because ``mark_signed`` refuses an expired reservation, so nothing was
ever signed on it. Once marked signed it keeps counting until it is committed or released, or
until ``recover``'s resolver (which looks the reference up onchain or at the facilitator) says
what happened. So a crash at any point can make the budget too strict, never too loose.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from agentguard._exceptions import ConfigurationError, IntentError, ReservationError
from agentguard._intent import Spend
from agentguard.ledger._backend import LedgerBackend, ReserveRequest, Usage
from agentguard.ledger._limits import Limits
from agentguard.ledger._memory import MemoryBackend
from agentguard.ledger._reservation import Reservation
from agentguard.ledger._sqlite import SQLiteBackend
from agentguard.ledger._transitions import RECOVERED

__all__ = ["AsyncLedger", "Ledger", "RecoveryReport", "Resolver", "Spent", "Verdict"]


@dataclass(frozen=True, slots=True)
class Spent:
    """A resolver's proof, read from the chain, that exactly ``amount`` moved (an ``upto``
    payment settled below its signed maximum): the reservation commits that amount."""

    amount: int


Verdict = Literal["committed", "released", "unknown"] | Spent
Resolver = Callable[[Reservation], Verdict]
"""Says what became of a signed reservation: ``committed`` (it landed, in full), ``Spent(n)``
(it landed and moved exactly ``n``, proven onchain), ``released`` (it can provably never land,
e.g. its nonce was used by another transaction), or ``unknown``."""
AsyncResolver = Callable[[Reservation], Awaitable[Verdict]]

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What ``recover`` did; ``unknown`` reservations still count against the budget."""

    expired: tuple[Reservation, ...] = ()
    committed: tuple[Reservation, ...] = ()
    released: tuple[Reservation, ...] = ()
    unknown: tuple[Reservation, ...] = ()


def _text(value: object, what: str, limit: int = 256) -> str:
    if type(value) is str and 0 < len(value) <= limit and value.isascii():
        return value  # the common case, which every check below lets through unchanged
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ReservationError(f"{what} must be a non-empty string of at most {limit} characters")
    if type(value) is not str:  # a subclass could hash or compare unlike the text it holds
        value = str.__str__(value)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: valid in Python, not storable anywhere
            raise ReservationError(f"{what} is not valid Unicode text (a lone surrogate)") from None
    return value


class Ledger:
    """Reserve before signing, commit or release after. Thread- and process-safe on one file.

    ``Ledger("spend.db")`` keeps the budget in a SQLite file that survives restarts and is shared
    by every process opening it; ``Ledger()`` keeps it in memory for this process only
    (``MemoryBackend``: the SQLite backend's rules on Python objects).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = ":memory:",
        *,
        backend: LedgerBackend | None = None,
        clock: Callable[[], float] = time.time,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    ) -> None:
        if backend is not None and os.fspath(path) != ":memory:":
            raise ConfigurationError("pass either a database path or a backend, not both")
        if backend is None and os.fspath(path) == ":memory:":
            if synchronous not in ("NORMAL", "FULL"):  # as SQLiteBackend would refuse it
                raise ConfigurationError(
                    f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}"
                )
            # Private to this process either way: the same rules without SQLite's machinery.
            backend = MemoryBackend()
        self._backend = backend or SQLiteBackend(path, synchronous=synchronous)
        self._clock = clock

    def now(self) -> float:
        """The ledger's clock (what reservation expiries are compared with)."""
        return self._clock()

    def reserve(
        self,
        agent: str,
        spend: Spend,
        *,
        key: str,
        expires_at: float,
        limits: Limits,
        action: bool = True,
    ) -> Reservation:
        """Hold ``spend`` against every cap in ``limits`` or raise ``BudgetExceeded``.

        Idempotent per ``key``: asking again returns the first reservation, whatever its state,
        and never counts twice. ``action=False`` holds a cost of another action (its network
        fee): counted by amount, not by the rate caps.
        """
        if not isinstance(limits, Limits):
            raise ConfigurationError("limits must be an agentguard.ledger.Limits")
        if not isinstance(spend, Spend):
            raise IntentError("spend must be an agentguard Spend (intent.spend)")
        amount = spend.amount
        if type(amount) is not int or not 0 <= amount < 1 << 256:  # not bool, nor a subclass
            raise IntentError(f"spend amount must be a uint256 in atomic units, got {amount!r}")
        agent = _text(agent, "agent")
        now = self._clock()
        if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
            raise ReservationError("expires_at must be a unix timestamp in seconds")
        if not math.isfinite(expires_at) or expires_at <= now:
            raise ReservationError(
                f"expires_at {expires_at} is not in the future; authorize the action again"
            )
        request = ReserveRequest(
            key=_text(key, "key"),
            agent=agent.lower() if _ADDRESS.fullmatch(agent) else agent,
            asset=_text(spend.asset, "spend asset").lower(),
            amount=amount,
            recipient=None if spend.recipient is None else _text(spend.recipient, "recipient"),
            expires_at=float(expires_at),
            action=bool(action),
        )
        return self._backend.reserve(request, limits, now)

    def bind(self, reservation_id: str, *, task_id: str, expires_at: float) -> Reservation:
        """Tie a reservation made before authorization to the attestation that allowed it: it
        then lives exactly as long as that attestation (``mark_signed`` refuses after). Refused
        if the reservation expired meanwhile (its hold may have been given back)."""
        if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
            raise ReservationError("expires_at must be a unix timestamp in seconds")
        if not math.isfinite(expires_at):
            raise ReservationError(f"expires_at {expires_at} is not a timestamp")
        return self._backend.bind(
            _text(reservation_id, "reservation id"),
            _text(task_id, "task id"),
            float(expires_at),
            self._clock(),
        )

    def mark_signed(self, reservation_id: str, reference: str) -> Reservation:
        """Record that a signature is about to exist (tx hash, payment nonce). Call it before
        the signature leaves the process; it refuses an expired or settled reservation."""
        return self._backend.mark_signed(
            _text(reservation_id, "reservation id"), _text(reference, "reference"), self._clock()
        )

    def commit(self, reservation_id: str, outcome: str, amount: int | None = None) -> Reservation:
        """The spend happened; ``amount`` (≤ reserved) lets ``upto`` payments give back the rest."""
        if amount is not None and (type(amount) is not int or amount < 0):
            raise ReservationError(f"commit amount must be a non-negative int, got {amount!r}")
        return self._backend.commit(
            _text(reservation_id, "reservation id"),
            _text(outcome, "outcome", 1024),
            amount,
            self._clock(),
        )

    def release(self, reservation_id: str, reason: str) -> Reservation:
        """The spend did not and will not happen: stop counting it."""
        return self._backend.release(
            _text(reservation_id, "reservation id"), _text(reason, "reason", 1024), self._clock()
        )

    def get(self, reservation_id: str) -> Reservation:
        """The reservation ``reservation_id`` as it stands now."""
        return self._backend.get(_text(reservation_id, "reservation id"))

    def usage(self, agent: str, window_seconds: int) -> Usage:
        """What ``agent`` has counted over the last ``window_seconds`` (recomputed, exact)."""
        agent = _text(agent, "agent")
        return self._backend.usage(
            agent.lower() if _ADDRESS.fullmatch(agent) else agent, window_seconds, self._clock()
        )

    def recover(self, resolver: Resolver) -> RecoveryReport:
        """Run at startup: give back expired unsigned reservations, ask ``resolver`` about signed
        ones. A resolver that raises counts as ``unknown`` (the spend keeps counting)."""
        expired = self._backend.expire(self._clock())
        settled = []
        for reservation in self._backend.signed():
            try:
                verdict = resolver(reservation)
            except Exception:
                verdict = "unknown"
            settled.append(self._settle(reservation, verdict))
        return _report(expired, settled)

    def _settle(self, reservation: Reservation, verdict: object) -> Reservation:
        try:
            if isinstance(verdict, Spent):
                amount = verdict.amount
                if type(amount) is not int or amount < 0:
                    raise ConfigurationError(f"Spent amount must be a non-negative int: {amount!r}")
                return self._backend.commit(
                    reservation.id,
                    RECOVERED + "settled onchain",
                    min(amount, reservation.reserved),
                    self._clock(),
                )
            if verdict == "committed":
                return self._backend.commit(
                    reservation.id, RECOVERED + "landed", None, self._clock()
                )
            if verdict == "released":
                return self._backend.release(
                    reservation.id, RECOVERED + "can never land", self._clock()
                )
        except ReservationError:  # settled meanwhile by its own process
            return self._backend.get(reservation.id)
        if verdict != "unknown":
            raise ConfigurationError(
                f"a recovery resolver must return 'committed', 'released' or 'unknown', "
                f"got {verdict!r}"
            )
        return reservation

    def close(self) -> None:
        """Close the backend (its connections or database file)."""
        self._backend.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _report(expired: list[Reservation], settled: list[Reservation]) -> RecoveryReport:
    return RecoveryReport(
        expired=tuple(expired),
        committed=tuple(r for r in settled if r.state == "committed"),
        released=tuple(r for r in settled if r.state == "released"),
        unknown=tuple(r for r in settled if r.state == "signed"),
    )


class AsyncLedger:
    """The same ledger for async code: each call runs in a worker thread."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def reserve(
        self,
        agent: str,
        spend: Spend,
        *,
        key: str,
        expires_at: float,
        limits: Limits,
        action: bool = True,
    ) -> Reservation:
        return await asyncio.to_thread(
            self.ledger.reserve,
            agent,
            spend,
            key=key,
            expires_at=expires_at,
            limits=limits,
            action=action,
        )

    async def bind(self, reservation_id: str, *, task_id: str, expires_at: float) -> Reservation:
        return await asyncio.to_thread(
            self.ledger.bind, reservation_id, task_id=task_id, expires_at=expires_at
        )

    async def mark_signed(self, reservation_id: str, reference: str) -> Reservation:
        return await asyncio.to_thread(self.ledger.mark_signed, reservation_id, reference)

    async def commit(
        self, reservation_id: str, outcome: str, amount: int | None = None
    ) -> Reservation:
        return await asyncio.to_thread(self.ledger.commit, reservation_id, outcome, amount)

    async def release(self, reservation_id: str, reason: str) -> Reservation:
        return await asyncio.to_thread(self.ledger.release, reservation_id, reason)

    async def get(self, reservation_id: str) -> Reservation:
        return await asyncio.to_thread(self.ledger.get, reservation_id)

    async def usage(self, agent: str, window_seconds: int) -> Usage:
        return await asyncio.to_thread(self.ledger.usage, agent, window_seconds)

    async def recover(self, resolver: Resolver | AsyncResolver) -> RecoveryReport:
        """Like ``Ledger.recover``; ``resolver`` may be a coroutine function (a chain lookup)."""
        ledger, backend = self.ledger, self.ledger._backend
        expired = await asyncio.to_thread(backend.expire, ledger._clock())
        settled = []
        for reservation in await asyncio.to_thread(backend.signed):
            try:
                answer = resolver(reservation)
                verdict = await answer if inspect.isawaitable(answer) else answer
            except Exception:
                verdict = "unknown"
            settled.append(await asyncio.to_thread(ledger._settle, reservation, verdict))
        return _report(expired, settled)
