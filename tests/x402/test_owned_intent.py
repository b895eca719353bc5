"""``guarded(action, owned=True)`` (X402Auth: the intent was validated by ``from_fields`` just
now, nobody else holds it) against the copying path: for seeded random and hostile payment
fields, the same intent value and hash, the same steps, the same refusals."""

from __future__ import annotations

import random
from typing import Any

import pytest

from agentguard._exceptions import AgentGuardError, GatewayUnavailable
from agentguard._intent import PaymentIntent, TransactionIntent
from agentguard._tickets import fresh_intent
from agentguard.ledger import Limits
from agentguard.pipeline import Action, _flow
from agentguard.pipeline._flow import guarded
from agentguard.pipeline._steps import Authorize, Reserve


def _fields(rng: random.Random) -> dict[str, Any]:
    address = lambda: "0x" + rng.randbytes(20).hex()  # noqa: E731
    fields: dict[str, Any] = {
        "payer": rng.choice([address(), address().upper().replace("0X", "0x")]),
        "scheme": rng.choice(["exact", "upto"]),
        "network": rng.choice(["eip155:8453", "eip155:84532", "base", "eip155:1"]),
        "asset": address(),
        "amount": rng.choice([1, 10_000, rng.getrandbits(255)]),
        "pay_to": address(),
        "resource": rng.choice([None, "https://shop.test/paid", "ü" * 5]),
        "x402_version": rng.choice([1, 2]),
    }
    if rng.random() < 0.3:  # hostile: one field of the wrong shape
        name = rng.choice(list(fields))
        fields[name] = rng.choice([None, "", -1, 2**256, "0x12", True, 3.5, b"x", "eip155:"])
    return fields


class _Hold:
    id = "hold-1"


class _Secrets:
    """The flow's hold keys, the same in both runs."""

    @staticmethod
    def token_hex(n: int) -> str:
        return "ab" * n


def _run(action: Action, owned: bool) -> list[Any]:
    """Drive ``guarded`` by hand: the reservation is held, the gateway is down. Every step
    it yields, then the refusal it ends with."""
    flow = guarded(action, owned=owned)
    seen: list[Any] = []
    value: Any = None
    error: BaseException | None = None
    for _ in range(12):
        try:
            step = flow.throw(error) if error is not None else flow.send(value)
        except AgentGuardError as exc:
            return [*seen, (type(exc), str(exc))]
        except StopIteration as stop:
            return [*seen, stop.value]
        seen.append(step)
        value, error = None, None
        if isinstance(step, Reserve):
            value = _Hold()
        elif isinstance(step, Authorize):
            error = GatewayUnavailable("down (test)")
    raise AssertionError(f"the flow did not end: {seen}")


@pytest.fixture(autouse=True)
def same_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_flow, "secrets", _Secrets)


@pytest.mark.parametrize("seed", range(60))
def test_an_owned_intent_takes_the_same_path_as_its_copy(seed: int) -> None:
    rng = random.Random(seed)
    fields = _fields(rng)
    try:
        intent = PaymentIntent.from_fields(fields)
    except AgentGuardError:
        return  # refused before any flow: both paths start from here
    copy = fresh_intent(intent)
    assert type(copy) is PaymentIntent and copy.model_dump() == intent.model_dump()
    assert copy.intent_hash == intent.intent_hash
    action = Action(agent="agent", intent=intent, limits=Limits(), rail="payment", audited=False)
    assert _run(action, owned=True) == _run(action, owned=False)


def test_an_owned_flag_on_another_intent_type_still_copies_or_refuses() -> None:
    class Sub(PaymentIntent):
        pass

    fields = {"payer": "0x" + "11" * 20, "scheme": "exact", "network": "eip155:8453",
              "asset": "0x" + "22" * 20, "amount": 5, "pay_to": "0x" + "33" * 20}  # fmt: skip
    sub = Sub(**fields)
    action = Action(agent="agent", intent=sub, limits=Limits(), rail="payment")
    assert _run(action, owned=True) == _run(action, owned=False)
    assert _run(action, owned=True)[-1][0].__name__ == "VerificationError"
    tx = TransactionIntent(
        chain_id=8453, from_="0x" + "11" * 20, to="0x" + "22" * 20, value=1, data="0x"
    )
    action = Action(agent="agent", intent=tx, limits=Limits(), rail="transaction")
    assert _run(action, owned=True) == _run(action, owned=False)
