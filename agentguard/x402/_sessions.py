"""Open ``upto`` sessions: one signed Permit2 maximum, charged by many requests.

A session is keyed by METHOD + origin + path and lives until its Permit2 deadline (minus a
margin), a 402 from the server, or ``close``. Its reported charges are kept for the caller and
the audit log; the budget keeps the signed maximum either way (see ``_answer.py``).
"""

from __future__ import annotations

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

    def snapshot(self) -> dict[str, tuple[str, int]]:
        with self._lock:
            return {k: (s.id, s.used) for k, s in self._open.items()}

    def __len__(self) -> int:
        return len(self._open)

    def open(self, request: httpx.Request, paid: Paid, session_id: str, charge: int | None) -> None:
        session = Session(key=_key(request), id=session_id, paid=paid)
        session.count(charge)
        with self._lock:
            self._open[session.key] = session

    def live(self, request: httpx.Request) -> Session | None:
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
        attach(response, session.paid, settlement, amount=charge, session=session.id)
        self._record("payment_charged", {**self._fields(session), "charged": text(charge)})

    def end(self, session: Session, why: str) -> None:
        with self._lock:
            if self._open.get(session.key) is not session:
                return  # ended meanwhile by another request
            del self._open[session.key]
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
