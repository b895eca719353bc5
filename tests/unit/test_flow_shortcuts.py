"""Small shortcuts in the pipeline's flow held equal to what they replace: ``_with_intent`` to
``dataclasses.replace`` (every ``Action`` field carried, a subclass kept), the cached
``PaymentIntent.spend`` to a new ``Spend`` of the intent's fields. (``audited=False``:
``tests/integration/test_pipeline_core.py``.)"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from agentguard._intent import PaymentIntent, Spend, TransactionIntent
from agentguard.ledger import Limits
from agentguard.pipeline import (
    Action,
)
from agentguard.pipeline._flow import _with_intent

PAYER = "0xb5b5B5b5B5b5B5B5B5B5B5b5B5B5B5b5B5B5b5b5"
TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAYEE = "0x3333333333333333333333333333333333333333"


def _intent(amount: int) -> PaymentIntent:
    return PaymentIntent(
        payer=PAYER, scheme="exact", network="eip155:8453", asset=TOKEN, amount=amount,
        pay_to=PAYEE,
    )  # fmt: skip


def _action(rng: random.Random, kind: type[Action] = Action) -> Action:
    return kind(
        agent=rng.choice([PAYER, "agent"]),
        intent=_intent(rng.randrange(1, 10**9)),
        limits=rng.choice([Limits(), Limits(per_tx={TOKEN: 5})]),
        rail=rng.choice(["transaction", "payment", "call"]),
        wasm_args=rng.choice([None, {"a": 1}]),
        hold_seconds=rng.choice([1.0, 120.0]),
        approval_timeout=rng.choice([None, 0, 30.5]),
        audited=rng.random() < 0.5,
    )


def test_with_intent_equals_replace() -> None:
    # a new field must be carried by _with_intent too
    names = [f.name for f in dataclasses.fields(Action)]
    assert names == ["agent", "intent", "limits", "rail", "wasm_args", "hold_seconds",
                     "approval_timeout", "audited"]  # fmt: skip
    rng = random.Random(3)
    for _ in range(200):
        action, intent = _action(rng), _intent(rng.randrange(1, 10**9))
        got, want = _with_intent(action, intent), dataclasses.replace(action, intent=intent)
        assert got == want and type(got) is Action and got.intent is intent

    @dataclasses.dataclass(frozen=True, slots=True)
    class Tagged(Action):
        tag: str = "t"

    tagged = _action(rng, Tagged)
    copy = _with_intent(tagged, _intent(7))
    assert type(copy) is Tagged and copy == dataclasses.replace(tagged, intent=_intent(7))


def test_cached_spend_equals_a_new_one() -> None:
    rng = random.Random(5)
    for _ in range(100):
        intent = _intent(rng.randrange(1, 2**256))
        first: Any = intent.spend
        assert first == Spend(asset=TOKEN, amount=intent.amount, recipient=PAYEE)
        assert intent.spend is first
    transfer = TransactionIntent.erc20_transfer(
        sender=PAYER, token=TOKEN, recipient=PAYEE, amount=9, chain_id=8453
    )
    assert _intent(9).spend.model_dump(exclude={"kind"}) == transfer.spend.model_dump(
        exclude={"kind"}
    )
