"""The lifecycle rules of one reservation, for backends that check them outside SQL or Lua.

The Redis and PostgreSQL backends load a reservation, ask these functions what a call may do,
and then apply the change atomically (a row lock; a compare-and-set script). Each function
returns the reservation to hand back unchanged (an idempotent repeat), raises the refusal, or
returns ``None``: go ahead. The words match the SQLite backend's, so every backend explains a
refusal the same way.
"""

from __future__ import annotations

from agentguard._exceptions import ReservationError
from agentguard.ledger._backend import ReserveRequest
from agentguard.ledger._reservation import Reservation

RECOVERED = "recovered: "
"""How ``Ledger.recover`` begins the outcome of what it settles from the chain."""

__all__ = [
    "RECOVERED",
    "check_bind",
    "check_commit",
    "check_mark_signed",
    "check_release",
    "check_same_spend",
    "new_reservation",
    "replayed_message",
]


def new_reservation(
    request: ReserveRequest, now: float, *, agent: str | None = None, asset: str | None = None
) -> Reservation:
    """What a ``reserve`` that passed every cap records: held in full, unbound. ``agent`` /
    ``asset``: an equal string to keep instead of the request's (a backend's one copy)."""
    return Reservation(
        id=request.key,
        key=request.key,
        agent=request.agent if agent is None else agent,
        asset=request.asset if asset is None else asset,
        amount=request.amount,
        reserved=request.amount,
        recipient=request.recipient,
        state="reserved",
        created_at=now,
        expires_at=request.expires_at,
        updated_at=now,
        action=request.action,
    )


def check_same_spend(existing: Reservation, request: ReserveRequest) -> Reservation:
    """``reserve`` under a key already used: the same spend gets its reservation back."""
    if (existing.agent, existing.asset, existing.reserved, existing.action) != (
        request.agent,
        request.asset,
        request.amount,
        request.action,
    ):
        raise ReservationError(
            f"key {request.key!r} already reserved {existing.reserved} of "
            f"{existing.asset} for agent {existing.agent}, not this spend; "
            "each authorization needs its own key"
        )
    return existing


def check_bind(r: Reservation, task_id: str, expires_at: float, now: float) -> Reservation | None:
    if r.state == "reserved" and r.task_id == task_id and r.expires_at == expires_at:
        return r
    if r.state != "reserved" or r.task_id is not None:
        raise ReservationError(
            f"reservation {r.id} is {r.state}"
            + (f" and bound to {r.task_id}" if r.task_id else "")
            + "; only an unbound reserved one can be bound to an attestation"
        )
    if now >= r.expires_at:
        raise ReservationError(
            f"reservation {r.id} expired at {r.expires_at:.0f} before the attestation "
            "arrived; its hold may already be given back, so it cannot back a signature"
        )
    return None


def check_mark_signed(r: Reservation, reference: str, now: float) -> Reservation | None:
    if r.state == "signed" and r.reference == reference:
        return r
    if r.state != "reserved":
        raise ReservationError(
            f"reservation {r.id} is {r.state}; only a reserved one can be marked signed"
        )
    if now >= r.expires_at:
        raise ReservationError(
            f"reservation {r.id} expired at {r.expires_at:.0f}; do not sign on it"
        )
    return None


def check_commit(
    r: Reservation, outcome: str, amount: int | None
) -> tuple[Reservation | None, int]:
    """Also returns the amount to count (``amount``, or everything reserved)."""
    final = r.reserved if amount is None else amount
    if final > r.reserved:
        raise ReservationError(f"reservation {r.id} holds {r.reserved}; it cannot commit {final}")
    if r.state == "committed":
        if (r.outcome, r.amount) == (outcome, final):
            return r, final
        if (r.outcome or "").startswith(RECOVERED) and final <= r.amount:
            # Another process's recover() settled it from the chain's proof while its owner was
            # between its receipt and this commit (a shared ledger): the same spend, already
            # counted at least as much. Refusing made a landed payment look failed ("authorize
            # again": the caller would pay twice) and stalled the owner's own bookkeeping.
            return r, r.amount
        raise ReservationError(
            f"reservation {r.id} was already committed ({r.amount}, {r.outcome!r})"
        )
    if r.state == "released":
        raise ReservationError(
            f"reservation {r.id} was released ({r.reason}); it cannot be committed"
        )
    return None, final


def check_release(r: Reservation) -> Reservation | None:
    if r.state == "released":
        return r
    if r.state == "committed":
        raise ReservationError(
            f"reservation {r.id} was committed ({r.outcome!r}); a spend that happened "
            "cannot be released"
        )
    return None


def replayed_message(task_id: str, other: str) -> str:
    return (
        f"attestation {task_id} already backs reservation {other}; "
        "authorize again for another action"
    )
