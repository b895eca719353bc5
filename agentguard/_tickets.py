"""Signing tickets: what a verifier vouched for, redeemable by a ``Signer`` exactly once.

A ``VerifiedAttestation`` is an ordinary (frozen, but not tamper-proof) Python object: a caller
can ``dataclasses.replace`` it, ``object.__setattr__`` its intent, or hand it to the signer three
times. So the verifier also records what it checked in this private, process-local registry,
keyed by task id: a fresh copy of the intent it hashed, the attestation, the expiry and the
assurance. The signer redeems the ticket once (the task id then stays spent until it expires,
unless the signer refused the caller's arguments and signed nothing) and signs from the
ticket's copies, after checking that the caller's intent still hashes to the attested hash.
The registry is bounded: expired entries are dropped, and when it is full of live ones new
verifications are refused rather than old ones forgotten.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from agentguard._attestation import Attestation
from agentguard._exceptions import (
    AttestationExpired,
    AttestationReplayed,
    IntentError,
    IntentMismatch,
    VerificationError,
)
from agentguard._intent import PaymentIntent, TransactionIntent, _constructed

__all__ = [
    "INTENT_FIELDS",
    "SIGNATURES_CHECKED",
    "Assurance",
    "Ticket",
    "fresh_intent",
    "give_back",
    "issue",
    "redeem",
]

Assurance = Literal["quorum-ecdsa", "quorum-ecdsa-vault-only", "newton-bls", "newton-bls-binding"]
"""``quorum-ecdsa``: agentguard checked the operator ECDSA signatures.
``quorum-ecdsa-vault-only``: it did, at a vault-only trust tier (``agentguard._tiers``): usable
only through a vault, whose contract re-checks the quorum. ``newton-bls``: agentguard
checked Newton's BLS (BN254) aggregate against the operator table onchain (``agentguard.newton``).
``newton-bls-binding``: only the binding fields were checked; the signatures must be checked
onchain (vault mode only)."""

SIGNATURES_CHECKED: frozenset[Assurance] = frozenset({"quorum-ecdsa", "newton-bls"})
"""The assurances whose operator signatures agentguard itself verified: the only ones an EOA
signature (valid on its own, with no contract re-checking the quorum) may rest on."""

MAX_TICKETS = 65_536


@dataclass(frozen=True, slots=True)
class Ticket:
    task_id: bytes
    attestation: Attestation
    intent: TransactionIntent | PaymentIntent
    intent_hash: bytes
    expires_at: int  # unix seconds; the signer refuses at or after it
    assurance: Assurance


def fresh_intent(intent: object) -> TransactionIntent | PaymentIntent:
    """A new intent rebuilt and re-validated from ``intent``'s current field values.

    Nothing cached on the original (its ``intent_hash`` is a cached property) carries over, so
    the copy's hash is the hash of what the fields say now.
    """
    if type(intent) not in (TransactionIntent, PaymentIntent):
        raise VerificationError(
            f"an attested intent must be an intent, not {type(intent).__name__}"
        )
    assert isinstance(intent, TransactionIntent | PaymentIntent)  # narrowed above, for mypy
    try:
        if type(intent) is PaymentIntent:
            fields = _fields(intent, PaymentIntent)
            if _plain(fields):
                values, intent_hash = _payment_template(tuple(fields.values()))
                fresh = _constructed(PaymentIntent, dict(values))
                fresh.__dict__["intent_hash"] = intent_hash  # what its cached property computes
                return fresh
            return PaymentIntent.from_fields(fields)
        return type(intent).model_validate(_fields(intent, type(intent)))
    except Exception as exc:  # IntentError, or a field set to an object no validator expected
        why = exc.message if isinstance(exc, IntentError) else type(exc).__name__
        raise IntentMismatch(f"the intent's fields are not a valid intent: {why}") from None


INTENT_FIELDS = {kind: tuple(kind.model_fields) for kind in (TransactionIntent, PaymentIntent)}
"""Each intent class's field names, in order (read per intent: ``model_fields`` costs more)."""


def _fields(intent: object, kind: type[TransactionIntent] | type[PaymentIntent]) -> dict[str, Any]:
    return {name: getattr(intent, name, None) for name in INTENT_FIELDS[kind]}


_PLAIN = (str, int, bytes, type(None))
_PAYMENT_FIELDS = INTENT_FIELDS[PaymentIntent]


@lru_cache(maxsize=1024)
def _payment_template(values: tuple[Any, ...]) -> tuple[dict[str, Any], bytes]:
    """The validated fields and the intent hash of the payment whose field values are
    ``values``: validation and hashing are pure functions of them, and a client pays the same
    few requirements again and again. Keyed only by values each exactly a ``str``, ``int``,
    ``bytes`` or ``None`` (``_plain``), which compare equal only to themselves, so no caller's
    ``__eq__`` or ``__hash__`` picks another payment's entry; a refusal raises and is not
    kept. The dict is never handed out (each fresh intent gets a copy)."""
    model = PaymentIntent.from_fields(dict(zip(_PAYMENT_FIELDS, values, strict=True)))
    return {name: model.__dict__[name] for name in _PAYMENT_FIELDS}, model.intent_hash


def _plain(fields: dict[str, Any]) -> bool:
    """Every value exactly a ``str``, ``int``, ``bytes`` or ``None`` (no subclass)."""
    for value in fields.values():  # noqa: SIM110 (a loop: no generator frame per call)
        if type(value) not in _PLAIN:
            return False
    return True


class _Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[bytes, Ticket] = {}
        self._spent: dict[bytes, int] = {}  # task id → expiry: refused until then

    def _prune(self, now: float) -> None:
        self._live = {k: t for k, t in self._live.items() if t.expires_at > now}
        self._spent = {k: e for k, e in self._spent.items() if e > now}

    def issue(self, ticket: Ticket, now: float) -> None:
        task = "0x" + ticket.task_id.hex()
        with self._lock:
            if ticket.task_id in self._live or ticket.task_id in self._spent:
                raise AttestationReplayed(f"attestation {task} was already verified once")
            if len(self._live) + len(self._spent) >= MAX_TICKETS:
                self._prune(now)
                if len(self._live) + len(self._spent) >= MAX_TICKETS:
                    raise VerificationError(
                        f"{MAX_TICKETS} verified attestations are waiting to be signed; "
                        "refusing more until some are signed or expire"
                    )
            self._live[ticket.task_id] = ticket

    def redeem(self, attestation: object, intent: object, now: float) -> Ticket:
        """Use up the ticket of ``attestation`` and return it if it is unexpired and
        ``attestation`` and ``intent`` are still what was verified, re-hashed from their current
        fields. A ticket refused here stays used up; one the signer then refuses to sign on
        (bad fees, wrong typed data) it hands back with ``give_back``."""
        task_id = getattr(attestation, "task_id", None)
        if type(attestation) is not Attestation or not isinstance(task_id, bytes):
            raise VerificationError("the verified attestation was replaced by something else")
        task = "0x" + task_id.hex()
        with self._lock:
            ticket = self._live.pop(task_id, None)
            if ticket is None:
                if task_id in self._spent:
                    raise AttestationReplayed(
                        f"attestation {task} was already used for a signature (one per attestation)"
                    )
                raise VerificationError(
                    f"attestation {task} was not verified in this process (or expired unused)"
                )
            self._spent[task_id] = ticket.expires_at
        if ticket.expires_at <= now:
            raise AttestationExpired(f"attestation {task} expired at {ticket.expires_at}")
        if attestation is not ticket.attestation and attestation != ticket.attestation:
            raise IntentMismatch(f"attestation {task} was altered after it was verified")
        kind = type(ticket.intent)
        current = _fields(intent, kind)
        # Equal fields first (cheap, and it makes the unvalidated rebuild below safe), then the
        # hash of a new object built from them: nothing cached on ``intent`` takes part. Fields
        # all of exactly an immutable builtin type (no ``__eq__`` of the caller's choosing ran)
        # equal to the ticket's are the ticket's values, which hash to ``ticket.intent_hash``
        # (every verifier issues ``intent_hash=fresh.intent_hash`` of that private copy), so
        # the rebuild could not differ and is skipped.
        if (
            type(intent) is not kind
            or current != _fields(ticket.intent, kind)
            or (
                not _plain(current)
                and kind.model_construct(**current).intent_hash != ticket.intent_hash
            )
        ):
            raise IntentMismatch(
                f"the intent was altered after attestation {task} was verified: it no longer "
                "hashes to the attested intent hash"
            )
        return ticket

    def give_back(self, ticket: Ticket) -> None:
        """The signer produced no signature under ``ticket``: it may be redeemed again."""
        with self._lock:
            if self._spent.pop(ticket.task_id, None) is not None:
                self._live[ticket.task_id] = ticket


_REGISTRY = _Registry()
issue = _REGISTRY.issue
redeem = _REGISTRY.redeem
give_back = _REGISTRY.give_back
