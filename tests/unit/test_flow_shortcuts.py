"""Small shortcuts in the pipeline's flow held equal to what they replace: the cached
``PaymentIntent.spend`` to a new ``Spend`` of the intent's fields. (``audited=False``:
``tests/integration/test_pipeline_core.py``.)"""

from __future__ import annotations

import random
from typing import Any

from agentguard._intent import PaymentIntent, Spend, TransactionIntent

PAYER = "0xb5b5B5b5B5b5B5B5B5B5B5b5B5B5B5b5B5B5b5b5"
TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAYEE = "0x3333333333333333333333333333333333333333"


def _intent(amount: int) -> PaymentIntent:
    return PaymentIntent(
        payer=PAYER, scheme="exact", network="eip155:8453", asset=TOKEN, amount=amount,
        pay_to=PAYEE,
    )  # fmt: skip


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
