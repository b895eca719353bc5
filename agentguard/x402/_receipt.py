"""What a paid request leaves on its response: the server's settlement, as the agent saw it."""

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
    amount: int | None
    """Atomic units settled by this request (``upto``: this request's charge); ``None`` if the
    server did not say."""
    transaction: str
    pending: bool
    x402_version: int
    reservation_id: str
    reference: str
    """The signed authorization's nonce, as recorded in the ledger."""
    payment_id: str | None = None
    session: str | None = None
    error_reason: str | None = None


def receipt(response: httpx.Response) -> Receipt | None:
    """The receipt of the payment that bought ``response``, or ``None`` if nothing was paid."""
    found = response.extensions.get(RECEIPT_EXTENSION)
    return found if isinstance(found, Receipt) else None
