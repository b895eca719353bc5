"""The guarded pipeline, once, for every entry point that can lead to a signature.

    reserve (local hold) → authorize + verify → bind → prepare → [reserve fee] → sign
        → mark signed → send → [confirm] → commit | release | stays counted     (audit throughout)

With ``Action.approval_timeout`` an ``approval_required`` answer is not final: the flow keeps
the local hold (made that much longer up front), waits for a person's decision on exactly this
intent (``AwaitApproval``) and authorizes the same intent again; operators sign only on a
valid signed approval, so what the gateway says while waiting decides nothing.

The local hold comes first, so an action the local caps refuse never reaches the network (and
never uses up its budget); a deny releases it. Until ``MarkSigned`` nothing has left the
process, so any failure gives every hold back and tells the network the attestation is unused.
After it, only an outcome with positive proof (``NeverLanded``, or ``Reverted`` for the amount)
gives budget back; everything else stays counted.

This module performs no I/O: ``guarded`` is a generator of typed steps (``_steps.py``) that a
runner executes (``_runner.py``).
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from agentguard._exceptions import (
    AgentGuardError,
    ApprovalRequired,
    AttestationReplayed,
    ConfigurationError,
    FeeCapExceeded,
    IntentMismatch,
    LedgerError,
    LedgerUnavailable,
    TierQuorumNotReached,
    TierTooLow,
    VerificationError,
)
from agentguard._intent import PaymentIntent
from agentguard._json import strict_loads
from agentguard._tickets import INTENT_FIELDS, fresh_intent
from agentguard._verifier import VerifiedAttestation
from agentguard.ledger import Limits, Reservation
from agentguard.pipeline._outcomes import (
    Landed,
    NeverLanded,
    Outcome,
    Prepared,
    Reverted,
    Sent,
    Settled,
    Signed,
)
from agentguard.pipeline._steps import (
    Abandon,
    Audit,
    Authorize,
    AwaitApproval,
    Bind,
    Commit,
    Confirm,
    Flow,
    GatewayCommit,
    GatewayRelease,
    Intent,
    MarkSigned,
    Prepare,
    Release,
    Reserve,
    Send,
    Sign,
)

__all__ = ["DEFAULT_HOLD_SECONDS", "Action", "InFlight", "guarded", "settle"]

DEFAULT_HOLD_SECONDS = 120.0
"""How long a local hold lives before an attestation binds it: longer than the gateway client's
own deadline, so a slow but successful authorization still finds its hold."""


@dataclass(frozen=True, slots=True)
class Action:
    """One thing an entry point wants done: who spends, what, under which caps.

    ``approval_timeout``: seconds to wait for a human approval when the policy asks for one
    (``None``: ``ApprovalRequired`` is final). ``audited=False``: the entry point has no audit
    sink, so the flow builds no records and yields no ``Audit`` steps (a runner without a sink
    drops them anyway)."""

    agent: str
    intent: Intent
    limits: Limits
    rail: Literal["transaction", "payment", "call"]
    wasm_args: Mapping[str, Any] | None = None
    hold_seconds: float = DEFAULT_HOLD_SECONDS
    approval_timeout: float | None = None
    audited: bool = True


@dataclass(frozen=True, slots=True)
class InFlight:
    """A signed action on its way: what settling its outcome needs (``settle``)."""

    action: Action
    verified: VerifiedAttestation
    holds: tuple[Reservation, ...]


def _why(exc: BaseException) -> str:
    return exc.message if isinstance(exc, AgentGuardError) else type(exc).__name__


def guarded(action: Action, *, owned: bool = False) -> Flow[Settled]:
    """The whole sequence for one action; returns ``Settled`` or raises the typed refusal.

    The flow works on its own copy of the intent, taken before the first step: what is held,
    authorized and checked against the attestation is one value the caller can no longer edit.
    ``owned``: the caller validated ``action.intent`` just now (``PaymentIntent.from_fields``)
    and keeps no other reference to it or to ``action`` (``X402Auth``): it already is that
    copy, and a second one would be the same value.
    """
    if not owned or type(action.intent) is not PaymentIntent:
        action = replace(action, intent=fresh_intent(action.intent))
    timeout = action.approval_timeout
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 <= timeout < 86400
    ):
        raise ConfigurationError("approval_timeout must be seconds in 0..86400, or None")
    hold = yield from _hold(action)
    verified = yield from _authorize(action, hold)
    task = verified.task_id
    holds: list[Reservation] = [hold]
    try:
        holds[0] = yield Bind(hold.id, task, verified.expires_at)
        prepared: Prepared = yield Prepare(verified)
    except Exception as exc:
        yield from _unwind(action, task, holds, exc)
        raise
    try:
        if prepared.fee is not None:
            holds.append(
                (
                    yield Reserve(
                        action.agent,
                        prepared.fee,
                        key=f"{hold.id}:fee",
                        limits=action.limits,
                        expires_at=verified.expires_at,
                        action=False,
                    )
                )
            )
        signed: Signed = yield Sign(verified, prepared)
        for i, held in enumerate(holds):  # before the signature leaves the process
            holds[i] = yield MarkSigned(held.id, signed.reference)
    except Exception as exc:
        yield Abandon(prepared)
        yield from _unwind(action, task, holds, exc)
        raise
    if action.audited:
        yield Audit(
            "signed",
            {"rail": action.rail, "task_id": task, "reference": signed.reference, **signed.record},
        )
    flight = InFlight(action, verified, tuple(holds))
    answer: Sent | Outcome = yield Send(signed, flight)
    if isinstance(answer, Sent):
        if action.audited:
            yield Audit("sent", {"rail": action.rail, "task_id": task, **answer.record})
        outcome: Outcome = yield Confirm(signed)
    else:
        outcome = answer
    return (yield from settle(flight, signed, outcome))


def _hold(action: Action) -> Flow[Reservation]:
    try:
        hold: Reservation = yield Reserve(
            action.agent,
            action.intent.spend,
            key=f"local:{secrets.token_hex(16)}",  # 32 hex digits, as uuid4().hex, cheaper
            limits=action.limits,
            # a hold must outlive a wait for a person, or the budget would not be held
            hold_seconds=action.hold_seconds + (action.approval_timeout or 0.0),
        )
    except Exception as exc:
        if action.audited:
            yield Audit("refused", _refusal(action, exc))
        raise
    return hold


def _authorize(action: Action, hold: Reservation) -> Flow[VerifiedAttestation]:
    try:
        verified = yield from _authorize_or_wait(action, hold)
        _same_intent(verified, action)
    except Exception as exc:
        yield Release(hold.id, f"not authorized: {_why(exc)}"[:1000])
        if action.audited:
            yield Audit("denied", {**_refusal(action, exc), "released": hold.id})
        raise
    if action.audited:
        yield Audit(
            "authorized",
            {
                "rail": action.rail,
                "intent": action.intent.wire(),
                "intent_hash": "0x" + action.intent.intent_hash.hex(),
                "attestation": verified.attestation.to_json(),
                "tier": verified.attestation.tier,
                "signers": list(verified.signers),
                "reservation": hold.id,
                **_policy_data(verified.attestation.policy_data),
            },
        )
    return verified


def _policy_data(text: str | None) -> dict[str, Any]:
    """The policy data the operators evaluated (a reference network reports it), so an auditor
    holding only this log can evaluate the policy again (``agentguard challenge``). It is
    informational and never trusted: text that is not JSON (a custom guard's attestation) is
    recorded as unreadable rather than raised after the hold was taken."""
    if text is None:
        return {}
    try:
        return {"policy_data": strict_loads(text)}
    except (TypeError, ValueError):
        return {"policy_data_unreadable": "the attestation's policy_data is not JSON"}


def _authorize_or_wait(action: Action, hold: Reservation) -> Flow[VerifiedAttestation]:
    """Authorize; on ``ApprovalRequired`` (with a timeout) wait for a person and authorize the
    same intent again, until allowed, refused, rejected or out of time."""
    deadline: float | None = None
    intent_hash = "0x" + action.intent.intent_hash.hex()  # ours, never the gateway's
    while True:
        try:
            # the guard gets its own copy (fields and cached hash shared, values immutable):
            # editing it behind the frozen model's back cannot reach the copy ``_same_intent``
            # compares the answer with, so that copy still hashes to what it says
            verified: VerifiedAttestation = yield Authorize(
                copy.copy(action.intent), action.wasm_args
            )
            return verified
        except ApprovalRequired as exc:
            if action.approval_timeout is None:
                raise
            if deadline is None:
                deadline = time.monotonic() + action.approval_timeout
                if action.audited:
                    yield Audit(
                        "approval_pending",
                        {
                            "rail": action.rail,
                            "intent_hash": intent_hash,
                            "reasons": list(exc.reasons),
                            "reservation": hold.id,
                            "timeout": action.approval_timeout,
                        },
                    )
            yield AwaitApproval(intent_hash, deadline, hold.id)


def _same_intent(verified: object, action: Action) -> None:
    """What the guard answered is a verified attestation for exactly this action's intent (a
    guard subclass or stand-in could answer with one for another, larger action)."""
    if type(verified) is not VerifiedAttestation:
        raise VerificationError(
            f"the guard answered with a {type(verified).__name__}, not a VerifiedAttestation"
        )
    want = action.intent.intent_hash
    if not _hashes_to(verified.intent, action, want) or verified.attestation.intent_hash != want:
        raise IntentMismatch(
            f"the guard answered with attestation {verified.task_id} for another intent than "
            f"the action's ({'0x' + want.hex()}); nothing was signed"
        )


_PLAIN = (str, int, bytes, type(None))


def _hashes_to(intent: object, action: Action, want: bytes) -> bool:
    """Whether the guard's ``intent``, rebuilt from its fields now, hashes to ``want``.

    ``action.intent`` is the flow's own validated copy, never handed out before this check (the
    guard gets a copy), so its hash is ``want``: an intent of the
    same class whose every field is, by exact type and value, the copy's (immutable builtins
    only, so no ``__eq__`` of the guard's choosing runs) rebuilds to that copy, so it is not
    rebuilt; anything else is (``fresh_intent``), exactly as before."""
    ours = action.intent
    kind = type(ours)
    if type(intent) is kind:
        for name in INTENT_FIELDS[kind]:
            theirs, mine = getattr(intent, name, None), getattr(ours, name)
            if type(theirs) is not type(mine) or type(mine) not in _PLAIN or theirs != mine:
                break
        else:
            return True
    return fresh_intent(intent).intent_hash == want


def _refusal(action: Action, exc: BaseException) -> dict[str, Any]:
    record: dict[str, Any] = {
        "rail": action.rail,
        "intent": action.intent.wire(),
        "error": type(exc).__name__,
        "detail": _why(exc),
    }
    if isinstance(exc, TierTooLow | TierQuorumNotReached):  # which trust tier refused it
        record["tier"] = exc.tier
    if isinstance(exc, TierTooLow):
        record["required_tier"] = exc.required
    return record


def _unwind(action: Action, task: str, holds: list[Reservation], exc: BaseException) -> Flow[None]:
    """Nothing was signed that left the process: give every hold back, here and remotely —
    unless the attestation was already used for a signature elsewhere (a guard that handed it
    to two runs): the network must keep counting that one."""
    reason = f"not signed: {_why(exc)}"[:1000]
    for held in holds:
        yield Release(held.id, reason)
    if not isinstance(exc, AttestationReplayed):
        yield GatewayRelease(task)
    if action.audited:
        yield Audit(
            "refused" if isinstance(exc, LedgerError | FeeCapExceeded) else "released",
            {
                "rail": action.rail,
                "task_id": task,
                "error": type(exc).__name__,
                "reason": reason,
            },
        )


def settle(flight: InFlight, signed: Signed, outcome: Outcome) -> Flow[Settled]:
    """The ledger, the network and the audit log follow what became of a sent signature. Also
    the tail for a re-send of the same bytes after a lost answer (no new signature)."""
    action, verified = flight.action, flight.verified
    task = verified.task_id
    main, fees = flight.holds[0], flight.holds[1:]
    base = {"rail": action.rail, "task_id": task, "reference": signed.reference}
    if isinstance(outcome, Landed):
        try:
            final: Reservation = yield Commit(main.id, outcome.outcome, outcome.amount)
            for fee in fees:
                yield Commit(fee.id, outcome.outcome, outcome.fee)
        except LedgerUnavailable as exc:
            # It landed (the answer is in hand): throwing it away would make the caller pay
            # again. The holds stay signed, counted at their full amount, for recover().
            yield GatewayCommit(task, outcome.outcome)
            if action.audited:
                yield Audit(
                    "outcome_unknown",
                    {
                        **base,
                        "reservation_id": main.id,
                        "reason": "landed, but the ledger could not record it "
                        f"({_why(exc)}); its reservations stay signed and counted until "
                        "ledger.recover() settles them",
                        **outcome.record,
                    },
                )
            return Settled(verified, main, signed, outcome)
        yield GatewayCommit(task, outcome.outcome)
        spend = action.intent.spend
        if action.audited:
            yield Audit(
                "committed",
                {
                    **base,
                    "amount": str(final.amount),
                    "asset": spend.asset,
                    **({"fee": str(outcome.fee)} if fees and outcome.fee is not None else {}),
                    **outcome.record,
                },
            )
        return Settled(verified, final, signed, outcome)
    if isinstance(outcome, Reverted):
        yield Release(main.id, f"reverted: {outcome.reason}"[:1000])
        for fee in fees:  # the chain charged the fee all the same
            yield Commit(fee.id, "fee of a reverted transaction", outcome.fee)
        yield GatewayRelease(task)
        if action.audited:
            yield Audit("reverted", {**base, "reason": outcome.reason, **outcome.record})
        raise outcome.error
    if isinstance(outcome, NeverLanded):
        for held in flight.holds:
            yield Release(held.id, f"can never land: {outcome.reason}"[:1000])
        yield GatewayRelease(task)
        if action.audited:
            yield Audit("released", {**base, "reason": outcome.reason, **outcome.record})
        raise outcome.error
    if action.audited:
        yield Audit(outcome.kind, {**base, "reason": outcome.reason, **outcome.record})
    if outcome.error is not None:
        raise outcome.error
    return Settled(verified, main, signed, outcome)
