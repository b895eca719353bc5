"""The x402 port into the pipeline: build, sign and encode one payment for one requirement.

Built after authorization, so the authorization's validity window is bounded by the
attestation (``validBefore`` / Permit2 ``deadline`` ≤ its expiry) and, in vault mode, its
EIP-3009 nonce is the attestation's task id. Sending is not done here: the paid request goes
out through httpx's auth flow (``_auth.py``), which turns the answer into an outcome.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, cast

from agentguard._exceptions import ConfigurationError
from agentguard._signer import Signer
from agentguard._verifier import VerifiedAttestation
from agentguard.pipeline import Outcome, Prepared, Sent, Signed
from agentguard.x402._wire import (
    PAYMENT_SIGNATURE,
    X_PAYMENT,
    PaymentRequired,
    Requirement,
    encode_header,
    encode_json,
    encode_text,
)
from agentguard.x402.exact import client as exact_client
from agentguard.x402.upto import client as upto_client

__all__ = ["PAYMENT_IDENTIFIER", "Payment", "PaymentPort"]

PAYMENT_IDENTIFIER = "payment-identifier"


@dataclass(frozen=True, slots=True)
class Payment:
    """A signed payment, encoded for its header: re-sent byte for byte, never re-signed."""

    requirement: Requirement
    header: str
    value: str
    reference: str
    valid_until: int
    payment_id: str | None


class PaymentPort:
    """One payment for ``req`` from ``payer`` (the signer's address, or a vault)."""

    blocking = False  # builds and signs an authorization in memory; the paid retry is the Send

    def __init__(
        self,
        *,
        signer: Signer,
        payer: str,
        vault: str | None,
        required: PaymentRequired,
        req: Requirement,
        permit2_spenders: Collection[str],
        clock: Callable[[], float],
    ) -> None:
        self._signer, self._payer, self._vault = signer, payer, vault
        self._required, self._req = required, req
        self._spenders, self._clock = permit2_spenders, clock

    def prepare(self, verified: VerifiedAttestation) -> Prepared:
        req, now = self._req, int(self._clock())
        until = exact_client.valid_until(req, now=now, expires_at=verified.expires_at)
        if self._vault is not None:  # select() offered only ``exact``
            nonce = bytes.fromhex(verified.task_id.removeprefix("0x"))
            typed = exact_client.typed_data(
                req, self._payer, now=now, valid_before=until, nonce=nonce
            )
        elif req.scheme == "exact":
            typed = exact_client.typed_data(req, self._payer, now=now, valid_before=until)
        else:
            typed = upto_client.typed_data(req, self._payer, deadline=until)
        return Prepared(payload=typed, record={"scheme": req.scheme, "valid_until": until})

    def sign(self, verified: VerifiedAttestation, prepared: Prepared) -> Signed:
        req, payer = self._req, self._payer
        typed = cast(dict[str, Any], prepared.payload)
        if self._vault is not None:
            reference = exact_client.reference(typed)
            blob = self._signer.sign_vault_payment(verified, typed, vault=self._vault)
            inner = exact_client.payload(typed, blob)
        elif req.scheme == "exact":
            reference = exact_client.reference(typed)
            # built by ``prepare`` just now and never handed out: its fields go to the signer,
            # which checks them as ``sign_payment`` checks typed data, without the fixed shape
            domain, message = typed["domain"], typed["message"]
            signature = self._signer.sign_eip3009(
                verified,
                name=domain["name"],
                version=domain["version"],
                chain_id=domain["chainId"],
                token=domain["verifyingContract"],
                payer=message["from"],
                to=message["to"],
                value=message["value"],
                valid_after=message["validAfter"],
                valid_before=message["validBefore"],
                nonce=message["nonce"],
            )
            inner = exact_client.payload(typed, signature)
        else:
            reference = upto_client.reference(typed, payer)
            signature = self._signer.sign_payment(verified, typed, permit2_spenders=self._spenders)
            inner = upto_client.payload(typed, signature, payer)
        payment_id = _payment_id(self._required)
        header, value = self._encoded(inner, payment_id)
        payment = Payment(
            requirement=req,
            header=header,
            value=value,
            reference=reference,
            valid_until=int(prepared.record["valid_until"]),
            payment_id=payment_id,
        )
        return Signed(
            reference=reference,
            payload=payment,
            record={
                "scheme": req.scheme,
                "network": req.network,
                "asset": req.asset,
                "amount": str(req.amount),
                "pay_to": req.pay_to,
                "payment_id": payment_id,
            },
        )

    def abandon(self, prepared: Prepared) -> None:
        """Nothing to give back: a payment authorization holds no nonce lock."""

    def send(self, signed: Signed) -> Sent | Outcome:
        raise ConfigurationError("an x402 payment is sent by X402Auth's auth flow")

    def confirm(self, signed: Signed) -> Outcome:
        raise ConfigurationError("an x402 payment is confirmed by its answer")

    def _encoded(self, inner: dict[str, Any], payment_id: str | None) -> tuple[str, str]:
        """The payment header's name and value. v2's ``resource`` and ``accepted`` are what
        the server sent, encoded once when its answer was parsed (``raw_json``,
        ``resource_json``, encoded by the objects' constructors from their own mappings): the
        value is that JSON joined around the payload, byte for byte what encoding the whole
        document gives."""
        req, required = self._req, self._required
        if req.x402_version == 1:
            document = {
                "x402Version": 1,
                "scheme": req.scheme,
                "network": req.network,
                "payload": inner,
            }
            return X_PAYMENT, encode_header(document)
        head, accepted = required.resource_json, req.raw_json
        if accepted is None or (head is None) is not (required.resource is None):
            return PAYMENT_SIGNATURE, encode_header(self._document(inner, payment_id))
        parts = ['{"x402Version":2,']
        if head is not None:
            parts += ['"resource":', head, ","]
        parts += ['"accepted":', accepted, ',"payload":', encode_json(inner)]
        if payment_id is not None:
            identifier = _identifier(required.extensions, payment_id)
            parts += [',"extensions":', encode_json({PAYMENT_IDENTIFIER: identifier})]
        parts.append("}")
        return PAYMENT_SIGNATURE, encode_text("".join(parts))

    def _document(self, inner: dict[str, Any], payment_id: str | None) -> dict[str, Any]:
        """The v2 payment document (for a requirement or answer whose mappings are not JSON:
        encoding it fails as it always did)."""
        req, required = self._req, self._required
        document: dict[str, Any] = {"x402Version": 2}
        if required.resource is not None:
            document["resource"] = dict(required.resource)
        document["accepted"] = dict(req.raw)
        document["payload"] = inner
        if payment_id is not None:
            document["extensions"] = {
                PAYMENT_IDENTIFIER: _identifier(required.extensions, payment_id)
            }
        return document


def _payment_id(required: PaymentRequired) -> str | None:
    if required.x402_version == 2 and isinstance(required.extensions.get(PAYMENT_IDENTIFIER), dict):
        return f"pay_{uuid.uuid4().hex}"
    return None


def _identifier(extensions: Mapping[str, Any], payment_id: str) -> dict[str, Any]:
    """The server's ``payment-identifier`` declaration with our id added under ``info``."""
    declared = dict(extensions.get(PAYMENT_IDENTIFIER) or {})
    info = declared.get("info")
    declared["info"] = {**(info if isinstance(info, dict) else {}), "id": payment_id}
    return declared
