"""``X402Auth._select`` (the last answer's choice remembered, keyed on the parsed answer object
itself) against ``select`` (the path it shortcuts): the same requirement, or the same refusal
with the same reasons, for seeded random sequences of repeated and new v2 and v1 answers,
hostile ones included; and one auth's choice never answers for another auth's allowances."""

from __future__ import annotations

import random
from typing import Any

from coincurve import PrivateKey

from agentguard import AsyncGuard, Signer, Verifier
from agentguard._exceptions import PaymentRequiredError
from agentguard.ledger import Ledger
from agentguard.x402 import Allowances, X402Auth
from agentguard.x402._select import select
from agentguard.x402._wire import PaymentRequired, encode_header, parse_payment_required
from tests.unit.conftest import POLICY_CLIENT, Operators

from .fakes import PAYEE, STRANGER, TOKEN, requirement

OTHER = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
OPERATORS = Operators([PrivateKey() for _ in range(3)])
GUARD = AsyncGuard(object(), Verifier(OPERATORS.addresses, policy_client=POLICY_CLIENT))  # type: ignore[arg-type]


def _auth(allowances: Allowances, vault: str | None = None) -> X402Auth:
    signer = Signer.from_key("0x" + "11" * 32)
    return X402Auth(signer=signer, guard=GUARD, ledger=Ledger(), allowances=allowances, vault=vault)


def _entry(rng: random.Random) -> dict[str, Any]:
    """Mostly payable by some auth below; a quarter broken in one field."""
    entry = requirement(
        asset=rng.choice([TOKEN, OTHER]),
        amount=rng.choice(["1", "90", "10000", "5000000"]),
        network=rng.choice(["eip155:8453", "eip155:8453", "eip155:84532"]),
    )
    if rng.random() < 0.25:
        field, value = rng.choice(
            [("asset", STRANGER), ("amount", "0"), ("amount", "-1"), ("payTo", "0x12"),
             ("network", "solana:x"), ("scheme", "stream"), ("scheme", "upto"),
             ("extra", {"name": "USDC"}), ("extra", "x")]
        )  # fmt: skip
        entry[field] = value
    return entry


def _answer(rng: random.Random) -> tuple[str | None, bytes]:
    accepts = [_entry(rng) for _ in range(rng.randrange(0, 4))]
    if rng.random() < 0.8:
        document = {"x402Version": 2, "accepts": accepts, "resource": {"url": "http://s/p"}}
        return encode_header(document), b""
    for entry in accepts:
        entry["maxAmountRequired"] = entry.pop("amount")
        entry["resource"] = "http://s/p"
    return None, encode_header({"x402Version": 1, "accepts": accepts}).encode()


def _verdict(choose: Any, required: PaymentRequired) -> object:
    try:
        return choose(required)
    except PaymentRequiredError as exc:
        return (exc.message, tuple(exc.reasons))


def test_the_remembered_choice_is_selects() -> None:
    rng = random.Random(402)
    auths = [
        (_auth(Allowances({TOKEN: 10**6}, chain_ids=[8453])), False),
        (_auth(Allowances({TOKEN: 100, OTHER: 10**7}, chain_ids=[84532, 8453])), False),
        (_auth(Allowances({TOKEN: 10**6}, chain_ids=[8453]), vault=PAYEE), True),
    ]
    answers = [_answer(rng) for _ in range(6)]
    hits = chosen = 0
    for _ in range(1500):
        header, body = rng.choice(answers)
        try:
            required = parse_payment_required(header, body)
        except PaymentRequiredError:
            continue
        auth, vault = rng.choice(auths)
        remembered = auth._chosen
        got = _verdict(auth._select, required)
        want = _verdict(lambda r: select(r, auth._allowances, from_vault=vault), required)  # noqa: B023
        assert got == want
        if not isinstance(got, tuple):  # the very requirement select picks
            assert got is want
            chosen += 1
        hits += remembered is not None and remembered[0] is required
    assert chosen > 200 and hits > 100, (chosen, hits)


def test_a_choice_is_not_shared_between_auths() -> None:
    required = parse_payment_required(
        encode_header({"x402Version": 2, "accepts": [requirement(asset=TOKEN, amount="500")]}), b""
    )
    generous = _auth(Allowances({TOKEN: 10**6}, chain_ids=[8453]))
    strict = _auth(Allowances({TOKEN: 100}, chain_ids=[8453]))
    assert generous._select(required).amount == 500
    assert isinstance(_verdict(strict._select, required), tuple)
    assert generous._select(required).amount == 500
