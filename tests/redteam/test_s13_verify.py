"""Red team for session 13's client verify fast paths (``private_copy``, ``with_policy_data``,
the policy data / address / payment template memos, the task id compared as text).

The fast paths decide as the general ones did; what they share with them is the hole: a
verifier's "private copy" copied every ``__dict__`` entry of the caller's attestation, whatever
its type. A host in the SDK's process could so (1) shadow ``digest_for`` with an instance
attribute, (2) give ``task_id`` a ``bytes`` subclass whose ``__eq__``/``__hash__`` defeat the
replay guard and the ticket registry (through the constructor alone), (3) give
``policy_client`` a ``str`` subclass whose ``lower()`` names this client while the digest reads
another's, (4) give ``expires_at`` an ``int`` subclass that is never "expired". Each made a
quorum's signature authorize something it did not sign. Now refused.
"""

from __future__ import annotations

import json
import random
import threading
from typing import Any

import pytest

import agentguard._attestation as attestation_mod
import agentguard._gateway as gateway
import agentguard._tickets as tickets
from agentguard._attestation import Attestation, attestation_digest, sign_attestation
from agentguard._exceptions import AttestationReplayed, VerificationError
from agentguard._intent import PaymentIntent
from agentguard._json import strict_loads
from agentguard._verifier import Verifier
from tests.unit.test_authorize_fast_path import (
    CLIENT,
    KEYS,
    NOW,
    OPERATORS,
    OTHER_CLIENT,
    POLICY,
    _answer,
    _intent,
)


def _parsed(rng: random.Random, intent: PaymentIntent, client: str = CLIENT) -> Attestation:
    doc = _answer(rng, intent, signers=[0, 1])
    if client != CLIENT:  # signed for another policy client
        att = doc["attestation"]
        att["policy_client"] = client
        digest = attestation_digest(
            chain_id=8453, policy_client=bytes.fromhex(client[2:]),
            task_id=bytes.fromhex(att["task_id"][2:]), policy_id=POLICY,
            intent_hash=intent.intent_hash, allow=True, expires_at=att["expires_at"], tier=0,
        )  # fmt: skip
        att["signatures"] = [
            {"operator": OPERATORS[i], "signature": "0x" + sign_attestation(KEYS[i], digest).hex()}
            for i in (0, 1)
        ]
    return gateway._parse_task(strict_loads(json.dumps(doc)), client)


def _verifier(now: int = NOW) -> Verifier:
    return Verifier(OPERATORS, policy_client=CLIENT, threshold=2, clock=lambda: now)


def _fields(att: Attestation) -> dict[str, Any]:
    return {name: getattr(att, name) for name in Attestation.model_fields}


class _IdBytes(bytes):
    """Equal only to itself: each copy is a "new" task id to a dict, the same to a digest."""

    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other


class _ThisClient(str):
    def lower(self) -> str:  # type: ignore[override]
        return CLIENT.lower()


class _NeverExpired(int):
    """Compares as unexpired against any clock reading; its digest word is its true value."""

    def __le__(self, other: object) -> bool:
        return False if _clock_like(other) else int(self) <= other  # type: ignore[operator]

    def __gt__(self, other: object) -> bool:
        return False if _clock_like(other) else int(self) > other  # type: ignore[operator]


def _clock_like(value: object) -> bool:
    return isinstance(value, int | float) and 10**9 < value < 10**12


def test_a_method_shadowed_in_the_instance_dict_is_refused() -> None:
    rng = random.Random(1)
    signed, wanted = _intent(amount=7), _intent(amount=10**9)
    att = _parsed(rng, signed)
    real = att.digest_for(signed.intent_hash, 8453)
    forged = att.model_copy(
        update={"intent_hash": wanted.intent_hash, "task_id": rng.randbytes(32)}
    )
    forged.__dict__["digest_for"] = lambda _h, _c: real  # what the operators did sign
    with pytest.raises(VerificationError):
        _verifier().verify(forged, wanted)


def test_a_bytes_subclass_task_id_does_not_make_one_attestation_many_tickets() -> None:
    rng = random.Random(2)
    intent = _intent(amount=11)
    att = _parsed(rng, intent)
    check = _verifier()
    built = Attestation(**{**_fields(att), "task_id": _IdBytes(att.task_id)})  # no setattr
    altered = att.model_copy()
    object.__setattr__(altered, "task_id", _IdBytes(att.task_id))
    redeemed = 0
    for given in (att, built, altered):
        try:
            check.verify(given, intent)
            tickets.redeem(given, intent, NOW)
            redeemed += 1
        except (AttestationReplayed, VerificationError):
            pass
    assert redeemed == 1


def _subclass(value: Any) -> Any:
    return type("Sub", (type(value),), {})(value)


@pytest.mark.parametrize(
    ("field", "make", "client", "later"),
    [
        # another client's attestation: lower() names this client, the digest reads its own
        ("policy_client", _ThisClient, OTHER_CLIENT, 0),
        # an expired attestation: unexpired to every clock, its own value to the digest
        ("expires_at", _NeverExpired, CLIENT, 10_000),
        ("decision", _subclass, CLIENT, 0),
        ("scheme", _subclass, CLIENT, 0),
        ("tier", lambda _: True, CLIENT, 0),  # tier 1 to a digest, a bool to a lookup
        ("signatures", list, CLIENT, 0),
        ("policy_id", bytearray, CLIENT, 0),
    ],
)
def test_a_field_of_another_type_is_refused_before_it_is_judged(
    field: str, make: Any, client: str, later: int
) -> None:
    rng = random.Random(field)
    intent = _intent(amount=12)
    att = _parsed(rng, intent, client=client)
    object.__setattr__(att, field, make(getattr(att, field)))
    with pytest.raises(VerificationError):
        _verifier(now=NOW + later).verify(att, intent)


def test_an_honest_bytes_subclass_in_the_constructor_still_verifies_once() -> None:
    class Hex(bytes):  # as web3's HexBytes: a bytes subclass with no lies
        pass

    rng = random.Random(6)
    intent = _intent(amount=15)
    att = _parsed(rng, intent)
    built = Attestation(**{**_fields(att), "task_id": Hex(att.task_id), "policy_id": Hex(POLICY)})
    assert type(built.task_id) is bytes and type(built.policy_id) is bytes
    proof = _verifier().verify(built, intent)
    assert proof.attestation is built
    with pytest.raises(AttestationReplayed):  # its task id is the plain one's
        _verifier().verify(att, intent)


def test_memos_stay_bounded_under_a_flood_of_distinct_values() -> None:
    for i in range(3000):
        gateway._policy_data({"policy_task_data": {"policyData": [{"data": f"0x{i:064x}"}]}})
        attestation_mod._address(f"0x{i:040x}", "operator")
    assert gateway._policy_text_memo.cache_info().currsize <= 32
    assert attestation_mod._address_ok.cache_info().currsize <= 1024
    assert tickets._payment_template.cache_info().maxsize == 1024


@pytest.mark.parametrize(
    ("field", "value"),
    [("amount", True), ("amount", "10000"), ("amount", "010000"), ("x402_version", True),
     ("pay_to", "0x3333333333333333333333333333333333333333".upper().replace("0X", "0x")),
     ("payer", b"\x2d" * 20), ("network", "base")],
)  # fmt: skip
def test_template_memo_never_answers_for_a_value_of_another_type(field: str, value: Any) -> None:
    """Warm the memo with the plain intent, then the same fields with one value of another
    type or spelling: the fast path gives the general path's answer (intent or refusal)."""
    tickets.fresh_intent(_intent())
    fake = _intent()
    object.__setattr__(fake, field, value)

    def outcome(fast: bool) -> Any:
        saved = tickets._plain
        if not fast:
            tickets._plain = lambda _: False  # type: ignore[assignment]
        try:
            fresh = tickets.fresh_intent(fake)
            return (type(fresh), fresh.model_dump(), fresh.intent_hash)
        except VerificationError as exc:
            return (type(exc), str(exc))
        finally:
            tickets._plain = saved

    assert outcome(True) == outcome(False) == outcome(True)


def test_fresh_intent_under_a_racing_mutator_hashes_what_it_holds() -> None:
    intent = _intent()
    stop = threading.Event()

    def mutate() -> None:
        i = 0
        while not stop.is_set():
            object.__setattr__(intent, "amount", 10_000 + i % 3)
            object.__setattr__(intent, "pay_to", OPERATORS[i % 3])
            i += 1

    worker = threading.Thread(target=mutate)
    worker.start()
    try:
        for _ in range(3000):
            fresh = tickets.fresh_intent(intent)
            rebuilt = PaymentIntent.model_validate(fresh.model_dump())
            assert fresh.intent_hash == rebuilt.intent_hash
    finally:
        stop.set()
        worker.join()
