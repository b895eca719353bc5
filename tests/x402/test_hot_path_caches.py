"""Caches on the payment hot path: a payment intent's hash and wire form are memoized per field
values, and a cache must never answer for values it was not computed from."""

from __future__ import annotations

from agentguard._intent import PaymentIntent, TransactionIntent

PAYER = "0x1111111111111111111111111111111111111111"
TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAYEE = "0x3333333333333333333333333333333333333333"
OTHER = "0x4444444444444444444444444444444444444444"


def _intent(pay_to: str = PAYEE, amount: int = 10_000) -> PaymentIntent:
    return PaymentIntent(
        payer=PAYER,
        scheme="exact",
        network="eip155:8453",
        asset=TOKEN,
        amount=amount,
        pay_to=pay_to,
        resource="https://shop.test/paid",
        x402_version=2,
    )


def _transfer(pay_to: str, amount: int) -> TransactionIntent:
    return TransactionIntent.erc20_transfer(
        sender=PAYER, token=TOKEN, recipient=pay_to, amount=amount, chain_id=8453
    )


def test_the_cached_hash_and_wire_are_the_transfers() -> None:
    for pay_to, amount in ((PAYEE, 10_000), (OTHER, 10_000), (PAYEE, 10_001)):
        for _ in range(2):  # computed, then from the cache
            intent = _intent(pay_to, amount)
            assert intent.intent_hash == _transfer(pay_to, amount).intent_hash
            assert intent.wire() == _transfer(pay_to, amount).wire()


def test_wire_hands_out_a_new_dict_each_time() -> None:
    """The cached wire form is shared; a caller editing its copy (an audit sink adding a
    field) must not change what the next payment records."""
    first = _intent().wire()
    first["to"] = OTHER
    first["extra"] = "x"
    assert _intent().wire() == _transfer(PAYEE, 10_000).wire()


class _Liar(str):
    """A payee that claims to equal (and hashes like) PAYEE while its characters say OTHER."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return hash(PAYEE)


def test_a_lookalike_field_is_hashed_from_what_it_holds() -> None:
    """Attack: an intent copy built without validation (``model_construct``, as the signer's
    ticket check does) whose payee is a ``str`` subclass that compares and hashes equal to the
    attested payee. A cache keyed on equality would hand back the attested payee's hash for a
    transfer to OTHER; only exact ``str``/``int`` fields take the cache."""
    _intent().intent_hash  # noqa: B018 - the honest values are cached first
    fields = dict(_intent())
    fields["pay_to"] = _Liar(OTHER)
    copy = PaymentIntent.model_construct(**fields)
    assert copy.intent_hash == _transfer(OTHER, 10_000).intent_hash
    assert copy.intent_hash != _intent().intent_hash
    assert copy.wire()["data"] == _transfer(OTHER, 10_000).wire()["data"]
