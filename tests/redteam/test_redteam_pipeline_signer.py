"""Red team: a hostile host calling the Signer directly with authorizations that move exactly
the attested payment but are not the canonical form (real Verifier with a local quorum)."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard import Signer, Verifier
from agentguard._exceptions import IntentMismatch
from agentguard._intent import PaymentIntent
from agentguard._verifier import VerifiedAttestation
from agentguard.x402._wire import Requirement
from agentguard.x402.exact import client as exact_client
from agentguard.x402.upto import client as upto_client
from tests.unit.conftest import POLICY_CLIENT, Operators

OPERATORS = Operators([PrivateKey() for _ in range(3)])
SIGNER = Signer.from_key("0x" + "c3" * 32)
TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAYEE = "0x3333333333333333333333333333333333333333"
FACILITATOR = "0x5555555555555555555555555555555555555555"
LOOKALIKE = "0x000000000022D473030F116dDEE9F6B43aC78BA4"


def requirement(scheme: str) -> Requirement:
    extra = {"facilitatorAddress": FACILITATOR} if scheme == "upto" else {"name": "USD Coin", "version": "2"}  # fmt: skip
    return Requirement(
        x402_version=2, scheme=scheme, network="eip155:8453", amount=10_000, asset=TOKEN,
        pay_to=PAYEE, max_timeout_seconds=300, extra=extra, resource="http://shop.test/", raw={},
    )  # fmt: skip


def verified(scheme: str) -> VerifiedAttestation:
    intent = PaymentIntent(
        payer=SIGNER.address, scheme=scheme, network="eip155:8453", asset=TOKEN, amount=10_000,
        pay_to=PAYEE, resource="http://shop.test/", x402_version=2,
    )  # fmt: skip
    attestation = OPERATORS.attest(intent)  # type: ignore[arg-type]
    return Verifier(OPERATORS.addresses, policy_client=POLICY_CLIENT).verify(attestation, intent)


def permit2(v: VerifiedAttestation) -> dict[str, Any]:
    return upto_client.typed_data(requirement("upto"), SIGNER.address, deadline=v.expires_at)


def eip3009(v: VerifiedAttestation) -> dict[str, Any]:
    return exact_client.typed_data(
        requirement("exact"), SIGNER.address, now=int(time.time()), valid_before=v.expires_at
    )


def _domain(typed: dict[str, Any]) -> None:
    typed["domain"]["verifyingContract"] = LOOKALIKE


def _witness_type(typed: dict[str, Any]) -> None:
    typed["types"]["Witness"].append({"name": "memo", "type": "string"})
    typed["message"]["witness"]["memo"] = "x"


def _extra_field(typed: dict[str, Any]) -> None:
    primary = typed["types"]["TransferWithAuthorization"]
    primary.append({"name": "memo", "type": "string"})
    typed["message"]["memo"] = "x"


def _salt(typed: dict[str, Any]) -> None:
    typed["types"]["EIP712Domain"].append({"name": "salt", "type": "bytes32"})
    typed["domain"]["salt"] = "0x" + "11" * 32


@pytest.mark.parametrize(
    ("scheme", "build", "edit"),
    [
        ("upto", permit2, _domain),
        ("upto", permit2, _witness_type),
        ("exact", eip3009, _extra_field),
        ("exact", eip3009, _salt),
    ],
    ids=[
        "permit2-lookalike-domain",
        "permit2-extra-witness",
        "eip3009-extra-field",
        "eip3009-salt",
    ],
)
def test_only_the_canonical_authorization_is_signed(scheme: str, build: Any, edit: Any) -> None:
    """Before: ``sign_payment`` compared only token, payee, amount, payer and chain, so it signed
    a Permit2 message for a look-alike verifying contract, or with an extra witness field, and
    an EIP-3009 message with extra fields or domain salt (eth-account's generic encoder) — each
    a signature no attestation covers, valid for whichever contract accepts that shape. Now
    only the canonical EIP-3009 and Permit2 shapes are signed."""
    v = verified(scheme)
    typed = copy.deepcopy(build(v))
    edit(typed)
    with pytest.raises(IntentMismatch):
        SIGNER.sign_payment(v, typed, permit2_spenders=[upto_client.UPTO_PERMIT2_PROXY])
    # the refusal signed nothing, so the canonical authorization may still be signed once
    assert SIGNER.sign_payment(v, build(v), permit2_spenders=[upto_client.UPTO_PERMIT2_PROXY])
