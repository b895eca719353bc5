"""The pipeline's sans-IO core, driven by hand: which steps come in which order, and what a
failure at each point gives back. No network, no chain: every step's answer is scripted."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard import Attestation, TransactionIntent, Verifier
from agentguard._attestation import attestation_digest, operator_address, sign_attestation
from agentguard._exceptions import (
    BudgetExceeded,
    OutcomeUnknown,
    PolicyDenied,
    ReservationError,
    TransactionReverted,
)
from agentguard._intent import NATIVE_ASSET, Spend
from agentguard.ledger import Ledger, Limits, Reservation
from agentguard.pipeline import (
    Action,
    Audit,
    Landed,
    NeverLanded,
    Prepared,
    Reverted,
    Runner,
    Sent,
    Signed,
    StillCounted,
    flush,
    guarded,
)

CLIENT = "0x000000000000000000000000000000000000c1E7"
AGENT = "0x1111111111111111111111111111111111111111"
TOKEN = "0x2222222222222222222222222222222222222222"
PAYEE = "0x3333333333333333333333333333333333333333"
KEYS = [PrivateKey() for _ in range(2)]
INTENT = TransactionIntent.erc20_transfer(
    sender=AGENT, token=TOKEN, recipient=PAYEE, amount=5, chain_id=8453
)


def verified_for(intent: TransactionIntent = INTENT):
    expires = int(time.time()) + 60
    task = PrivateKey().secret
    digest = attestation_digest(
        chain_id=8453, policy_client=bytes.fromhex(CLIENT[2:]), task_id=task,
        policy_id=b"\x02" * 32, intent_hash=intent.intent_hash, allow=True, expires_at=expires,
    )  # fmt: skip
    attestation = Attestation(
        decision="allow", task_id=task, policy_id=b"\x02" * 32, policy_client=CLIENT,
        intent_hash=intent.intent_hash, expires_at=expires,
        signatures=tuple(
            {"operator": operator_address(k), "signature": sign_attestation(k, digest)}
            for k in KEYS
        ),
    )  # fmt: skip
    verifier = Verifier([operator_address(k) for k in KEYS], policy_client=CLIENT)
    return verifier.verify(attestation, intent)


def reservation(rid: str, state: Any = "reserved") -> Reservation:
    return Reservation(
        id=rid, key=rid, agent=AGENT, asset=TOKEN.lower(), amount=5, reserved=5,
        recipient=None, state=state, created_at=0, expires_at=1, updated_at=0,
    )  # fmt: skip


def drive(
    answers: dict[str, Callable[[Any], Any]], *, audited: bool = True
) -> tuple[list[str], BaseException | None]:
    """Runs the core, answering each step by its class name; returns the step trace."""
    action = Action(agent=AGENT, intent=INTENT, limits=Limits(), rail="transaction")
    flow = guarded(dataclasses.replace(action, audited=audited))
    trace: list[str] = []
    value: Any = None
    error: Exception | None = None
    while True:
        try:
            step = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration:
            return trace, None
        except Exception as exc:
            return trace, exc
        name = type(step).__name__
        trace.append(f"{name}:{step.kind}" if isinstance(step, Audit) else name)
        value, error = None, None
        try:
            value = answers.get(name, lambda s: None)(step)
        except Exception as exc:
            error = exc


VERIFIED = verified_for()
FEE = Spend(asset=NATIVE_ASSET, amount=100)
HAPPY: dict[str, Callable[[Any], Any]] = {
    "Reserve": lambda s: reservation(s.key),
    "Authorize": lambda s: VERIFIED,
    "Bind": lambda s: reservation(s.reservation_id),
    "Prepare": lambda s: Prepared(fee=FEE),
    "Sign": lambda s: Signed(reference="0xtx:0", payload=b""),
    "MarkSigned": lambda s: reservation(s.reservation_id, state="signed"),
    "Send": lambda s: Sent(),
    "Confirm": lambda s: Landed("0xtx", fee=42, result="r"),
    "Commit": lambda s: reservation(s.reservation_id, state="committed"),
}


def with_(**changes: Callable[[Any], Any]) -> dict[str, Callable[[Any], Any]]:
    return {**HAPPY, **changes}


def fail(exc: Exception) -> Callable[[Any], Any]:
    def raise_(_: Any) -> Any:
        raise exc

    return raise_


def test_the_happy_path_in_order() -> None:
    trace, error = drive(HAPPY)
    assert error is None
    assert trace == [
        "Reserve", "Authorize", "Audit:authorized", "Bind", "Prepare", "Reserve", "Sign",
        "MarkSigned", "MarkSigned", "Audit:signed", "Send", "Audit:sent", "Confirm",
        "Commit", "Commit", "GatewayCommit", "Audit:committed",
    ]  # fmt: skip


def test_a_local_refusal_never_asks_the_network() -> None:
    trace, error = drive(with_(Reserve=fail(BudgetExceeded("cap"))))
    assert isinstance(error, BudgetExceeded) and trace == ["Reserve", "Audit:refused"]


def test_a_deny_releases_the_local_hold() -> None:
    trace, error = drive(with_(Authorize=fail(PolicyDenied("no"))))
    assert isinstance(error, PolicyDenied)
    assert trace == ["Reserve", "Authorize", "Release", "Audit:denied"]


@pytest.mark.parametrize("where", ["Bind", "Prepare"])
def test_failing_before_signing_gives_everything_back(where: str) -> None:
    trace, error = drive(with_(**{where: fail(ReservationError("expired"))}))
    assert isinstance(error, ReservationError)
    assert "Sign" not in trace and trace[-3:] == ["Release", "GatewayRelease", "Audit:refused"]


@pytest.mark.parametrize("where", ["Sign", "MarkSigned"])
def test_a_signature_that_never_left_releases_both_holds(where: str) -> None:
    trace, error = drive(with_(**{where: fail(ReservationError("expired"))}))
    assert isinstance(error, ReservationError) and "Send" not in trace
    assert trace[-5:] == ["Abandon", "Release", "Release", "GatewayRelease", "Audit:refused"]


def test_an_unknown_outcome_stays_counted() -> None:
    unknown = StillCounted("outcome_unknown", "504", error=OutcomeUnknown("lost"))
    trace, error = drive(with_(Send=lambda s: unknown))
    assert isinstance(error, OutcomeUnknown)
    assert trace[-2:] == ["Send", "Audit:outcome_unknown"]
    assert "Release" not in trace and "Commit" not in trace


def test_only_proof_releases_after_sending() -> None:
    never = NeverLanded("nonce used by another tx", error=OutcomeUnknown("x"))
    trace, _ = drive(with_(Confirm=lambda s: never))
    assert trace[-4:] == ["Release", "Release", "GatewayRelease", "Audit:released"]
    reverted = Reverted("out of gas", error=TransactionReverted("r"), fee=42)
    trace, error = drive(with_(Confirm=lambda s: reverted))
    assert isinstance(error, TransactionReverted)
    assert trace[-4:] == ["Release", "Commit", "GatewayRelease", "Audit:reverted"]  # fee paid


class _Guard:
    class authorizer:
        released: list[str] = []

        @classmethod
        def release(cls, task_id: str) -> None:
            cls.released.append(task_id)

    @staticmethod
    def authorize(intent: Any, *, wasm_args: Any = None) -> Any:
        time.sleep(0.05)
        return verified_for()


class _Port:
    def __init__(self) -> None:
        self.signed = 0

    def prepare(self, verified: Any) -> Prepared:
        return Prepared()

    def sign(self, verified: Any, prepared: Prepared) -> Signed:
        self.signed += 1
        return Signed(reference="ref", payload=None)

    def abandon(self, prepared: Prepared) -> None:
        pass


def test_a_hold_that_expired_during_authorization_signs_nothing() -> None:
    """With the real ledger: the local hold outlived by a slow authorization may have been given
    back already, so it must not back a signature; the attestation is released at the gateway."""
    ledger = Ledger()
    port = _Port()
    runner = Runner(_Guard(), ledger)  # type: ignore[arg-type]
    action = Action(agent=AGENT, intent=INTENT, limits=Limits(), rail="transaction",
                    hold_seconds=0.01)  # fmt: skip
    with pytest.raises(ReservationError, match="expired"):
        runner.run(action, port)  # type: ignore[arg-type]
    assert flush(runner.guard) == 0  # the gateway release runs in the background
    assert port.signed == 0 and len(_Guard.authorizer.released) == 1
    assert ledger.usage(AGENT, 3600).count == 0


OUTCOMES: list[Any] = [
    Landed("0xtx", fee=3, result="r"),
    Reverted("out of gas", TransactionReverted("reverted"), fee=2),
    NeverLanded("dropped", OutcomeUnknown("dropped")),
    StillCounted("outcome_unknown", "lost", record={"status": 0}),
]
STEPS = ["Reserve", "Authorize", "Bind", "Prepare", "Sign", "MarkSigned", "Send", "Confirm",
         "Commit", "Release", "GatewayCommit", "GatewayRelease", "Abandon"]  # fmt: skip


def test_an_unaudited_flow_is_the_audited_one_without_audit_steps() -> None:
    """``Action.audited=False`` (an entry point without an audit sink): the same steps, values
    and errors, only no records built and no ``Audit`` steps, with a failure at every step and
    each kind of outcome."""
    outcomes = set()
    for where in [None, *STEPS]:
        for outcome in [Sent(), *OUTCOMES]:
            answers = with_(Send=lambda s, outcome=outcome: outcome)  # type: ignore[misc]
            if where is not None:
                answers[where] = fail(ReservationError(f"{where} failed"))
            (trace, error), (bare, bare_error) = drive(answers), drive(answers, audited=False)
            assert any(n.startswith("Audit:") for n in trace)
            assert [n for n in trace if not n.startswith("Audit:")] == bare
            assert (type(error), str(error)) == (type(bare_error), str(bare_error))
            outcomes.add(type(error).__name__)
    assert {"NoneType", "ReservationError", "TransactionReverted", "OutcomeUnknown"} <= outcomes


@pytest.mark.parametrize("text", ["not json {", '{"a": 1, "a": 2}', "[" * 100])
def test_policy_data_that_is_not_json_is_recorded_as_unreadable_not_raised(text: str) -> None:
    """``policy_data`` is informational (never trusted): a custom guard's attestation whose
    text is not (strict) JSON used to raise an untyped ``JSONDecodeError`` after the hold was
    taken, leaving it and the gateway task unreleased. Now the flow goes on and says so."""
    attestation = VERIFIED.attestation.model_copy(update={"policy_data": text})
    odd = dataclasses.replace(VERIFIED, attestation=attestation)
    records: list[Any] = []

    def keep(step: Any) -> None:
        records.append(step)

    trace, error = drive(with_(Authorize=lambda s: odd, Audit=keep))
    assert error is None
    assert trace[-1] == "Audit:committed"
    authorized = next(s for s in records if s.kind == "authorized")
    assert "policy_data" not in authorized.record
    assert authorized.record["policy_data_unreadable"] == (
        "the attestation's policy_data is not JSON"
    )
    good = dataclasses.replace(
        VERIFIED, attestation=VERIFIED.attestation.model_copy(update={"policy_data": '{"a": 1}'})
    )
    records.clear()
    drive(with_(Authorize=lambda s: good, Audit=keep))
    assert next(s for s in records if s.kind == "authorized").record["policy_data"] == {"a": 1}
