"""Pipeline shortcuts on the x402 hot path give what the long way gives.

The check that the guard answered for exactly the action's intent skips the rebuild only for
an intent whose fields are, by exact type and value, the flow's own validated copy: the same
verdict (and the same refusal) as rebuilding every time, on seeded random intents and on guards
that hand back an altered intent (another value, a bool for an int, a str subclass that claims
equality, another class, fields set behind the frozen model's back). The runner's remembered
``iscoroutinefunction`` answers as ``inspect`` does."""

from __future__ import annotations

import random
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard import Verifier
from agentguard._exceptions import AgentGuardError, IntentMismatch
from agentguard._intent import PaymentIntent, TransactionIntent
from agentguard._tickets import fresh_intent
from agentguard.ledger import Limits
from agentguard.pipeline import Action, _flow
from tests.unit.conftest import POLICY_CLIENT, Operators

OPERATORS = Operators([PrivateKey() for _ in range(3)])
VERIFIER = Verifier(OPERATORS.addresses, policy_client=POLICY_CLIENT)


def _address(rng: random.Random) -> str:
    return "0x" + rng.randbytes(20).hex()


def _intent(rng: random.Random) -> PaymentIntent | TransactionIntent:
    if rng.random() < 0.5:
        return PaymentIntent(
            payer=_address(rng), scheme=rng.choice(["exact", "upto"]),
            network=rng.choice(["eip155:8453", "base", "eip155:84532"]), asset=_address(rng),
            amount=rng.randrange(1, 2**256), pay_to=_address(rng),
            resource=rng.choice(["", "http://shop.test/paid"]), x402_version=rng.choice([1, 2]),
        )  # fmt: skip
    return TransactionIntent.erc20_transfer(
        sender=_address(rng), token=_address(rng), recipient=_address(rng),
        amount=rng.randrange(0, 2**256), chain_id=rng.choice([1, 8453, 84532]),
    )  # fmt: skip


class _Liar(str):
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = str.__hash__


def _altered(rng: random.Random, intent: Any) -> Any:
    """A copy of ``intent`` with one field changed behind the frozen model's back (or none)."""
    copy = intent.model_copy()
    kind = type(intent)
    name = rng.choice(list(kind.model_fields))
    value = getattr(intent, name)
    choice = rng.randrange(7)
    if choice == 0:
        return copy  # unchanged: the fast path
    if choice == 1 and isinstance(value, str):
        new: Any = _Liar(value)
    elif choice == 2 and isinstance(value, str):
        new = value.lower() if value != value.lower() else value.upper()
    elif choice == 3 and type(value) is int:
        new = value + 1 if value < 2**255 else value - 1
    elif choice == 4 and type(value) is int:
        new = bool(value % 2)
    elif choice == 5:
        return _intent(rng)  # another intent altogether
    else:
        new = None
    object.__setattr__(copy, name, new)
    copy.__dict__.pop("intent_hash", None)
    return copy


def _old_verdict(verified: Any, action: Action) -> object:
    """The check as it was: rebuild the guard's intent every time."""
    want = action.intent.intent_hash
    try:
        if (
            fresh_intent(verified.intent).intent_hash != want
            or verified.attestation.intent_hash != want
        ):
            return "mismatch"
    except AgentGuardError as exc:
        return (type(exc).__name__, exc.message)
    return "same"


def _new_verdict(verified: Any, action: Action) -> object:
    try:
        _flow._same_intent(verified, action)
    except IntentMismatch as exc:
        if "for another intent" in exc.message:
            return "mismatch"
        return (type(exc).__name__, exc.message)
    except AgentGuardError as exc:
        return (type(exc).__name__, exc.message)
    return "same"


def test_validation_is_idempotent_so_equal_fields_rebuild_to_the_same_hash() -> None:
    rng = random.Random(21)
    for _ in range(300):
        intent = _intent(rng)
        assert fresh_intent(intent).intent_hash == intent.intent_hash
        assert fresh_intent(fresh_intent(intent)).intent_hash == intent.intent_hash


def test_same_verdict_as_rebuilding_every_time() -> None:
    rng = random.Random(22)
    verdicts: dict[object, int] = {}
    for _ in range(400):
        intent = _intent(rng)
        action = Action(agent="agent", intent=fresh_intent(intent), limits=Limits(), rail="payment")
        verified = VERIFIER.verify(OPERATORS.attest(intent), intent)  # type: ignore[arg-type]
        object.__setattr__(verified, "intent", _altered(rng, verified.intent))
        old, new = _old_verdict(verified, action), _new_verdict(verified, action)
        assert old == new
        key = old if isinstance(old, str) else str(old)
        verdicts[key] = verdicts.get(key, 0) + 1
    assert verdicts.get("same", 0) > 50 and verdicts.get("mismatch", 0) > 50


@pytest.mark.parametrize("field", ["pay_to", "payer", "asset"])
def test_a_str_subclass_claiming_equality_is_rebuilt_and_refused(field: str) -> None:
    intent = PaymentIntent(
        payer="0x" + "11" * 20, scheme="exact", network="eip155:8453", asset="0x" + "22" * 20,
        amount=5, pay_to="0x" + "33" * 20,
    )  # fmt: skip
    action = Action(agent="agent", intent=fresh_intent(intent), limits=Limits(), rail="payment")
    verified = VERIFIER.verify(OPERATORS.attest(intent), intent)  # type: ignore[arg-type]
    other = verified.intent.model_copy()
    object.__setattr__(other, field, _Liar("0x" + "44" * 20))
    object.__setattr__(verified, "intent", other)
    with pytest.raises(IntentMismatch):
        _flow._same_intent(verified, action)


def test_the_verified_type_is_still_required() -> None:
    intent = _intent(random.Random(1))
    action = Action(agent="agent", intent=intent, limits=Limits(), rail="payment")
    with pytest.raises(AgentGuardError):
        _flow._same_intent(object(), action)


# -- the runner's remembered iscoroutinefunction -------------------------------------------------


class _Port:
    def sync(self) -> None:
        return None

    async def coro(self) -> None:
        return None


class _AsyncCallable:
    async def __call__(self) -> None:
        return None


async def _free_coro() -> None:
    return None


def test_the_remembered_coroutine_check_is_inspects() -> None:
    import functools
    import inspect

    from agentguard.pipeline._runner import _coroutine

    port = _Port()
    candidates: list[Any] = [
        port.sync, port.coro, _Port().coro, _Port.sync, _Port.coro, _free_coro,
        lambda: None, functools.partial(_free_coro), _AsyncCallable(), len, None, object(),
        fresh_intent,
    ]  # fmt: skip
    for _ in range(3):  # asked again: the same answer
        for candidate in candidates:
            assert _coroutine(candidate) == inspect.iscoroutinefunction(candidate), candidate
    assert _coroutine(port.coro) and not _coroutine(port.sync)
