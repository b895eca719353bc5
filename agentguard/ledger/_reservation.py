"""A reservation: one spend held against the budget from authorization until it settles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Reservation", "State"]

State = Literal["reserved", "signed", "committed", "released"]
"""``reserved`` (→ bound to an attestation) → (``signed``) → ``committed`` | ``released``.
All but ``released`` count."""


@dataclass(frozen=True, slots=True)
class Reservation:
    """A snapshot of one reservation; ledger calls return a fresh one after every change."""

    id: str
    """The reservation's handle: its idempotency key (one reservation per key, ever)."""
    key: str
    agent: str
    asset: str
    amount: int
    """What counts against the budget now: the reserved amount, what was committed, or 0."""
    reserved: int
    """What was reserved (for ``upto`` payments: the maximum)."""
    recipient: str | None
    state: State
    created_at: float
    expires_at: float
    updated_at: float
    reference: str | None = None
    """Tx hash or payment nonce, set by ``mark_signed``: what a resolver looks up after a crash."""
    outcome: str | None = None
    reason: str | None = None
    action: bool = True
    """``False`` for a cost held next to an action (its network fee): it counts against the
    amount caps but not against the rate caps, which count actions."""
    task_id: str | None = None
    """The attestation this reservation was bound to (``Ledger.bind``); ``None`` until then."""

    @property
    def counted(self) -> bool:
        return self.state != "released"
