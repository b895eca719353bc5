"""The seam between the ``Ledger`` and where reservations live.

A backend makes each call one atomic step against shared state: the cap check and the insert
in ``reserve`` happen together or not at all, across threads and processes. SQLite is the
embedded default; a Redis or PostgreSQL backend implements the same protocol (a Lua script or a
``SERIALIZABLE`` transaction around the same check) so many agent processes on many hosts share
one budget. Backends never read a clock: the ledger passes ``now`` in, so tests can drive time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from agentguard.ledger._limits import Limits
from agentguard.ledger._reservation import Reservation

__all__ = ["LedgerBackend", "ReserveRequest", "Usage"]


@dataclass(frozen=True, slots=True)
class ReserveRequest:
    """A validated, normalised ``reserve`` call (agent and asset lowercase where addresses)."""

    key: str
    agent: str
    asset: str
    amount: int
    recipient: str | None
    expires_at: float
    action: bool = True


@dataclass(frozen=True, slots=True)
class Usage:
    """What one agent has counted in a window: reservations (all assets) and amount per asset."""

    count: int = 0
    spent: dict[str, int] = field(default_factory=dict)


class LedgerBackend(Protocol):
    def reserve(self, request: ReserveRequest, limits: Limits, now: float) -> Reservation:
        """Return the reservation already made under ``request.key``, or check every cap and
        record a new one atomically; raise ``BudgetExceeded`` (recording nothing) on a cap."""
        ...

    def bind(self, reservation_id: str, task_id: str, expires_at: float, now: float) -> Reservation:
        """Attach an unbound, unexpired ``reserved`` reservation to the attestation ``task_id``
        and give it that attestation's expiry; idempotent for the same binding."""
        ...

    def mark_signed(self, reservation_id: str, reference: str, now: float) -> Reservation:
        """``reserved`` → ``signed`` unless expired; idempotent for the same reference."""
        ...

    def commit(
        self, reservation_id: str, outcome: str, amount: int | None, now: float
    ) -> Reservation:
        """→ ``committed``, counting ``amount`` (≤ reserved) instead of the reserved amount."""
        ...

    def release(self, reservation_id: str, reason: str, now: float) -> Reservation:
        """→ ``released``: it stops counting. Refused once committed."""
        ...

    def get(self, reservation_id: str) -> Reservation: ...

    def expire(self, now: float) -> list[Reservation]:
        """Release every reservation past its expiry that was never marked signed."""
        ...

    def signed(self) -> list[Reservation]:
        """Reservations marked signed and not yet committed or released, oldest first."""
        ...

    def usage(self, agent: str, window_seconds: int, now: float) -> Usage: ...

    def close(self) -> None: ...
