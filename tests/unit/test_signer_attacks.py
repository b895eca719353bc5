"""Attacks on the Signer with a genuinely verified attestation (issue 7, findings 4 and 9).

Every attestation here is signed by real operator keys and passed through the real Verifier;
the attacker is the code holding the ``VerifiedAttestation``. Each test names what the
Signer did before the signing tickets existed.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from eth_account import Account

from agentguard import (
    AttestationExpired,
    AttestationReplayed,
    FeeCap,
    FeeCapExceeded,
    IntentError,
    IntentMismatch,
    OnchainCheckRequired,
    PaymentIntent,
    Signer,
    TransactionIntent,
    VerifiedAttestation,
    Verifier,
)
from agentguard._verifier import NewtonBindingVerifier
from agentguard.testing import SigningSpy
from agentguard.x402.upto.client import UPTO_PERMIT2_PROXY

from .conftest import PAYEE, POLICY_CLIENT, TOKEN
from .test_signer import KEY, _permit2, eip3009

THIEF = "0x000000000000000000000000000000000000dEaD"
TX = {"gas": 60_000, "max_fee_per_gas": 10**9, "max_priority_fee_per_gas": 10**6}


@pytest.fixture
def signer() -> Signer:
    return Signer.from_key(KEY)


@pytest.fixture
def spy() -> Iterator[SigningSpy]:
    with SigningSpy() as s:
        yield s


@pytest.fixture
def verify(operators) -> Callable[..., VerifiedAttestation]:
    def run(intent: TransactionIntent | PaymentIntent, **attest: Any) -> VerifiedAttestation:
        verifier = Verifier(operators.addresses, policy_client=POLICY_CLIENT)
        return verifier.verify(operators.attest(intent.newton_intent(), **attest), intent)

    return run


def transfer(signer: Signer, amount: int = 7, recipient: str = PAYEE) -> TransactionIntent:
    return TransactionIntent.erc20_transfer(
        sender=signer.address, token=TOKEN, recipient=recipient, amount=amount, chain_id=8453
    )


def payment(signer: Signer, scheme: str = "exact") -> PaymentIntent:
    return PaymentIntent(
        payer=signer.address, scheme=scheme, network="eip155:8453", asset=TOKEN,
        amount=10_000, pay_to=PAYEE,
    )  # fmt: skip


# -- one signature per attestation -----------------------------------------------------------


def test_one_verification_signs_one_transaction(signer, verify, spy):
    """Before: one verification produced three transactions (nonces 0, 1, 2)."""
    verified = verify(transfer(signer))
    signer.sign_transaction(verified, nonce=0, **TX)
    for nonce in (1, 2):
        with pytest.raises(AttestationReplayed, match="one per attestation"):
            signer.sign_transaction(verified, nonce=nonce, **TX)
    assert spy.calls == ["sign_transaction"]


def test_one_verification_signs_one_payment(signer, verify, spy):
    """Before: one verification produced three separately settleable EIP-3009 authorizations
    (each with its own nonce)."""
    verified = verify(payment(signer))
    signer.sign_payment(verified, eip3009(signer.address, PAYEE, 10_000))
    for nonce in (b"\x08" * 32, b"\x09" * 32):
        typed = eip3009(signer.address, PAYEE, 10_000)
        typed["message"]["nonce"] = nonce
        with pytest.raises(AttestationReplayed):
            signer.sign_payment(verified, typed)
    with pytest.raises(AttestationReplayed):  # nor by another signing method
        signer.sign_vault_payment(verified, eip3009(signer.address, PAYEE, 10_000), vault=THIEF)
    assert spy.calls == ["sign_typed_data"]


def test_a_second_signer_in_the_process_cannot_sign_it_again(signer, verify, spy):
    """Before: the 'once' lived nowhere the Signer looked, so a second Signer of the same key
    signed the same attestation again."""
    verified = verify(transfer(signer))
    signer.sign_transaction(verified, nonce=0, **TX)
    with pytest.raises(AttestationReplayed):
        Signer.from_key(KEY).sign_transaction(verified, nonce=1, **TX)
    assert spy.calls == ["sign_transaction"]


def test_concurrent_signing_signs_once(signer, verify, spy):
    """Sixteen threads racing on one attestation: exactly one transaction."""
    verified = verify(transfer(signer))
    start = threading.Barrier(16)
    outcomes: list[str] = []

    def race(nonce: int) -> None:
        start.wait()
        try:
            signer.sign_transaction(verified, nonce=nonce, **TX)
            outcomes.append("signed")
        except AttestationReplayed:
            outcomes.append("replayed")

    threads = [threading.Thread(target=race, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["replayed"] * 15 + ["signed"]
    assert spy.calls == ["sign_transaction"]


def test_verifying_the_same_attestation_twice_in_one_process_is_refused(signer, operators):
    """Two Verifiers with separate replay guards each accepted the same attestation; the
    process-wide ticket registry knows it was already verified."""
    intent = transfer(signer)
    attestation = operators.attest(intent)
    Verifier(operators.addresses, policy_client=POLICY_CLIENT).verify(attestation, intent)
    with pytest.raises(AttestationReplayed):
        Verifier(operators.addresses, policy_client=POLICY_CLIENT).verify(attestation, intent)


def test_refused_arguments_sign_nothing_and_leave_the_one_signature(signer, verify, spy):
    """A call refused for its own arguments signs nothing; the corrected call signs once."""
    verified = verify(transfer(signer))
    with pytest.raises(FeeCapExceeded):
        signer.sign_transaction(
            verified, nonce=0, gas=30_000_000, max_fee_per_gas=10**9, max_priority_fee_per_gas=1
        )
    signer.sign_transaction(verified, nonce=0, **TX)
    with pytest.raises(AttestationReplayed):
        signer.sign_transaction(verified, nonce=0, **TX)
    assert spy.calls == ["sign_transaction"]


# -- expiry ----------------------------------------------------------------------------------


def test_signing_after_expiry_is_refused(verify, spy):
    """Before: the Signer signed 10,000 s after the attestation expired."""
    later = Signer.from_key(KEY, clock=lambda: time.time() + 10_000)
    verified = verify(transfer(later))
    with pytest.raises(AttestationExpired):
        later.sign_transaction(verified, nonce=0, **TX)
    with pytest.raises(AttestationReplayed):  # an expired ticket is gone, not waiting
        Signer.from_key(KEY).sign_transaction(verified, nonce=0, **TX)
    paid = verify(payment(later))
    with pytest.raises(AttestationExpired):
        later.sign_payment(paid, eip3009(later.address, PAYEE, 10_000))
    assert spy.calls == []


def test_expiry_is_exact(verify):
    now = int(time.time())
    verified = verify(transfer(Signer.from_key(KEY)), expires_at=now + 30)
    with pytest.raises(AttestationExpired):
        Signer.from_key(KEY, clock=lambda: now + 30).sign_transaction(verified, nonce=0, **TX)
    fresh = verify(transfer(Signer.from_key(KEY)), expires_at=now + 30)
    assert Signer.from_key(KEY, clock=lambda: now + 29.9).sign_transaction(fresh, nonce=0, **TX)


# -- the intent is re-hashed at signing time -------------------------------------------------


def test_replaced_intent_is_refused(signer, verify, spy):
    """Before: ``dataclasses.replace(verified, intent=...)`` signed the replacement."""
    verified = verify(transfer(signer, amount=7))
    stolen = dataclasses.replace(verified, intent=transfer(signer, amount=10**12, recipient=THIEF))
    with pytest.raises(IntentMismatch, match="altered"):
        signer.sign_transaction(stolen, nonce=0, **TX)
    with pytest.raises(AttestationReplayed):  # tampering uses the attestation up for good
        signer.sign_transaction(verified, nonce=0, **TX)
    assert spy.calls == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("to", THIEF), ("value", 10**18), ("chain_id", 1), ("to", object()), ("data", 123)],
)
def test_intent_mutated_after_verification_is_refused(signer, verify, spy, field, value):
    """Before: ``object.__setattr__`` on the verified intent signed the changed intent (its
    ``intent_hash`` is a cached property, so it still reported the attested hash)."""
    intent = transfer(signer)
    verified = verify(intent)
    object.__setattr__(intent, field, value)
    assert intent.intent_hash == verified.attestation.intent_hash  # the stale cache
    with pytest.raises(IntentMismatch):
        signer.sign_transaction(verified, nonce=0, **TX)
    assert spy.calls == []


def test_calldata_mutated_after_verification_is_refused(signer, verify, spy):
    intent = transfer(signer, amount=7)
    verified = verify(intent)
    thief_call = transfer(signer, amount=10**12, recipient=THIEF).data
    object.__setattr__(intent, "data", thief_call)
    with pytest.raises(IntentMismatch):
        signer.sign_transaction(verified, nonce=0, **TX)
    assert spy.calls == []


def test_payment_mutated_after_verification_is_refused(signer, verify, spy):
    intent = payment(signer)
    verified = verify(intent)
    object.__setattr__(intent, "pay_to", THIEF)
    with pytest.raises(IntentMismatch):
        signer.sign_payment(verified, eip3009(signer.address, THIEF, 10_000))
    assert spy.calls == []


def test_intent_mutated_before_verification_is_refused(signer, operators, spy):
    """The cached hash of an intent mutated between hashing and verification no longer fools
    the Verifier: it hashes a fresh copy of the fields."""
    intent = transfer(signer)
    attestation = operators.attest(intent)  # caches intent.intent_hash
    object.__setattr__(intent, "to", THIEF)
    with pytest.raises(IntentMismatch):
        Verifier(operators.addresses, policy_client=POLICY_CLIENT).verify(attestation, intent)
    assert spy.calls == []


def test_swapping_in_another_verified_attestation_is_refused(signer, verify, spy):
    """Two genuine verifications; the attacker pairs the small one's attestation with the big
    one's intent (and the other way round)."""
    small, big = transfer(signer, amount=1), transfer(signer, amount=10**9)
    with pytest.raises(IntentMismatch):
        signer.sign_transaction(dataclasses.replace(verify(small), intent=big), nonce=0, **TX)
    mixed = dataclasses.replace(verify(big), attestation=verify(small).attestation)
    with pytest.raises(IntentMismatch):
        signer.sign_transaction(mixed, nonce=0, **TX)
    assert spy.calls == []


def test_attestation_mutated_after_verification_is_refused(signer, verify, spy):
    """A vault call carries the attestation: a later edit (another expiry) must not be signed."""
    verified = verify(transfer(signer))
    object.__setattr__(verified.attestation, "expires_at", verified.expires_at + 3600)
    with pytest.raises(IntentMismatch, match="altered"):
        signer.sign_transaction(verified, nonce=0, **TX)
    assert spy.calls == []


# -- gas and fees ----------------------------------------------------------------------------


def test_gas_and_fees_are_capped(signer, verify, spy):
    """Before: it signed 30M gas at 10^15 wei per gas (3 * 10^22 wei of fees)."""
    verified = verify(transfer(signer))
    for gas, fee, match in [
        (30_000_000, 10**9, "gas 30000000"),
        (60_000, 10**15, "max_fee_per_gas"),
        (2_000_000, 49 * 10**9, "in fees"),  # each within its cap, the product is not
    ]:
        with pytest.raises(FeeCapExceeded, match=match):
            signer.sign_transaction(
                verified, nonce=0, gas=gas, max_fee_per_gas=fee, max_priority_fee_per_gas=1
            )
    assert spy.calls == []
    roomy = Signer.from_key(
        KEY, fees=FeeCap(max_gas=30_000_000, max_fee_per_gas=10**12, max_fee=10**19)
    )
    assert roomy.sign_transaction(
        verified, nonce=0, gas=3_000_000, max_fee_per_gas=10**11, max_priority_fee_per_gas=1
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("gas", 60_000.0),
        ("gas", True),
        ("gas", -1),
        ("gas", 2**64),
        ("gas", "60000"),
        ("nonce", 1.5),
        ("nonce", -1),
        ("nonce", 2**64 - 1),
        ("nonce", None),
        ("max_fee_per_gas", 2**256),
        ("max_fee_per_gas", 1e9),
        ("max_priority_fee_per_gas", -5),
        ("max_priority_fee_per_gas", 2 * 10**9),  # above max_fee_per_gas
    ],
)
def test_malformed_transaction_numbers_are_typed_errors(signer, verify, spy, field, value):
    """Before: floats, negatives and over-wide numbers surfaced as rlp/eth_utils errors (or
    were signed: a bool is an int)."""
    verified = verify(transfer(signer))
    with pytest.raises(IntentError, match=field):
        signer.sign_transaction(verified, **{"nonce": 0, **TX, field: value})
    assert spy.calls == []


@pytest.mark.parametrize(
    "fees",
    [
        {"max_gas": 0},
        {"max_fee_per_gas": -1},
        {"max_fee": 1.5},
        {"max_gas": True},
    ],
)
def test_fee_cap_configuration_is_checked(fees):
    from agentguard import ConfigurationError

    with pytest.raises(ConfigurationError):
        FeeCap(**fees)
    with pytest.raises(ConfigurationError):
        Signer.from_key(KEY, fees={"max_gas": 1})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Signer.from_key(KEY, clock=0)  # type: ignore[arg-type]


def test_malformed_vault_address_is_a_typed_error(signer, verify, spy):
    verified = verify(transfer(signer))
    with pytest.raises(IntentError, match="vault"):
        signer.sign_transaction(verified, nonce=0, **TX, vault=12345)  # type: ignore[arg-type]
    assert spy.calls == []


# -- payment validity windows ----------------------------------------------------------------


def test_eip3009_valid_before_may_not_outlive_the_attestation(signer, verify, spy):
    """Before: an authorization valid for 2^40 s was signed under a one-minute attestation."""
    now = int(time.time())
    verified = verify(payment(signer), expires_at=now + 60)
    late = eip3009(signer.address, PAYEE, 10_000)
    late["message"]["validBefore"] = now + 61
    with pytest.raises(IntentMismatch, match="validBefore"):
        signer.sign_payment(verified, late)
    future = eip3009(signer.address, PAYEE, 10_000)
    future["message"]["validAfter"] = now + 3600
    with pytest.raises(IntentMismatch, match="validAfter"):
        signer.sign_payment(verified, future)
    for bad in ("soon", 1.5e9, None):
        odd = eip3009(signer.address, PAYEE, 10_000)
        odd["message"]["validBefore"] = bad
        with pytest.raises(IntentMismatch, match="validBefore"):
            signer.sign_payment(verified, odd)
    assert spy.calls == []
    exact = eip3009(signer.address, PAYEE, 10_000)
    exact["message"]["validBefore"] = now + 60
    assert signer.sign_payment(verified, exact)


def test_permit2_deadline_may_not_outlive_the_attestation(signer, verify, spy):
    now = int(time.time())
    verified = verify(payment(signer, "upto"), expires_at=now + 60)
    typed = _permit2(TOKEN, UPTO_PERMIT2_PROXY)
    typed["message"]["deadline"] = now + 3600
    with pytest.raises(IntentMismatch, match="deadline"):
        signer.sign_payment(verified, typed, permit2_spenders=[UPTO_PERMIT2_PROXY])
    assert spy.calls == []
    typed["message"]["deadline"] = now + 60
    assert signer.sign_payment(verified, typed, permit2_spenders=[UPTO_PERMIT2_PROXY])


def test_an_attested_scheme_is_the_one_signed(signer, verify, spy):
    """Before: an attestation for an ``upto`` session maximum signed an ``exact`` EIP-3009
    transfer of that maximum (paid in full, whatever the server would have charged), and an
    ``exact`` attestation signed a Permit2 ``upto`` authorization; a policy that tells the
    schemes apart was deciding about a payment that was not the one signed."""
    now = int(time.time())
    upto = verify(payment(signer, "upto"), expires_at=now + 60)
    as_exact = eip3009(signer.address, PAYEE, 10_000)
    as_exact["message"]["validBefore"] = now + 60
    with pytest.raises(IntentMismatch, match="scheme"):
        signer.sign_payment(upto, as_exact)
    fields = as_exact["message"]
    with pytest.raises(IntentMismatch, match="scheme"):  # the one-pass path: the same verdict
        signer.sign_eip3009(
            upto, name="USD Coin", version="2", chain_id=8453, token=TOKEN,
            payer=fields["from"], to=fields["to"], value=fields["value"],
            valid_after=fields["validAfter"], valid_before=fields["validBefore"],
            nonce="0x" + fields["nonce"].hex(),
        )  # fmt: skip
    exact = verify(payment(signer, "exact"), expires_at=now + 60)
    as_upto = _permit2(TOKEN, UPTO_PERMIT2_PROXY)
    as_upto["message"]["deadline"] = now + 60
    with pytest.raises(IntentMismatch, match="scheme"):
        signer.sign_payment(exact, as_upto, permit2_spenders=[UPTO_PERMIT2_PROXY])
    assert spy.calls == []
    # each signs its own scheme (refusals above did not spend the attestation)
    assert signer.sign_payment(upto, as_upto, permit2_spenders=[UPTO_PERMIT2_PROXY])
    assert signer.sign_payment(exact, as_exact)


@pytest.mark.parametrize(
    "typed",
    [None, [], "typed", {"primaryType": "TransferWithAuthorization", "domain": [1], "message": 7}],
)
def test_malformed_typed_data_is_a_typed_error(signer, verify, spy, typed):
    with pytest.raises(IntentMismatch):
        signer.sign_payment(verify(payment(signer)), typed)
    assert spy.calls == []


# -- finding 9: unchecked (Newton BLS) attestations never reach an EOA signature --------------


def newton_verified(intent: TransactionIntent | PaymentIntent, operators) -> VerifiedAttestation:
    """A Newton-shaped answer with made-up BLS data, through NewtonBindingVerifier."""
    bls = operators.attest(intent.newton_intent(), expires_at=130, keys=[]).model_copy(
        update={"scheme": "newton-bls"}
    )
    verifier = NewtonBindingVerifier(policy_client=POLICY_CLIENT, block_number=lambda: 100)
    return verifier.verify(bls, intent)


def test_newton_binding_attestation_never_signs_an_eoa_transaction(signer, operators, spy):
    """Before: a Newton-shaped answer with fake BLS data got an EOA transaction signed."""
    verified = newton_verified(transfer(signer), operators)
    with pytest.raises(OnchainCheckRequired):
        signer.sign_transaction(verified, nonce=0, **TX)
    assert spy.calls == []


def test_newton_binding_attestation_never_signs_a_payment(signer, operators, spy):
    """Before: the same fake answer got an EIP-3009 payment signed."""
    verified = newton_verified(payment(signer), operators)
    with pytest.raises(OnchainCheckRequired):
        signer.sign_payment(verified, eip3009(signer.address, PAYEE, 10_000))
    assert spy.calls == []


def test_claiming_a_higher_assurance_does_not_help(signer, operators, spy):
    """The assurance the Signer trusts is the verifier's record, not the object's field."""
    verified = newton_verified(transfer(signer), operators)
    object.__setattr__(verified, "assurance", "quorum-ecdsa")
    with pytest.raises(OnchainCheckRequired):
        signer.sign_transaction(verified, nonce=0, **TX)
    forged = dataclasses.replace(
        newton_verified(payment(signer), operators), assurance="quorum-ecdsa"
    )
    with pytest.raises(OnchainCheckRequired):
        signer.sign_payment(forged, eip3009(signer.address, PAYEE, 10_000))
    assert spy.calls == []


def test_newton_binding_attestation_in_vault_mode_is_left_to_the_contract(signer, operators, spy):
    """Vault mode is the only place such an attestation may go, and only a Newton-mode vault's
    ``executeNewton`` for an intent the agent sends (Newton's ``intent.from == msg.sender``):
    an intent shaped for an ECDSA vault (sent by the vault) is refused and nothing is signed.
    (tests/wallet/test_newton_vault_wallet.py sends the Newton-shaped one end to end.)"""
    intent = TransactionIntent.erc20_transfer(
        sender=POLICY_CLIENT, token=TOKEN, recipient=PAYEE, amount=7, chain_id=8453
    )
    verified = newton_verified(intent, operators)
    with pytest.raises(IntentMismatch, match="not " + signer.address):
        signer.sign_transaction(verified, nonce=0, **TX, vault=POLICY_CLIENT)
    assert spy.calls == []


def test_the_signed_transaction_is_the_attested_one(signer, verify):
    """The happy path still holds: the transaction recovers to the key and carries the intent."""
    intent = transfer(signer)
    signed = signer.sign_transaction(verify(intent), nonce=0, **TX)
    assert Account.recover_transaction(signed.raw) == signer.address
