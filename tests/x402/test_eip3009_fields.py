"""``Signer.sign_eip3009`` (the authorization's fields, as ``PaymentPort`` passes them) against
``Signer.sign_payment`` of the typed data those fields make (the path it replaced): the same
signature, the same refusal, and the attestation used up (or handed back) alike, for seeded
random authorizations, field values a server or a buggy caller could put there, and attestations
for another payer or for a transaction."""

from __future__ import annotations

import random
from typing import Any

from eth_account import Account

from agentguard import Signer
from agentguard._exceptions import AgentGuardError
from agentguard._intent import PaymentIntent, TransactionIntent
from agentguard._signer import eip3009_typed_data
from agentguard._verifier import VerifiedAttestation
from agentguard.x402._wire import encode_header

from .fakes import PAYEE, STRANGER
from .test_eip3009_signing import ACCOUNTS, OPERATORS, SIGNERS, VERIFIER, _case, _Flip, _mutations

FIELDS = ("name", "version", "chain_id", "token", "payer", "to", "value", "valid_after",
          "valid_before", "nonce")  # fmt: skip


def _fields(typed: dict[str, Any]) -> dict[str, Any]:
    domain, message = typed["domain"], typed["message"]
    values = (
        domain.get("name"), domain.get("version"), domain.get("chainId"),
        domain.get("verifyingContract"), message.get("from"), message.get("to"),
        message.get("value"), message.get("validAfter"), message.get("validBefore"),
        message.get("nonce"),
    )  # fmt: skip
    return dict(zip(FIELDS, values, strict=True))


def _verified(intent: Any, expires: int) -> VerifiedAttestation:
    return VERIFIER.verify(OPERATORS.attest(intent, expires_at=expires), intent)  # type: ignore[no-any-return]


def _verdict(sign: Any, verified: VerifiedAttestation) -> object:
    """The signature, or the refusal's type and text (its own task id written ``<task>``)."""
    _Flip.reads = 0
    try:
        return sign()
    except AgentGuardError as exc:
        return (type(exc).__name__, exc.message.replace(verified.task_id, "<task>"))


def _both(
    signer: Signer, intent: Any, expires: int, fields: dict[str, Any], good: dict[str, Any]
) -> tuple[object, object]:
    """Each path on its own attestation of ``intent``; then, on the same attestation, the good
    authorization: signed if the first call refused (handed back), refused if it signed."""
    new, old = _verified(intent, expires), _verified(intent, expires)
    ours = _verdict(lambda: signer.sign_eip3009(new, **fields), new)
    theirs = _verdict(lambda: signer.sign_payment(old, eip3009_typed_data(*fields.values())), old)
    again_new = _verdict(lambda: signer.sign_eip3009(new, **good), new)
    again_old = _verdict(lambda: signer.sign_payment(old, eip3009_typed_data(*good.values())), old)
    assert type(again_new) is type(again_old)
    if isinstance(again_new, tuple):
        assert again_new == again_old
    return ours, theirs


def test_the_same_signature_as_sign_payment_and_eth_account_on_random_authorizations() -> None:
    rng = random.Random(3010)
    for _ in range(300):
        who, intent, typed, expires = _case(rng)
        signer, fields = SIGNERS[who], _fields(typed)
        ours, theirs = _both(signer, intent, expires, fields, fields)
        assert ours == theirs == bytes(ACCOUNTS[who].sign_typed_data(full_message=typed).signature)


def _hostile(rng: random.Random, fields: dict[str, Any]) -> dict[str, Any]:
    f = dict(fields)
    choice = rng.randrange(14)
    if choice == 0:
        f["to"] = STRANGER
    elif choice == 1:
        f["value"] = rng.choice([f["value"] + 1, str(f["value"]), True, float(f["value"]), -1])
    elif choice == 2:
        f["token"] = rng.choice([STRANGER, f["token"][2:], "0x" + "zz" * 20, 5])
    elif choice == 3:
        f["chain_id"] = rng.choice([f["chain_id"] + 1, str(f["chain_id"]), None])
    elif choice == 4:
        f["payer"] = rng.choice([STRANGER, f["payer"].upper(), b"\x00" * 20])
    elif choice == 5:
        f["nonce"] = rng.choice(
            [f["nonce"][:-1], bytes.fromhex(f["nonce"][2:]), f["nonce"].upper(), "0x" + "g" * 64]
        )
    elif choice == 6:
        f["valid_before"] = rng.choice([f["valid_before"] + 10_000, -1, True, 2**256])
    elif choice == 7:
        f["valid_after"] = rng.choice([f["valid_after"] + 3600 * 24, -1, 1.0])
    elif choice == 8:
        f["name"] = rng.choice(["\ud800", None, 7, "x" * 500])
    elif choice == 9:
        f["version"] = rng.choice(["\udfff", b"2", None])
    elif choice == 10:
        f["to"] = _Flip(PAYEE)
    elif choice == 11:
        f["to"] = rng.choice([PAYEE.lower().replace("0x", "0X"), " " + PAYEE, PAYEE + "\n"])
    elif choice == 12:
        f["value"] = 2**256
    else:  # a typed-data mutation, as far as it changes a field
        f = _fields(_mutations(rng, eip3009_typed_data(*fields.values())))
    return f


def test_hostile_fields_get_sign_payments_verdict() -> None:
    rng = random.Random(12)
    refused = signed = 0
    for _ in range(400):
        who, intent, typed, expires = _case(rng)
        good = _fields(typed)
        fields = _hostile(rng, good)
        ours, theirs = _both(SIGNERS[who], intent, expires, fields, good)
        assert ours == theirs, fields
        refused += isinstance(ours, tuple)
        signed += isinstance(ours, bytes)
    assert refused > 250 and signed > 10  # most are refused, by both; some are still exact


def test_attestations_sign_payment_refuses_are_refused_alike() -> None:
    """Another payer's payment, a transaction's attestation, a wrong assurance all take the
    general path's refusal."""
    rng = random.Random(13)
    who, intent, typed, expires = _case(rng)
    fields = _fields(typed)
    other = SIGNERS[(who + 1) % len(SIGNERS)]
    ours, theirs = _both(other, intent, expires, fields, fields)
    assert ours == theirs and isinstance(ours, tuple) and ours[0] == "IntentMismatch"
    tx = TransactionIntent(from_=SIGNERS[who].address, chain_id=8453, to=PAYEE, value=1, data="0x")
    signer = SIGNERS[who]
    new, old = _verified(tx, expires), _verified(tx, expires)
    ours = _verdict(lambda: signer.sign_eip3009(new, **fields), new)
    theirs = _verdict(lambda: signer.sign_payment(old, eip3009_typed_data(*fields.values())), old)
    assert ours == theirs and isinstance(ours, tuple)


def test_one_signature_per_attestation() -> None:
    rng = random.Random(14)
    who, intent, typed, expires = _case(rng)
    verified = _verified(intent, expires)
    fields = _fields(typed)
    assert SIGNERS[who].sign_eip3009(verified, **fields)
    again = _verdict(lambda: SIGNERS[who].sign_eip3009(verified, **fields), verified)
    assert again == (
        "AttestationReplayed",
        "attestation <task> was already used for a signature (one per attestation)",
    )


def test_the_port_signs_what_it_signed_before() -> None:
    """``PaymentPort`` now passes fields: the header it sends is byte for byte the one the
    typed-data path made (deterministic signatures, the same document)."""
    import time

    from agentguard.x402._payment import PaymentPort
    from agentguard.x402._select import Allowances, select
    from agentguard.x402._wire import parse_v2_header

    signer = SIGNERS[0]
    token = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
    requirement = {
        "scheme": "exact", "network": "eip155:8453", "asset": token, "amount": "10000",
        "payTo": PAYEE, "maxTimeoutSeconds": 300, "extra": {"name": "USD Coin", "version": "2"},
    }  # fmt: skip
    required = parse_v2_header(
        encode_header({"x402Version": 2, "accepts": [requirement], "resource": {"url": "u"}})
    )
    req = select(required, Allowances({token: 10**6}))
    now = int(time.time())
    port = PaymentPort(
        signer=signer, payer=signer.address, vault=None, required=required, req=req,
        permit2_spenders=(), clock=lambda: now,
    )  # fmt: skip
    intent = PaymentIntent(
        payer=signer.address, scheme="exact", network="eip155:8453", asset=token,
        amount=10000, pay_to=PAYEE, resource="u",
    )  # fmt: skip
    verified = _verified(intent, now + 120)
    prepared = port.prepare(verified)
    typed = prepared.payload
    signed = port.sign(verified, prepared)
    want = bytes(Account.from_key(b"\x01" * 32).sign_typed_data(full_message=typed).signature)
    assert signed.payload.value == encode_header(
        {
            "x402Version": 2,
            "resource": {"url": "u"},
            "accepted": requirement,
            "payload": {
                "signature": "0x" + want.hex(),
                "authorization": {
                    k: str(v)
                    for k, v in typed["message"].items()  # type: ignore[index]
                },
            },
        }
    )
