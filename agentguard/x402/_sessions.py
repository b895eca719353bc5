"""Open ``upto`` sessions: one signed Permit2 maximum, charged by many requests.

A session is keyed by METHOD + origin + path and lives until its Permit2 deadline (minus a
margin), a 402 from the server, or ``close``. Its reported charges are kept for the caller and
the audit log; the budget keeps the signed maximum either way (see ``_answer.py``).

Opening is claimed per key (``claim`` / ``release``): requests racing to pay the same
endpoint's ``upto`` 402 wait for the one that pays, then ride its session, so one session
serves them all with one signature and one hold. A session that still gets replaced is ended
(audited), never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from agentguard._logging import get_logger
from agentguard.x402._answer import (
    UPTO_SESSION,
    Paid,
    attach,
    reported_charge,
    settlement_of,
    text,
)

__all__ = ["Session", "Sessions"]

log = get_logger("agentguard.x402")

MARGIN = 5.0  # stop using a session this many seconds before its Permit2 deadline


@dataclass(slots=True)
class Session:
    key: str
    id: str
    paid: Paid
    used: int = 0
    known: bool = True  # every charge was reported

    def count(self, charge: int | None) -> None:
        maximum = self.paid.payment.requirement.amount
        if charge is None:
            self.known = False
        elif self.used + charge > maximum:
            log.warning("x402 upto charges exceed the signed maximum", session=self.id)
            self.used = maximum
        else:
            self.used += charge


class Opening:
    """One claim to open a key's session; waiters (threads or tasks on any event loop) are
    woken when it is released, however the opening request ended."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._tasks: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def release(self) -> None:
        with self._lock:
            self._released.set()
            tasks, self._tasks = self._tasks, []
        for loop, future in tasks:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits there now
                loop.call_soon_threadsafe(_wake, future)

    def wait(self, timeout: float | None) -> bool:
        """Block this thread until released; ``False`` if ``timeout`` passed first."""
        return self._released.wait(timeout)

    async def wait_async(self, timeout: float | None) -> bool:
        """Await the release without blocking the event loop; cancellable."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._lock:
            if self._released.is_set():
                return True
            self._tasks.append(entry)
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                if entry in self._tasks:
                    self._tasks.remove(entry)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _key(request: httpx.Request) -> str:
    url = request.url
    return f"{request.method} {url.scheme}://{url.netloc.decode('ascii')}{url.path}"


class Sessions:
    """Thread-safe registry; ``record`` appends to the audit log."""

    def __init__(
        self, record: Callable[[str, Mapping[str, Any]], None], clock: Callable[[], float]
    ) -> None:
        self._record, self._clock = record, clock
        self._lock = threading.Lock()
        self._open: dict[str, Session] = {}
        self._opening: dict[str, Opening] = {}

    def snapshot(self) -> dict[str, tuple[str, int]]:
        with self._lock:
            return {k: (s.id, s.used) for k, s in self._open.items()}

    def __len__(self) -> int:
        return len(self._open)

    def claim(self, request: httpx.Request) -> tuple[Opening, bool]:
        """The key's opening claim and whether it is ours (else: wait for it, then claim again)."""
        key = _key(request)
        with self._lock:
            opening = self._opening.get(key)
            if opening is not None:
                return opening, False
            opening = self._opening[key] = Opening(key)
            return opening, True

    def release(self, opening: Opening) -> None:
        with self._lock:
            if self._opening.get(opening.key) is opening:
                del self._opening[opening.key]
        opening.release()

    def open(self, request: httpx.Request, paid: Paid, session_id: str, charge: int | None) -> None:
        session = Session(key=_key(request), id=session_id, paid=paid)
        session.count(charge)
        with self._lock:
            replaced = self._open.get(session.key)
            self._open[session.key] = session
        if replaced is not None:  # e.g. a re-sent lost payment opened a second session
            self._closed(replaced, "replaced by a newer session for the same endpoint")

    def live(self, request: httpx.Request) -> Session | None:
        if not self._open:  # no session at all (every ``exact`` payer): no key to build
            return None
        with self._lock:
            session = self._open.get(_key(request))
        if session is None:
            return None
        if self._clock() >= session.paid.payment.valid_until - MARGIN:
            self.end(session, "the session's Permit2 deadline passed")
            return None
        return session

    def charge(self, session: Session, response: httpx.Response) -> None:
        settlement = settlement_of(response, session.paid.payment.requirement.x402_version)
        charge = reported_charge(response, settlement)
        with self._lock:
            session.count(charge)
            renewed = response.headers.get(UPTO_SESSION)
            if renewed:
                session.id = renewed[:256]
        attach(response, session.paid, settlement, reported=charge, session=session.id)
        self._record("payment_charged", {**self._fields(session), "charged": text(charge)})

    def end(self, session: Session, why: str) -> None:
        with self._lock:
            if self._open.get(session.key) is not session:
                return  # ended meanwhile by another request
            del self._open[session.key]
        self._closed(session, why)

    def _closed(self, session: Session, why: str) -> None:
        reported = text(session.used if session.known else None)
        self._record(
            "payment_session_closed", {**self._fields(session), "reported": reported, "why": why}
        )

    def end_all(self, why: str) -> None:
        with self._lock:
            sessions = list(self._open.values())
        for session in sessions:
            self.end(session, why)

    @staticmethod
    def _fields(session: Session) -> dict[str, Any]:
        return {
            "rail": "payment",
            "reservation": session.paid.reservation_id,
            "reference": session.paid.payment.reference,
            "session": session.id,
        }
