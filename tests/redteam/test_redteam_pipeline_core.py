"""Red team: a hostile agent host against the pipeline itself — its own Guard subclass, an
intent edited between steps, one attestation handed to two runs. Real Verifier (a local
ECDSA quorum), real Signer, real Ledger; the port signs with the Signer and reports a
landing without a chain (what moved is what the Signer signed)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard import Attestation, Guard, Signer, TransactionIntent, Verifier
from agentguard._exceptions import AgentGuardError, AttestationReplayed, IntentMismatch
from agentguard._signer import SignedTransaction
from agentguard._verifier import VerifiedAttestation
from agentguard.ledger import Ledger, Limits
from agentguard.pipeline import Action, Landed, Prepared, Runner, Signed, Step
from tests.unit.conftest import POLICY_CLIENT as CLIENT
from tests.unit.conftest import Operators

TOKEN = "0x2222222222222222222222222222222222222222"
PAYEE = "0x3333333333333333333333333333333333333333"
OPERATORS = Operators([PrivateKey() for _ in range(3)])
SIGNER = Signer.from_key("0x" + "b7" * 32)


def transfer(amount: int) -> TransactionIntent:
    return TransactionIntent.erc20_transfer(
        sender=SIGNER.address, token=TOKEN, recipient=PAYEE, amount=amount, chain_id=8453
    )


class Quorum:
    """An ``Authorizer``: three operators that allow everything; remembers releases."""

    def __init__(self) -> None:
        self.released: list[str] = []
        self.committed: list[str] = []

    def authorize(self, intent: Any, *, wasm_args: Mapping[str, Any] | None = None) -> Attestation:
        return OPERATORS.attest(intent, signers=[0, 1, 2])

    def release(self, task_id: str) -> None:
        self.released.append(task_id)

    def commit(self, task_id: str, outcome: str) -> None:
        self.committed.append(task_id)

    def close(self) -> None:
        pass


def guard_with(cls: type[Guard] = Guard) -> Guard:
    verifier = Verifier(OPERATORS.addresses, policy_client=CLIENT)
    return cls(Quorum(), verifier)


class SigningPort:
    """Signs with the real Signer; 'sends' by keeping the bytes; reports a landing."""

    def __init__(self) -> None:
        self.signed: list[SignedTransaction] = []

    def prepare(self, verified: VerifiedAttestation) -> Prepared:
        return Prepared()

    def sign(self, verified: VerifiedAttestation, prepared: Prepared) -> Signed:
        tx = SIGNER.sign_transaction(
            verified, nonce=len(self.signed), gas=100_000, max_fee_per_gas=10**9,
            max_priority_fee_per_gas=10**6,
        )  # fmt: skip
        self.signed.append(tx)
        return Signed(reference=tx.hash, payload=tx)

    def abandon(self, prepared: Prepared) -> None:
        pass

    def send(self, signed: Signed) -> Landed:
        return Landed(signed.reference)

    def confirm(self, signed: Signed) -> Landed:
        raise AssertionError("send answered with an outcome")


def action(amount: int) -> Action:
    return Action(
        agent=SIGNER.address, intent=transfer(amount), limits=Limits(), rail="transaction"
    )


def spent(ledger: Ledger) -> int:
    return ledger.usage(SIGNER.address, 3600).spent.get(TOKEN.lower(), 0)


def test_a_guard_answering_for_another_intent_signs_nothing() -> None:
    """Before: a Guard subclass (or any duck-typed guard) whose ``authorize`` returned a genuinely
    verified attestation for a 1,000,000-unit transfer while the action asked for 1 unit got
    the big transfer signed and landed, with 1 unit counted in the ledger. Now the pipeline
    checks that what was verified is the action's own intent."""

    class Swapping(Guard):
        def authorize(self, intent: Any, *, wasm_args: Any = None) -> VerifiedAttestation:
            return super().authorize(transfer(1_000_000), wasm_args=wasm_args)

    port, ledger = SigningPort(), Ledger()
    with pytest.raises(IntentMismatch):
        Runner(guard_with(Swapping), ledger).run(action(1), port)
    assert port.signed == [] and spent(ledger) == 0


def test_an_intent_edited_between_steps_is_not_what_gets_authorized() -> None:
    """Before: the flow read ``action.intent`` again at each step, so a host that swapped the
    (frozen, but not tamper-proof) field after the local hold was taken had a 1,000,000-unit
    transfer authorized, signed and landed against a 1-unit hold. Now the flow works on its own
    copy of the intent taken before the first step."""
    act = action(1)

    class Swapper(Runner):
        def execute(self, step: Step, port: Any = None) -> Any:
            result = super().execute(step, port)
            object.__setattr__(act, "intent", transfer(1_000_000))
            return result

    port, ledger = SigningPort(), Ledger()
    settled = Swapper(guard_with(), ledger).run(act, port)
    (tx,) = port.signed
    assert settled.verified.intent.intent_hash == transfer(1).intent_hash
    assert tx.raw.hex().count(f"{1_000_000:064x}") == 0 and spent(ledger) == 1


def test_one_attestation_handed_to_two_runs_signs_once_and_releases_nothing_remotely() -> None:
    """A guard that hands the same verified attestation to two runs (a cache): the second run's
    signature is refused (one per attestation). Before: its unwinding told the network the
    attestation was unused (``release``) although the first run had signed and landed under
    it, so the network stopped counting a spend that happened. Now a run that finds its
    attestation already used gives back only its own local hold."""
    cache: dict[str, VerifiedAttestation] = {}

    class Caching(Guard):
        def authorize(self, intent: Any, *, wasm_args: Any = None) -> VerifiedAttestation:
            key = intent.intent_hash.hex()
            if key not in cache:
                cache[key] = super().authorize(intent, wasm_args=wasm_args)
            return cache[key]

    guard, port, ledger = guard_with(Caching), SigningPort(), Ledger()
    runner = Runner(guard, ledger)
    first = runner.run(action(5), port)
    with pytest.raises(AttestationReplayed):
        runner.run(action(5), port)
    assert len(port.signed) == 1 and spent(ledger) == 5
    assert guard.flush() == 0  # the gateway's bookkeeping runs in the background
    assert guard.authorizer.released == []  # type: ignore[attr-defined]
    assert guard.authorizer.committed == [first.verified.task_id]  # type: ignore[attr-defined]


def test_a_non_verified_object_from_the_guard_is_refused_before_the_port() -> None:
    """A guard returning a look-alike (not a ``VerifiedAttestation``): refused before the port
    prepares anything (before: the port's ``prepare`` ran with it and the signer refused)."""

    class Fake(Guard):
        def authorize(self, intent: Any, *, wasm_args: Any = None) -> Any:
            real = super().authorize(intent, wasm_args=wasm_args)
            return type("Look", (), {"intent": real.intent, "task_id": real.task_id,
                                     "expires_at": real.expires_at})()  # fmt: skip

    class Port(SigningPort):
        def prepare(self, verified: VerifiedAttestation) -> Prepared:
            raise AssertionError("prepared for an unverified attestation")

    ledger = Ledger()
    with pytest.raises(AgentGuardError):
        Runner(guard_with(Fake), ledger).run(action(1), Port())
    assert spent(ledger) == 0
