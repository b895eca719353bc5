"""What a paid request leaves on its response: what was signed and counted, and what the server
says it charged — two numbers, never one (an ``upto`` payee or a relay may report a tiny charge
while the signed maximum stays counted; showing its claim as "the price" would hide that)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

__all__ = ["RECEIPT_EXTENSION", "Receipt", "receipt"]

RECEIPT_EXTENSION = "x402_receipt"


@dataclass(frozen=True, slots=True)
class Receipt:
    """One payment's settlement. ``pending``: the server broadcast it but could not confirm it
    yet (``settlement_pending``); it stays counted in the ledger until reconciled."""

    scheme: str
    network: str
    asset: str
    pay_to: str
    payer: str
    authorized: int
    """Atomic units signed and counted against the budget: ``exact``, the exact amount;
    ``upto``, the signed maximum (for a session, the session's maximum, counted once for all its
    requests), counted until the chain shows what was settled."""
    reported_charge: int | None
    """The server's report, not verified: ``upto``, what it says this request charged
    (``X-Upto-Charge`` or the settlement's ``amount``); ``exact``, the signed amount once settled
    or delivered. ``None`` if nothing was reported (pending, failed)."""
    transaction: str
    pending: bool
    x402_version: int
    reservation_id: str
    reference: str
    """The signed authorization's nonce, as recorded in the ledger."""
    payment_id: str | None = None
    session: str | None = None
    error_reason: str | None = None

    @property
    def amount(self) -> int | None:
        """``reported_charge`` under its former name (kept for compatibility; it is the server's
        report). What the budget counts is ``authorized``."""
        return self.reported_charge


def receipt(response: httpx.Response) -> Receipt | None:
    """The receipt of the payment that bought ``response``, or ``None`` if nothing was paid."""
    found = response.extensions.get(RECEIPT_EXTENSION)
    return found if isinstance(found, Receipt) else None
