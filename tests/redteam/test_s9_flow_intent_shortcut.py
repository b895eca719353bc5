"""Red team (session 9): the flow skips rebuilding the guard's intent when its fields are
exactly the flow's own validated copy. That copy is handed to the guard in ``Authorize``; a
hostile guard (the host's object) can edit it behind the frozen model's back (its cached
``intent_hash`` still says the original) and answer with a genuine attestation for the original
whose ``intent`` it edited the same way. Rebuilding every time refused that at the check; the
shortcut must too: nothing is bound, prepared or audited as "authorized" for the edited payee.
Also: the other hostile intents still get the rebuild's verdict."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard import Verifier
from agentguard._exceptions import AgentGuardError, IntentMismatch, VerificationError
from agentguard._intent import PaymentIntent
from agentguard._tickets import fresh_intent
from agentguard.ledger import Limits
from agentguard.pipeline import Action, _flow
from agentguard.pipeline._flow import guarded
from agentguard.pipeline._steps import Audit, Authorize, Bind, Release, Reserve
from tests.unit.conftest import POLICY_CLIENT, Operators

OPERATORS = Operators([PrivateKey() for _ in range(3)])
VERIFIER = Verifier(OPERATORS.addresses, policy_client=POLICY_CLIENT)
PAYEE, ATTACKER = "0x" + "33" * 20, "0x" + "ee" * 20


def _intent(**update: Any) -> PaymentIntent:
    fields: dict[str, Any] = {
        "payer": "0x" + "11" * 20, "scheme": "exact", "network": "eip155:8453",
        "asset": "0x" + "22" * 20, "amount": 5, "pay_to": PAYEE,
    }  # fmt: skip
    return PaymentIntent(**{**fields, **update})


class _Hold:
    id = "hold-1"


def _drive(answer_authorize: Any) -> list[Any]:
    """Run ``guarded`` by hand up to the step after the authorization: the steps it yielded."""
    flow = guarded(Action(agent="agent", intent=_intent(), limits=Limits(), rail="payment"))
    steps: list[Any] = []
    value: Any = None
    error: BaseException | None = None
    for _ in range(8):
        try:
            step = flow.throw(error) if error is not None else flow.send(value)
        except AgentGuardError:
            return steps
        steps.append(step)
        value, error = None, None
        if isinstance(step, Reserve):
            value = _Hold()
        elif isinstance(step, Authorize):
            try:
                value = answer_authorize(step)
            except AgentGuardError as exc:
                error = exc
        elif isinstance(step, Bind):
            return steps
    return steps


def _edit_and_answer(step: Authorize) -> Any:
    original = fresh_intent(step.intent)
    verified = VERIFIER.verify(OPERATORS.attest(original), original)  # type: ignore[arg-type]
    # the guard edits what it was handed, and the verified answer's intent the same way
    object.__setattr__(step.intent, "pay_to", ATTACKER)
    edited = copy.copy(verified.intent)
    object.__setattr__(edited, "pay_to", ATTACKER)
    edited.__dict__.pop("intent_hash", None)
    object.__setattr__(verified, "intent", edited)
    return verified


def test_a_guard_editing_the_flows_copy_is_refused_at_the_check() -> None:
    steps = _drive(_edit_and_answer)
    assert not any(isinstance(s, Bind) for s in steps), steps
    assert any(isinstance(s, Release) for s in steps)
    authorized = [s for s in steps if isinstance(s, Audit) and s.kind == "authorized"]
    assert authorized == []


def test_an_honest_guard_is_still_accepted() -> None:
    def honest(step: Authorize) -> Any:
        return VERIFIER.verify(OPERATORS.attest(step.intent), step.intent)  # type: ignore[arg-type]

    steps = _drive(honest)
    assert isinstance(steps[-1], Bind)


def test_what_the_guard_edits_in_its_copy_never_reaches_the_flow() -> None:
    def edit_after_answering(step: Authorize) -> Any:
        original = fresh_intent(step.intent)
        verified = VERIFIER.verify(OPERATORS.attest(original), original)  # type: ignore[arg-type]
        object.__setattr__(step.intent, "amount", 10**30)
        return verified

    steps = _drive(edit_after_answering)
    assert isinstance(steps[-1], Bind)
    (authorized,) = [s for s in steps if isinstance(s, Audit) and s.kind == "authorized"]
    assert authorized.record["intent"] == _intent().wire()  # amount 5, not the edit


class _LyingInt(int):
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = int.__hash__

    def __index__(self) -> int:
        return 5


class _Subclass(PaymentIntent):
    pass


@pytest.mark.parametrize(
    "edit",
    [
        lambda i: object.__setattr__(i, "amount", _LyingInt(500)),
        lambda i: object.__setattr__(i, "amount", True),
        lambda i: object.__delattr__(i, "pay_to"),
        lambda i: object.__setattr__(i, "__class__", _Subclass),
    ],
    ids=["int-subclass-claiming-equality", "bool-for-int", "deleted-field", "subclass"],
)
def test_hostile_guard_intents_are_refused(edit: Any) -> None:
    intent = _intent()
    action = Action(agent="agent", intent=fresh_intent(intent), limits=Limits(), rail="payment")
    verified = VERIFIER.verify(OPERATORS.attest(intent), intent)  # type: ignore[arg-type]
    other = copy.copy(verified.intent)
    edit(other)
    other.__dict__.pop("intent_hash", None)
    object.__setattr__(verified, "intent", other)
    with pytest.raises((IntentMismatch, VerificationError)):
        _flow._same_intent(verified, action)
