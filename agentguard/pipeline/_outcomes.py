"""What an entry point's port hands back to the pipeline, and what the pipeline returns.

``Prepared`` and ``Signed`` carry the entry point's own data opaquely (``payload``); the
outcome types say, in the pipeline's terms, what the ledger must do with a sent signature:

* ``Landed``: it happened — commit (``amount`` less than reserved only with proof);
* ``Reverted``: it landed and failed — nothing moved but the fee;
* ``NeverLanded``: positive proof it can never land — give everything back;
* ``StillCounted``: anything else (no answer, pending, refused after signing, unconfirmed) —
  the reservation keeps counting until ``Ledger.recover`` finds proof either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agentguard._exceptions import AgentGuardError
from agentguard._intent import Spend
from agentguard._verifier import VerifiedAttestation
from agentguard.ledger import Reservation

__all__ = [
    "Landed",
    "NeverLanded",
    "Outcome",
    "Prepared",
    "Reverted",
    "Sent",
    "Settled",
    "Signed",
    "StillCounted",
]


@dataclass(frozen=True, slots=True)
class Prepared:
    """The port's preparation; ``fee`` is a network fee the budget must also hold."""

    payload: Any = None
    fee: Spend | None = None
    record: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Signed:
    """A signature that exists; ``reference`` is what the ledger records to find it later."""

    reference: str
    payload: Any = field(repr=False)
    record: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Sent:
    """Handed over; what became of it is asked next (``Confirm``)."""

    record: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Landed:
    outcome: str
    amount: int | None = None
    """Less than reserved only with proof (default: the reserved amount)."""
    fee: int | None = None
    """The network fee actually paid (default: the fee held)."""
    record: Mapping[str, Any] = field(default_factory=dict)
    result: Any = None


@dataclass(frozen=True, slots=True)
class Reverted:
    reason: str
    error: AgentGuardError
    fee: int | None = None
    record: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NeverLanded:
    reason: str
    error: AgentGuardError
    record: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StillCounted:
    """``kind`` is the audit kind (``outcome_unknown``, ``payment_pending``, …)."""

    kind: str
    reason: str
    error: AgentGuardError | None = None
    record: Mapping[str, Any] = field(default_factory=dict)
    result: Any = None


Outcome = Landed | Reverted | NeverLanded | StillCounted


@dataclass(frozen=True, slots=True)
class Settled:
    """What one pass through the pipeline did (when it did not raise)."""

    verified: VerifiedAttestation
    reservation: Reservation
    signed: Signed
    outcome: Landed | StillCounted
