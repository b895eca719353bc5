"""The payment intent's direct paths held equal to the model's:

* ``PaymentIntent.from_fields`` (validated without pydantic when every field is plain) gives
  exactly ``model_validate``'s intent (fields, fields set, hash, wire) or its ``IntentError``,
  on seeded random and hostile fields;
* ``fresh_intent`` of an intent whose fields were edited behind the frozen model's back gives
  what rebuilding it through the model gives;
* a ticket's redemption that skips the rebuild of plain equal fields gives the same ticket or
  the same error as the rebuild (forced by patching the shortcut off).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest

import agentguard._tickets as tickets
from agentguard._exceptions import IntentError, IntentMismatch
from agentguard._intent import PaymentIntent
from agentguard._tickets import Ticket, _Registry, fresh_intent

from .conftest import Operators

PAYER = "0xb5b5B5b5B5b5B5B5B5B5B5b5B5B5B5b5B5B5b5b5"
TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAYEE = "0x3333333333333333333333333333333333333333"


class Text(str):
    """Equal to its text, but not exactly a ``str``."""


class Number(enum.IntEnum):
    ONE = 1
    TWO = 2
    BIG = 10_000


class Sly:
    """Equal to everything."""

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__


ADDRESSES: list[Any] = [
    PAYER, PAYER.lower(), "0x" + PAYER[2:].upper(), TOKEN, TOKEN.lower(), PAYEE,
    TOKEN[:-1] + "3",  # wrong checksum
    TOKEN[:-2], "0x" + "g" * 40, TOKEN + "\n", bytes(20), b"\x33" * 20, b"\x01" * 19,
    Text(TOKEN), None, 7, Sly(),
]  # fmt: skip
SCHEMES: list[Any] = ["exact", "upto", "EXACT", "", Text("exact"), 1, None]
NETWORKS: list[Any] = [
    "eip155:8453", "eip155:84532", "base", "base-sepolia", "ethereum", "sepolia", "eip155:0",
    "eip155:", "eip155:0x1", "eip155:1" + "0" * 20, "eip155:9" + "9" * 19, "eip155:00",
    "eip155:٣", "solana", "", Text("base"), 8453, b"base", None,
]  # fmt: skip
AMOUNTS: list[Any] = [
    1, 10_000, 2**256 - 1, 2**256, 0, -1, "10000", "0", " 1", "1e3", "0x10", "٣", "9" * 78,
    "9" * 79, True, 1.0, Number.BIG, Text("5"), None, Sly(),
]  # fmt: skip
RESOURCES: list[Any] = [
    "",
    "http://bench.test/paid",
    "x" * 2048,
    "x" * 2049,
    Text("r"),
    b"r",
    None,
    5,
]
VERSIONS: list[Any] = [1, 2, 0, 3, True, "2", 2.0, Number.TWO, None]
NAMES = ("payer", "scheme", "network", "asset", "amount", "pay_to", "resource", "x402_version")
POOLS: dict[str, list[Any]] = {
    "payer": ADDRESSES, "scheme": SCHEMES, "network": NETWORKS, "asset": ADDRESSES,
    "amount": AMOUNTS, "pay_to": ADDRESSES, "resource": RESOURCES, "x402_version": VERSIONS,
}  # fmt: skip
GOOD: dict[str, Any] = {
    "payer": PAYER, "scheme": "exact", "network": "eip155:8453", "asset": TOKEN,
    "amount": 10_000, "pay_to": PAYEE, "resource": "http://bench.test/paid", "x402_version": 2,
}  # fmt: skip


def _fields(rng: random.Random) -> Any:
    """Mostly one field off a valid payment (so each refusal and each acceptance is reached),
    sometimes many, sometimes a missing or extra key or a mapping that is not a dict."""
    fields = dict(GOOD)
    for name in rng.sample(NAMES, rng.choice([1, 1, 1, 2, 4])):
        fields[name] = rng.choice(POOLS[name])
    roll = rng.random()
    if roll < 0.05:
        del fields[rng.choice(NAMES)]
    elif roll < 0.08:
        fields["extra"] = 1
    elif roll < 0.1:
        return MappingProxyType(fields)
    return fields


def _seen(make: Callable[[], Any]) -> tuple[Any, ...]:
    """Everything observable of an intent, or of the refusal."""
    try:
        intent = make()
    except (IntentError, IntentMismatch) as exc:
        return ("error", type(exc), exc.message)
    return (
        type(intent),
        [(k, type(v), v) for k, v in intent.__dict__.items() if k in NAMES],
        intent.model_fields_set,
        intent.__pydantic_extra__,
        intent.__pydantic_private__,
        repr(intent),
        intent.model_dump(),
        intent.spend,
        intent.wasm_args(),
        intent.intent_hash,  # an accepted intent has all of these: none may raise
        intent.wire(),
        intent.newton_intent().intent_hash,
    )


def test_the_pools_reach_both_sides() -> None:
    rng = random.Random(0)
    refused = {_seen(lambda: PaymentIntent.model_validate(_fields(rng)))[0] == "error" for _ in range(200)}  # fmt: skip
    assert refused == {True, False}


@pytest.mark.parametrize("seed", range(4))
def test_from_fields_equals_the_model(seed: int) -> None:
    rng = random.Random(seed)
    accepted = 0
    for _ in range(1500):
        fields = _fields(rng)
        fast = _seen(lambda fields=fields: PaymentIntent.from_fields(fields))  # type: ignore[misc]
        slow = _seen(lambda fields=fields: PaymentIntent.model_validate(fields))  # type: ignore[misc]
        assert fast == slow, fields
        accepted += fast[0] != "error"
    assert 300 < accepted < 1400


@pytest.mark.parametrize("network", ["eip155:0", "eip155:00", "eip155:" + "0" * 20])
def test_chain_zero_is_refused_alike_on_both_paths(network: str) -> None:
    """Before: ``eip155:0`` was accepted, then ``wire()`` raised (a transfer intent cannot
    carry chain 0)."""
    fields = {**GOOD, "network": network}
    refusals = []
    for make in (
        PaymentIntent.from_fields,
        PaymentIntent.model_validate,
        PaymentIntent._validated_directly,
    ):
        with pytest.raises(IntentError) as caught:
            make(fields)
        refusals.append(caught.value.message)
    assert refusals == [f"network {network!r} is not a valid CAIP-2 eip155 id"] * 3


def test_the_direct_path_is_taken_for_plain_fields() -> None:
    """What the payment flow passes never reaches pydantic's validator (else this file would
    only prove the fallback equal to itself)."""
    intent = PaymentIntent._validated_directly(dict(GOOD))
    assert _seen(lambda: intent) == _seen(lambda: PaymentIntent(**GOOD))
    with pytest.raises(IntentError):
        PaymentIntent._validated_directly({**GOOD, "amount": True})


def _edited(rng: random.Random) -> PaymentIntent:
    """A valid intent whose fields were then set to anything, behind the frozen model's back."""
    intent = PaymentIntent(**GOOD)
    for name in rng.sample(NAMES, rng.choice([0, 1, 1, 2])):
        object.__setattr__(intent, name, rng.choice(POOLS[name]))
    return intent


def _model_fresh(intent: PaymentIntent) -> PaymentIntent:
    """``fresh_intent`` as it was: every field through ``model_validate``."""
    fields = {name: getattr(intent, name, None) for name in NAMES}
    try:
        return PaymentIntent.model_validate(fields)
    except Exception as exc:
        why = exc.message if isinstance(exc, IntentError) else type(exc).__name__
        raise IntentMismatch(f"the intent's fields are not a valid intent: {why}") from None


@pytest.mark.parametrize("seed", range(3))
def test_fresh_intent_equals_the_model_rebuild(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(600):
        intent = _edited(rng)

        fast = _seen(lambda intent=intent: fresh_intent(intent))  # type: ignore[misc]
        assert fast == _seen(lambda intent=intent: _model_fresh(intent))  # type: ignore[misc]


def _ticket(operators: Operators, intent: PaymentIntent, task: int) -> Ticket:
    fresh = fresh_intent(intent)
    attestation = operators.attest(
        fresh.newton_intent(), expires_at=10_000, task_id=task.to_bytes(32, "big")
    )
    return Ticket(
        task_id=attestation.task_id, attestation=attestation, intent=fresh,
        intent_hash=fresh.intent_hash, expires_at=10_000, assurance="quorum-ecdsa",
    )  # fmt: skip


SWAPS: list[tuple[str, Any]] = [
    ("amount", 10_001), ("amount", Number.BIG), ("amount", Sly()), ("amount", 10_000.0),
    ("payer", Text(PAYER)), ("payer", PAYER.lower()), ("pay_to", TOKEN), ("pay_to", Sly()),
    ("network", "base"), ("network", Text("eip155:8453")), ("resource", "elsewhere"),
    ("x402_version", True), ("scheme", "upto"), ("asset", Text(TOKEN)),
]  # fmt: skip


@pytest.mark.parametrize("seed", range(3))
def test_redeem_without_the_rebuild_equals_the_rebuild(
    operators: Operators, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """The same intent, a copy, and copies with fields swapped (equal lookalikes, other
    values, objects equal to everything) redeem or fail alike with the shortcut on and off."""
    rng = random.Random(seed)
    outcomes = []
    for task in range(60):
        intent = PaymentIntent(**{**GOOD, "amount": rng.choice([1, 10_000, 2**200])})
        given = rng.choice([intent, PaymentIntent(**intent.model_dump())])
        if rng.random() < 0.6:
            given = PaymentIntent(**intent.model_dump())
            for name, value in rng.sample(SWAPS, rng.choice([1, 2])):
                object.__setattr__(given, name, value)
        seen = []
        for shortcut in (True, False):
            if not shortcut:
                monkeypatch.setattr(tickets, "_plain", lambda fields: False)
            registry = _Registry()
            t = _ticket(operators, intent, seed * 1000 + task)
            registry.issue(t, now=0)
            try:
                seen.append(("ticket", registry.redeem(t.attestation, given, now=1) is t))
            except Exception as exc:
                seen.append(("error", type(exc), str(exc)))
            monkeypatch.undo()
        assert seen[0] == seen[1], (given, seen)
        outcomes.append(seen[0][0])
    assert set(outcomes) == {"ticket", "error"}
