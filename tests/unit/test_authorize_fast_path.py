"""Differential: the client's parse + verify of a gateway answer, fast paths on and off.

The fast paths (``with_policy_data``/``private_copy`` instead of pydantic's ``model_copy``, the
policy data text memo, the task id compared as text, the payment intent template memo in
``fresh_intent``) must accept and refuse exactly what the general path does, over valid and
hostile answers and intents: the same exception type and message, or equal attestations,
proofs and tickets.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest
from coincurve import PrivateKey

import agentguard._gateway as gateway
import agentguard._tickets as tickets
import agentguard._verifier as verifier
from agentguard._attestation import attestation_digest, operator_address, sign_attestation
from agentguard._eip712 import keccak
from agentguard._intent import PaymentIntent
from agentguard._json import strict_loads
from agentguard._tickets import Ticket
from agentguard._verifier import Verifier

CLIENT = "0x00000000000000000000000000000000000BE402"
OTHER_CLIENT = "0x00000000000000000000000000000000000BE403"
TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAYEE = "0x3333333333333333333333333333333333333333"
PAYER = "0x2da5bb0b8d1a3b7c5e5f8a1ac2f3d4b5e6f7a8b9"
KEYS = [PrivateKey(keccak(f"diff operator {i}".encode())) for i in range(4)]
OPERATORS = [operator_address(k) for k in KEYS[:3]]  # the fourth is a stranger
POLICY = keccak(b"diff policy")
NOW = 1_900_000_000


def _intent(amount: int = 10_000, network: str = "eip155:8453") -> PaymentIntent:
    return PaymentIntent(
        payer=PAYER, scheme="exact", network=network, asset=TOKEN, amount=amount,
        pay_to=PAYEE, resource="http://diff.test/paid", x402_version=2,
    )  # fmt: skip


def _data_hex(doc: Any) -> str:
    return "0x" + json.dumps(doc, separators=(",", ":")).encode().hex()


def _answer(
    rng: random.Random, intent: PaymentIntent, *, signers: list[int], chain: int = 8453
) -> dict[str, Any]:
    task = rng.randbytes(32)
    expires = NOW + 300
    digest = attestation_digest(
        chain_id=chain, policy_client=bytes.fromhex(CLIENT[2:]), task_id=task, policy_id=POLICY,
        intent_hash=intent.intent_hash, allow=True, expires_at=expires, tier=0,
    )  # fmt: skip
    task_hex = "0x" + task.hex()
    return {
        "task_id": task_hex,
        "status": "success",
        "operator_errors": [],
        "task_response": {
            "evaluation_result": "0x" + "00" * 31 + "01",
            "policy_task_data": {
                "policyData": [{"data": _data_hex({"params": {"cap": rng.choice(["1", "2"])}})}]
            },
        },
        "attestation": {
            "scheme": "ecdsa", "decision": "allow", "task_id": task_hex,
            "policy_id": "0x" + POLICY.hex(), "policy_client": CLIENT,
            "intent_hash": "0x" + intent.intent_hash.hex(), "expires_at": expires, "tier": 0,
            "signatures": [
                {"operator": OPERATORS[i].lower() if i < 3 else operator_address(KEYS[i]),
                 "signature": "0x" + sign_attestation(KEYS[i], digest).hex()}
                for i in signers
            ],
            "reasons": [],
        },
    }  # fmt: skip


def _mutate(rng: random.Random, doc: dict[str, Any], other: dict[str, Any]) -> str:
    """One hostile change to ``doc`` (in place); returns the answer as JSON text (some
    changes exist only as text: duplicate keys)."""
    att, response = doc["attestation"], doc["task_response"]
    choice = rng.randrange(30)
    if choice == 0:
        att["decision"] = rng.choice(["deny", "approval_required", "ALLOW", 1])
        if rng.random() < 0.7:  # the evaluation agrees (else the answer contradicts itself)
            response["evaluation_result"] = "0x" + "00" * 32
    elif choice == 1:
        att["task_id"] = other["attestation"]["task_id"]
    elif choice == 2:
        doc["task_id"] = rng.choice([other["task_id"], doc["task_id"].upper(), 7, "0x12"])
    elif choice == 3:
        doc["task_id"] = list(bytes.fromhex(doc["task_id"][2:]))
    elif choice == 4:
        att["policy_id"] = "0x" + keccak(b"other").hex()
    elif choice == 5:
        att["policy_client"] = rng.choice([OTHER_CLIENT, CLIENT.lower(), CLIENT[:-1] + "e"])
    elif choice == 6:
        att["intent_hash"] = "0x" + keccak(b"wrong").hex()
    elif choice == 7:
        att["expires_at"] = rng.choice([NOW - 1, NOW, NOW + 10**6, "60", True, -1, 2**64])
    elif choice == 8:
        att["tier"] = rng.choice([1, 2, 3, 300, "0", None])
    elif choice == 9:
        att["scheme"] = rng.choice(["newton-bls", "ECDSA", None])
    elif choice == 10:  # swapped signatures
        att["signatures"] = copy.deepcopy(other["attestation"]["signatures"])
    elif choice == 11:  # one operator twice
        att["signatures"] = [att["signatures"][0], copy.deepcopy(att["signatures"][0])]
    elif choice == 12:
        att["signatures"] = att["signatures"][:1]
    elif choice == 13:
        sig = att["signatures"][0]
        sig["signature"] = sig["signature"][: rng.choice([10, 130, 132])]
    elif choice == 14:  # v = 0 / 1, or a flipped byte
        sig = att["signatures"][rng.randrange(len(att["signatures"]))]
        raw = bytearray.fromhex(sig["signature"][2:])
        raw[rng.choice([64, 5, 40])] ^= rng.choice([27, 1])
        sig["signature"] = "0x" + raw.hex()
    elif choice == 15:
        att["extra"] = "x"
        doc["extra"] = {"a": 1}
    elif choice == 16:
        del att[rng.choice(["decision", "task_id", "policy_id", "policy_client", "intent_hash"])]
    elif choice == 17:
        del att[rng.choice(["expires_at", "signatures", "tier", "scheme", "reasons"])]
    elif choice == 18:
        entry = response["policy_task_data"]["policyData"][0]
        entry["data"] = rng.choice(
            ["0xzz", "0x" + b"[1]".hex(), "0x" + b'{"a":1,"a":2}'.hex(), 5, None,
             _data_hex({"params": {"cap": "1"}}).upper().replace("0X", "0x"), "", "0x"]
        )  # fmt: skip
    elif choice == 19:
        response["policy_task_data"]["policyData"].append({"data": "0x"})
    elif choice == 20:
        response["evaluation_result"] = "0x" + "00" * 32
    elif choice == 21:
        doc["status"] = rng.choice(["failed", "pending", None])
    elif choice == 22:
        att["signatures"].append(copy.deepcopy(other["attestation"]["signatures"][0]))
    elif choice == 23:
        att["operator_errors"] = [{"x": 1}]
        doc["operator_errors"] = [{"operator": "0x1", "error": "boom"}, 3]
    elif choice == 24:  # a duplicate key in the answer's JSON text
        text = json.dumps(doc)
        return text.replace('"status": "success"', '"status": "success", "status": "success"')
    elif choice == 25:
        att["task_id"] = list(bytes.fromhex(att["task_id"][2:]))
    elif choice == 26:
        att["reasons"] = rng.choice([["r"], "r", [1]])
    elif choice == 27:
        doc["task_response"] = rng.choice([None, [], {"policy_task_data": 1}])
    elif choice == 28:
        del doc["task_id"]
    # 29: unchanged
    return json.dumps(doc)


def _hostile_intent(rng: random.Random, intent: PaymentIntent) -> object:
    choice = rng.randrange(12)
    if choice == 0:
        return _intent(amount=10_001)
    if choice == 1:
        return _intent(network="eip155:1")
    if choice == 2:  # a field changed behind the frozen model, the cached hash kept
        fake = _intent()
        _ = fake.intent_hash
        object.__setattr__(fake, "amount", 99)
        return fake
    if choice == 3:  # a field of another type, equal in value
        fake = _intent()
        object.__setattr__(fake, "amount", rng.choice(["10000", True, 10_000.0]))
        return fake
    if choice == 4:  # a cached hash of the caller's choosing
        fake = _intent(amount=5)
        fake.__dict__["intent_hash"] = intent.intent_hash
        return fake
    if choice == 5:
        fake = _intent()
        object.__setattr__(fake, "payer", PAYER.upper().replace("0X", "0x"))
        return fake
    if choice == 6:
        fake = _intent()
        object.__setattr__(fake, "network", "eip155:0")
        return fake
    if choice == 7:
        return intent.newton_intent()
    return _intent()  # an equal, separately built intent (the usual case)


def _run(text: str, intent: object, fast: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The outcome of parse + verify, with the fast paths on or off, as comparable data."""
    issued: list[Ticket] = []
    with monkeypatch.context() as m:
        m.setattr(verifier, "issue", lambda ticket, now: issued.append(ticket))
        if not fast:
            m.setattr(gateway, "_policy_text_memo", gateway._policy_text)
            m.setattr(gateway, "_same_text", lambda *_: False)
            m.setattr(
                gateway, "with_policy_data", lambda a, d: a.model_copy(update={"policy_data": d})
            )
            m.setattr(verifier, "private_copy", lambda a: a.model_copy())
            m.setattr(tickets, "_plain", lambda _: False)
        try:
            att = gateway._parse_task(strict_loads(text), CLIENT)
        except Exception as exc:
            return ("parse", type(exc).__name__, str(exc))
        parsed = (att, att.model_fields_set, att.policy_data)
        check = Verifier(OPERATORS, policy_client=CLIENT, threshold=2, clock=lambda: NOW)
        try:
            proof = check.verify(att, intent)  # type: ignore[arg-type]
        except Exception as exc:
            return ("verify", parsed, type(exc).__name__, str(exc))
    (ticket,) = issued
    return (
        "ok", parsed, proof.signers, proof.assurance, proof.expires_at,
        proof.attestation is att, proof.intent is intent,
        ticket.attestation, ticket.attestation is not att, ticket.intent_hash,
        ticket.intent.__dict__.get("intent_hash"), ticket.intent.intent_hash,
        tickets._fields(ticket.intent, type(ticket.intent)), type(ticket.intent),
        ticket.intent is not intent,
    )  # fmt: skip


def test_fast_and_general_paths_decide_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(1311)
    intent = _intent()
    outcomes: set[str] = set()
    for i in range(600):
        signers = rng.choice([[0, 1], [1, 2], [0, 1, 2], [2, 0], [0, 3], [0]])
        chain = 8453 if rng.random() < 0.9 else 1
        doc = _answer(rng, intent, signers=signers, chain=chain)
        other = _answer(rng, _intent(amount=7), signers=[0, 1])
        text = json.dumps(doc) if i % 4 == 0 else _mutate(rng, doc, other)
        used = intent if rng.random() < 0.6 else _hostile_intent(rng, intent)
        fast = _run(text, used, True, monkeypatch)
        general = _run(text, used, False, monkeypatch)
        assert fast == general, (i, text[:300])
        outcomes.add(fast[0] if fast[0] == "ok" else f"{fast[0]}:{fast[-2]}")
    # the inputs reached acceptance and many distinct refusals
    assert "ok" in outcomes
    for expected in (
        "verify:IntentMismatch", "verify:UnknownOperator", "verify:DuplicateSignature",
        "verify:InsufficientQuorum", "verify:AttestationExpired", "parse:MalformedAttestation",
        "parse:GatewayProtocolError", "verify:PolicyDenied", "verify:ApprovalRequired",
    ):  # fmt: skip
        assert expected in outcomes, (expected, sorted(outcomes))


def test_fresh_payment_intent_is_a_private_copy_hashed_from_its_fields() -> None:
    intent = _intent()
    first, second = tickets.fresh_intent(intent), tickets.fresh_intent(intent)
    assert first is not intent and first is not second
    assert first.__dict__ is not second.__dict__
    assert first == intent and first.intent_hash == intent.intent_hash
    object.__setattr__(first, "amount", 1)  # altering one copy alters no other
    again = tickets.fresh_intent(intent)
    assert isinstance(again, PaymentIntent) and again.amount == 10_000
    forged = _intent(amount=5)
    forged.__dict__["intent_hash"] = intent.intent_hash  # a cached hash never carries over
    assert tickets.fresh_intent(forged).intent_hash == _intent(amount=5).intent_hash
    assert tickets.fresh_intent(forged).intent_hash != intent.intent_hash


def test_private_copy_and_with_policy_data_equal_model_copy() -> None:
    rng = random.Random(5)
    text = json.dumps(_answer(rng, _intent(), signers=[0, 1]))
    att = gateway._parse_task(strict_loads(text), CLIENT)
    from agentguard._attestation import private_copy, with_policy_data

    for ours, theirs in (
        (private_copy(att), att.model_copy()),
        (with_policy_data(att, '{"a":1}'), att.model_copy(update={"policy_data": '{"a":1}'})),
    ):
        assert ours == theirs and ours is not att
        assert ours.__dict__ == theirs.__dict__ and ours.__dict__ is not att.__dict__
        assert ours.model_fields_set == theirs.model_fields_set
        assert ours.model_fields_set is not att.model_fields_set
    assert att.policy_data is not None and json.loads(att.policy_data)["params"]["cap"] in "12"


class _Text(str):
    """A str whose equality lies (it must never reach, or be answered by, the memo)."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0


def test_address_memo_judges_as_the_checks_do() -> None:
    from agentguard._attestation import _address, _address_checked

    rng = random.Random(7)
    good = [operator_address(k) for k in KEYS] + [CLIENT, PAYEE, TOKEN]
    values: list[object] = []
    for _ in range(400):
        base = rng.choice(good)
        values.append(
            rng.choice(
                [
                    base, base.lower(), base.upper().replace("0X", "0x"), base[:-1],
                    base + "\n", base[:-1] + rng.choice("gG0aA"), "0X" + base[2:],
                    base[:5] + base[5].swapcase() + base[6:], _Text(base), _Text("junk" * 10 + "xy"),
                    None, 42, b"0x" + base[2:].encode(),
                ]
            )
        )  # fmt: skip
    for value in values * 2:  # twice: the second time from the memo
        outcomes = []
        for judge in (_address, _address_checked):
            try:
                outcomes.append(("ok", judge(value, "operator")))
            except ValueError as exc:
                outcomes.append(("refused", str(exc)))
        assert outcomes[0] == outcomes[1], value
        assert outcomes[0][0] == "refused" or type(outcomes[0][1]) is type(value)
