"""What a server's answer to a paid request means, in the pipeline's terms.

A payee's words (a settlement receipt, an ``X-Upto-Charge``) are shown to the caller on the
response's ``Receipt`` as its ``reported_charge``, beside the ``authorized`` amount that counts;
for the budget they count only as far as they cannot make it looser: an ``exact`` payment that
was settled or delivered is committed (its amount is fixed by the signature), anything else —
``upto`` charges, pending, refused, failed — stays counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from agentguard._exceptions import PaymentOutcomeUnknown, PaymentRejected, PaymentRequiredError
from agentguard.pipeline import Landed, Outcome, StillCounted
from agentguard.x402._payment import Payment
from agentguard.x402._receipt import RECEIPT_EXTENSION, Receipt
from agentguard.x402._wire import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    X_PAYMENT_RESPONSE,
    Settlement,
    parse_amount,
    parse_payment_required,
    parse_settlement,
)

__all__ = [
    "UPTO_CHARGE",
    "UPTO_SESSION",
    "Paid",
    "SessionOpened",
    "attach",
    "outcome",
    "redirected",
    "reported_charge",
    "settlement_of",
    "text",
]

UPTO_SESSION = "X-Upto-Session"
"""Server → client on a paid ``upto`` answer, client → server on later requests: the session
that keeps charging one signed Permit2 maximum."""
UPTO_CHARGE = "X-Upto-Charge"
"""Server → client: what this request charged against the session (atomic units)."""


@dataclass(frozen=True, slots=True)
class Paid:
    """A signed payment as the answer handling needs it."""

    payment: Payment
    reservation_id: str
    payer: str
    url: str  # the only URL the payment may be sent to (never a redirect's ``Location``)
    resent: bool = False  # a lost payment sent again: never taken as unsent (it may be out)
    sent_url: httpx.URL | None = field(default=None, compare=False, repr=False)
    """The URL object ``url`` was rendered from: a request still carrying exactly it is at
    ``url`` without rendering it again (``httpx.URL`` is immutable)."""


@dataclass(frozen=True, slots=True)
class SessionOpened:
    """An ``upto`` answer that opened a session (``StillCounted.result``)."""

    id: str
    charge: int | None


def text(amount: int | None) -> str | None:
    return None if amount is None else str(amount)


def settlement_of(response: httpx.Response, version: int) -> Settlement | None:
    return parse_settlement(
        response.headers.get(PAYMENT_RESPONSE if version == 2 else X_PAYMENT_RESPONSE)
    )


def reported_charge(response: httpx.Response, settlement: Settlement | None) -> int | None:
    header = response.headers.get(UPTO_CHARGE)
    if header is not None:
        return parse_amount(header.strip())
    return settlement.amount if settlement is not None else None


def attach(
    response: httpx.Response,
    paid: Paid,
    settlement: Settlement | None,
    *,
    reported: int | None,
    session: str | None = None,
) -> None:
    """Put the payment's ``Receipt`` on the response (``agentguard.x402.receipt``): what was
    signed and counted (``authorized``) beside the server's ``reported`` charge."""
    req, payment = paid.payment.requirement, paid.payment
    response.extensions[RECEIPT_EXTENSION] = Receipt(
        scheme=req.scheme,
        network=settlement.network if settlement and settlement.network else req.network,
        asset=req.asset,
        pay_to=req.pay_to,
        payer=paid.payer,
        authorized=req.amount,
        reported_charge=reported,
        transaction=settlement.transaction if settlement else "",
        pending=bool(settlement and settlement.pending),
        x402_version=req.x402_version,
        reservation_id=paid.reservation_id,
        reference=payment.reference,
        payment_id=payment.payment_id,
        session=session[:256] if session else None,
        error_reason=settlement.error_reason if settlement else None,
    )


def _server_reason(response: httpx.Response, version: int) -> str:
    """The server's own words for a 402 after paying (v2 header ``error``, v1 body ``error``)."""
    header = response.headers.get(PAYMENT_REQUIRED)
    try:
        required = parse_payment_required(header, response.content)
    except PaymentRequiredError:
        return f"HTTP 402 (x402 v{version}) without a readable reason"
    return required.error or "HTTP 402 without a reason"


def _seen(settlement: Settlement | None, status: int) -> dict[str, Any]:
    seen: dict[str, Any] = {"status": status}
    if settlement is not None:
        seen.update(transaction=settlement.transaction, network=settlement.network)
    return seen


def redirected(request: httpx.Request, paid: Paid, where: str) -> PaymentOutcomeUnknown:
    """A paid request answered with a redirect: the payment went out, the answer is not the
    payee's (a client following redirects would carry the payment header to ``where``)."""
    req = paid.payment.requirement
    return PaymentOutcomeUnknown(
        f"{request.method} {paid.url} took a signed payment of {req.amount} {req.asset} to "
        f"{req.pay_to} and answered with a redirect to {where[:200]}; the payment is not "
        "carried to another URL and its outcome is unknown",
        reference=paid.payment.reference,
        reservation_id=paid.reservation_id,
        payment_id=paid.payment.payment_id,
    )


def _redirected(response: httpx.Response, paid: Paid) -> bool:
    """Whether a response that carried the payment was a redirect or came from another URL
    than the one paid for. Headers are read only for such a response (rare): on the common
    path (the 402 and the paid answer, from the paid URL) none is."""
    header, value = paid.payment.header, paid.payment.value
    return any(
        r.request.headers.get(header) == value
        for r in (*response.history, response)
        if r.has_redirect_location
        or (r.request.url is not paid.sent_url and str(r.request.url) != paid.url)
    )


def outcome(request: httpx.Request, response: httpx.Response, paid: Paid) -> Outcome:
    """The outcome of a paid request (a 402's body must have been read)."""
    req = paid.payment.requirement
    if _redirected(response, paid):
        error = redirected(request, paid, str(response.request.url))
        return StillCounted(
            "outcome_unknown",
            "the paid request was redirected",
            error=error,
            record={"status": response.status_code, "redirected_to": str(response.url)[:200]},
        )
    settlement = settlement_of(response, req.x402_version)
    seen: Mapping[str, Any] = _seen(settlement, response.status_code)
    if settlement is not None and settlement.pending:
        attach(response, paid, settlement, reported=None)
        return StillCounted("payment_pending", "settlement_pending", record=seen)
    if response.status_code == 402:
        reason = (settlement.error_reason if settlement else None) or _server_reason(
            response, req.x402_version
        )
        return StillCounted(
            "payment_rejected",
            reason,
            error=PaymentRejected(
                f"{request.method} {request.url} answered 402 to a signed payment of "
                f"{req.amount} {req.asset} to {req.pay_to}",
                reason=reason,
                reference=paid.payment.reference,
                reservation_id=paid.reservation_id,
            ),
        )
    if settlement is not None and not settlement.success:
        attach(response, paid, settlement, reported=None)
        reason = settlement.error_reason or "the server reports a failed settlement"
        return StillCounted("payment_unsettled", reason, record=seen)
    if settlement is None and not response.is_success:
        # The official servers settle only after a successful handler; with no receipt we
        # cannot tell, so the payment stays counted until reconciled.
        return StillCounted("outcome_unknown", "paid request failed without a receipt", record=seen)
    if req.scheme == "upto":
        charge = reported_charge(response, settlement)
        session = response.headers.get(UPTO_SESSION)
        attach(response, paid, settlement, reported=charge, session=session)
        return StillCounted(
            "payment_charged",
            "upto: the signed maximum counts until the chain shows what was settled",
            record={**seen, "charged": text(charge)},
            result=SessionOpened(session[:256], charge) if session else None,
        )
    attach(response, paid, settlement, reported=req.amount)
    done = f"settled {settlement.transaction}" if settlement else "delivered, no receipt"
    return Landed(done, record=seen)
