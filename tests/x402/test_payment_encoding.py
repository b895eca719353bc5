"""The payment header joined from JSON encoded once per parsed answer (``Requirement.raw_json``,
``PaymentRequired.resource_json``) against encoding the whole document (the path it replaced,
still ``PaymentPort._document``): byte for byte the same header for seeded random v2 answers
with hostile text (escapes, non-ASCII, nesting, big numbers) in what the server sent, with and
without a resource and a ``payment-identifier`` extension; requirements built by hand or copied
with other values (``dataclasses.replace``) encode their own JSON."""

from __future__ import annotations

import base64
import json
import random
import time
from dataclasses import replace
from typing import Any

from agentguard._intent import PaymentIntent
from agentguard.x402._payment import PAYMENT_IDENTIFIER, PaymentPort
from agentguard.x402._select import Allowances, select
from agentguard.x402._wire import encode_header, parse_v2_header

from .fakes import PAYEE
from .test_eip3009_signing import OPERATORS, SIGNERS, VERIFIER

TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
SIGNER = SIGNERS[0]
TEXTS = ["", "USD Coin", 'quote " and \\ back', "\u00e9t\u00e9 \u20ac \U0001f600", "\x00\x1f\x7f",
         "</script>", "\u2028\u2029", "x" * 300]  # fmt: skip


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return rng.choice(TEXTS)
    if kind == 1:
        return rng.choice([0, -1, 2**255, 10**30, 1.5, -0.0, 1e-7])
    if kind == 2:
        return rng.choice([True, False, None])
    if kind in (3, 4):
        return rng.choice(TEXTS) + str(rng.randrange(100))
    if kind == 5:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {rng.choice(TEXTS) + str(i): _value(rng, depth + 1) for i in range(rng.randrange(4))}


def _answer(rng: random.Random) -> str:
    url = "http://shop.test/" + rng.choice(["paid", "caf\u00e9", "a?b=1&c=\u20ac"])
    extra: dict[str, Any] = {"name": rng.choice(TEXTS[1:4]), "version": "2"}
    for i in range(rng.randrange(3)):
        extra[f"k{i}{rng.choice(TEXTS)}"] = _value(rng)
    requirement = {
        "scheme": "exact", "network": "eip155:8453", "asset": TOKEN,
        "amount": str(rng.randrange(1, 10**6)), "payTo": PAYEE,
        "maxTimeoutSeconds": rng.choice([60, 300]), "extra": extra,
    }  # fmt: skip
    if rng.random() < 0.5:
        requirement["unknownField"] = _value(rng)
    document: dict[str, Any] = {"x402Version": 2, "accepts": [requirement]}
    if rng.random() < 0.8:
        document["resource"] = {"url": url, "description": rng.choice(TEXTS), "mimeType": ""}
        if rng.random() < 0.5:
            document["resource"]["more"] = _value(rng)
    if rng.random() < 0.5:
        declared: dict[str, Any] = {"required": rng.random() < 0.5}
        if rng.random() < 0.5:
            declared["info"] = rng.choice([{"x": _value(rng)}, "not an object", None])
        document["extensions"] = {PAYMENT_IDENTIFIER: declared, "other": _value(rng)}
    if rng.random() < 0.3:
        document["error"] = rng.choice(TEXTS)
    return encode_header(document)


def _signed(required: Any, req: Any) -> tuple[PaymentPort, Any, str | None, dict[str, Any]]:
    now = int(time.time())
    port = PaymentPort(
        signer=SIGNER, payer=SIGNER.address, vault=None, required=required, req=req,
        permit2_spenders=(), clock=lambda: now,
    )  # fmt: skip
    intent = PaymentIntent(
        payer=SIGNER.address, scheme="exact", network=req.network, asset=req.asset,
        amount=req.amount, pay_to=req.pay_to, resource=req.resource, x402_version=2,
    )  # fmt: skip
    verified = VERIFIER.verify(OPERATORS.attest(intent, expires_at=now + 120), intent)  # type: ignore[arg-type]
    signed = port.sign(verified, port.prepare(verified))
    payment = signed.payload
    sent = json.loads(base64.b64decode(payment.value))
    return port, payment, payment.payment_id, sent["payload"]


def test_the_joined_header_is_the_encoded_document() -> None:
    rng = random.Random(402)
    joined = with_id = 0
    for _ in range(250):
        header = _answer(rng)
        required = parse_v2_header(header)
        req = select(required, Allowances({TOKEN: 10**6}))
        assert req.raw_json is not None
        port, payment, payment_id, inner = _signed(required, req)
        assert payment.value == encode_header(port._document(inner, payment_id))
        joined += 1
        with_id += payment_id is not None
    assert joined == 250 and 50 < with_id < 200


def test_requirements_built_by_hand_send_their_own_json() -> None:
    """A requirement or answer built by hand, or copied with another ``raw`` / ``resource``
    (``dataclasses.replace``), encodes its own JSON: the header says what it says."""
    rng = random.Random(7)
    for _ in range(40):
        header = _answer(rng)
        parsed = parse_v2_header(header)
        chosen = select(parsed, Allowances({TOKEN: 10**6}))
        raw = {**chosen.raw, "amount": str(chosen.amount + 1), "added": _value(rng)}
        req = replace(chosen, amount=chosen.amount + 1, raw=raw)
        resource = rng.choice([None, {"url": "http://other.test/" + rng.choice(TEXTS)}])
        required = replace(parsed, resource=resource, accepts=(req,))
        assert req.raw_json == json.dumps(raw, separators=(",", ":"))
        port, payment, payment_id, inner = _signed(required, req)
        assert payment.value == encode_header(port._document(inner, payment_id))
        sent = json.loads(base64.b64decode(payment.value))
        assert sent["accepted"] == raw and sent.get("resource") == resource


def test_requirements_that_are_not_json_fail_as_the_document_does() -> None:
    parsed = parse_v2_header(_answer(random.Random(8)))
    req = replace(select(parsed, Allowances({TOKEN: 10**6})), raw={"amount": {1, 2}})
    assert req.raw_json is None
    try:
        _signed(replace(parsed, accepts=(req,)), req)
    except TypeError as exc:
        assert "set is not JSON serializable" in str(exc)
    else:
        raise AssertionError("a set was encoded")
