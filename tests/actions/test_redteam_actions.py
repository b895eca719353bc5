"""Attacks on offchain calls, each against the real local stack. Every test names what would
have gone wrong without the defence it checks."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from agentguard import (
    OFFCHAIN_TARGET,
    AgentGuardError,
    AttestationReplayed,
    BudgetExceeded,
    GatewayUnavailable,
    IntentError,
    IntentMismatch,
    PolicyDenied,
    Signer,
    VerifiedAttestation,
    call_intent,
    explain,
)
from agentguard.actions import MAX_ARGUMENTS_BYTES
from agentguard.ledger import Limits, RateCap

from .conftest import AGENT, Stack, dead_guard

USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAYEE = "0x3333333333333333333333333333333333333333"


def _capture(guard: Any) -> list[VerifiedAttestation]:
    seen: list[VerifiedAttestation] = []
    original = guard.authorize

    def authorize(intent: Any, **kw: Any) -> VerifiedAttestation:
        verified = original(intent, **kw)
        seen.append(verified)
        return verified

    guard.authorize = authorize
    return seen


def test_arguments_edited_after_authorization_never_reach_the_function(stack: Stack) -> None:
    """Another thread edits the caller's (mutable) arguments right after the attestation came
    back. Without the frozen copy the function would send to eve, under ann's attestation."""
    guard = stack.guard()
    message = {"to": "ann@example.com", "cc": ["bob@example.com"]}
    original = guard.authorizer.authorize

    def authorize_then_edit(intent: Any, **kw: Any) -> Any:
        attestation = original(intent, **kw)

        def edit() -> None:
            message["to"] = "eve@evil.example"
            message["cc"].append("eve@evil.example")  # type: ignore[attr-defined]

        editor = threading.Thread(target=edit)
        editor.start()
        editor.join()
        return attestation

    guard.authorizer.authorize = authorize_then_edit
    got: list[Any] = []

    @guard.action
    def send_email(message: dict[str, Any]) -> None:
        got.append(message)

    send_email(message)
    assert got == [{"to": "ann@example.com", "cc": ["bob@example.com"]}]
    assert message["to"] == "eve@evil.example"  # the edit happened, to the caller's object only


def test_an_attestation_for_call_a_is_refused_for_call_b(stack: Stack) -> None:
    """A guard stand-in answers call B with the (valid, verified) attestation of call A.
    Without the pipeline's binding check B would run under A's permission."""
    guard = stack.guard()
    a = call_intent(stack.agent, "send_email", {"to": "ann@example.com"}, chain_id=8453)
    verified_a = guard.authorize(a)
    guard.authorize = lambda intent, **kw: verified_a
    ran: list[bool] = []
    with pytest.raises(IntentMismatch):
        guard.run_call("send_email", {"to": "eve@evil.example"}, lambda: ran.append(True))
    assert ran == [] and stack.ledger.usage(stack.agent, 3600).count == 0


def test_a_replayed_attestation_runs_nothing(stack: Stack) -> None:
    """The same verified attestation handed to a second, identical call: without the signing
    ticket being used up, the call would run twice on one permission."""
    guard = stack.guard()
    seen = _capture(guard)
    ran: list[int] = []
    guard.run_call("send_email", {"to": "ann@example.com"}, lambda: ran.append(1))
    guard.authorize = lambda intent, **kw: seen[0]
    with pytest.raises(AttestationReplayed):
        guard.run_call("send_email", {"to": "ann@example.com"}, lambda: ran.append(2))
    assert ran == [1]


def test_the_calls_attestation_can_never_reach_a_signer(stack: Stack) -> None:
    """The port uses up the signing ticket: an attestation for an offchain call (value 0, to a
    codeless address) cannot be turned into a signed transaction afterwards."""
    guard = stack.guard()
    seen = _capture(guard)
    guard.run_call("send_email", {"to": "ann@example.com"}, lambda: None)
    with pytest.raises(AttestationReplayed):
        Signer.from_key(AGENT.private_key).sign_transaction(
            seen[0], nonce=0, gas=60_000, max_fee_per_gas=10**9, max_priority_fee_per_gas=1
        )


def test_a_gateway_answering_for_another_tool_is_refused(stack: Stack) -> None:
    """Asked about ``delete_account``, a lying gateway obtains an allow for ``send_email`` and
    returns it. Without the verifier binding the attestation to the local intent hash, the
    denied tool would run."""
    guard = stack.guard()
    allowed = call_intent(stack.agent, "send_email", {"to": "ann@example.com"}, chain_id=8453)
    original = guard.authorizer.authorize
    guard.authorizer.authorize = lambda intent, **kw: original(allowed, **kw)
    ran: list[bool] = []
    with pytest.raises(IntentMismatch):
        guard.run_call("delete_account", {"id": 1}, lambda: ran.append(True))
    assert ran == [] and stack.kinds() == ["denied"]


def test_a_tool_named_transfer_moves_nothing_and_is_not_an_erc20_transfer(stack: Stack) -> None:
    """``transfer`` as a tool name is ``transfer(string)``: another selector than ERC-20's
    ``transfer(address,uint256)``, valued as an unknown call of 0 ETH to the offchain target.
    A policy allowing ERC-20 transfers does not allow it; naming it in ``offchain_calls`` does,
    and then no token amount is counted, whatever the arguments say."""
    intent = call_intent(stack.agent, "transfer", {"to": PAYEE, "amount": 10**12}, chain_id=8453)
    spend = intent.spend
    assert (spend.kind, spend.amount, spend.recipient) == ("unknown_call", 0, OFFCHAIN_TARGET)
    assert intent.data[:4] != bytes.fromhex("a9059cbb")
    erc20_only = stack.guard(
        {"allowed_functions": ["transfer(address,uint256)"], "max_per_tx": {USDC.lower(): "5"}}
    )
    with pytest.raises(PolicyDenied, match=r"transfer\(string\)"):
        erc20_only.run_call("transfer", {"to": PAYEE, "amount": 10**12}, lambda: None)
    tool = stack.guard({"offchain_calls": ["transfer"], "max_per_tx": {USDC.lower(): "5"}})
    assert tool.run_call("transfer", {"to": PAYEE, "amount": 10**12}, lambda: "ok") == "ok"
    assert stack.last("committed")["amount"] == "0"


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("arguments", "why"),
    [
        ({"body": "x" * MAX_ARGUMENTS_BYTES}, "bytes of JSON"),
        ({"n": float("nan")}, "NaN"),
        ({"deep": _nested(40)}, "deeper"),
        ({1: "x"}, "keys must be strings"),
        ({"blob": b"raw"}, "plain JSON"),
    ],
)
def test_hostile_arguments_are_refused_before_anything_is_asked(
    stack: Stack, arguments: dict[Any, Any], why: str
) -> None:
    """A huge payload would be decoded and evaluated by every operator; NaN, bytes or non-string
    keys have no single JSON form, so two parties could hash two different documents."""
    guard = stack.guard()
    with pytest.raises(IntentError, match=why):
        guard.run_call("send_email", arguments, lambda: None)
    assert stack.asked == []


def test_the_largest_allowed_payload_is_authorized(stack: Stack) -> None:
    guard = stack.guard()
    body = "x" * (MAX_ARGUMENTS_BYTES - len('{"b":""}'))
    assert guard.run_call("send_email", {"b": body}, lambda: len(body)) == len(body)


def test_a_lying_dict_subclass_cannot_show_the_hash_one_thing_and_the_function_another(
    stack: Stack,
) -> None:
    """``items()`` overridden to hide a key from the canonical JSON: the copy is read through
    ``dict``'s own methods, so what is hashed is what the function gets."""

    class Sly(dict[str, Any]):
        def items(self) -> Any:
            return [(k, v) for k, v in super().items() if k != "bcc"]

    guard = stack.guard()
    got: list[Any] = []

    @guard.action
    def send_email(message: dict[str, Any]) -> None:
        got.append(message)

    send_email(Sly(to="ann@example.com", bcc="eve@evil.example"))
    hashed = stack.last("authorized")["intent_hash"]
    expected = call_intent(
        stack.agent,
        "send_email",
        {"message": {"to": "ann@example.com", "bcc": "eve@evil.example"}},
        chain_id=8453,
    )
    assert hashed == "0x" + expected.intent_hash.hex()
    assert got == [{"to": "ann@example.com", "bcc": "eve@evil.example"}]
    assert type(got[0]) is dict


def test_every_refusal_is_an_agentguard_error(stack: Stack) -> None:
    guard = stack.guard()

    @guard.action
    def send_email(to: str) -> None: ...

    with pytest.raises(AgentGuardError):
        send_email()  # type: ignore[call-arg]  # a missing argument is IntentError
    with pytest.raises(AgentGuardError):
        send_email("a", "b")  # type: ignore[call-arg]


def test_two_racing_calls_share_one_rate_slot_once(stack: Stack) -> None:
    """Two threads call the same tool at once under a cap of one call: the local hold is taken
    before the network is asked, so exactly one runs (without it both would be attested)."""
    guard = stack.guard(limits=Limits(rate=[RateCap(3600, 1)]))
    ran: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def call(i: int) -> None:
        start.wait()
        try:
            guard.run_call("send_email", {"to": f"{i}@example.com"}, lambda: ran.append(i))
        except AgentGuardError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ran) == 1 and [type(e) for e in errors] == [BudgetExceeded]
    assert len(stack.asked) == 1


def test_a_call_interrupted_mid_flight_stays_counted(stack: Stack) -> None:
    """Interrupted while the function runs (KeyboardInterrupt, not an Exception): the call may
    have happened, so its reservation stays counted; it is never given back."""
    guard = stack.guard()

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        guard.run_call("send_email", {"to": "ann@example.com"}, interrupted)
    assert stack.ledger.usage(stack.agent, 3600).count == 1
    assert stack.kinds()[-1] == "signed"  # nothing after the call claims it did not happen


def test_a_gateway_that_never_answers_runs_nothing_and_keeps_nothing(stack: Stack) -> None:
    """No answer is no permission: the function does not run, the local hold is given back, and
    the agent is told to retry later."""
    guard = dead_guard(stack)
    ran: list[bool] = []
    with pytest.raises(GatewayUnavailable) as caught:
        guard.run_call("send_email", {"to": "a@example.com"}, lambda: ran.append(True))
    assert ran == [] and stack.ledger.usage(stack.agent, 3600).count == 0
    assert "Retry later" in explain(caught.value)
