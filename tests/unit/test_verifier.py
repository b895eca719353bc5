from __future__ import annotations

import time

import pytest
from coincurve import PrivateKey

from agentguard import (
    ApprovalRequired,
    AttestationExpired,
    AttestationReplayed,
    ConfigurationError,
    DuplicateSignature,
    InsufficientQuorum,
    IntentMismatch,
    MalformedSignature,
    PolicyDenied,
    UnknownOperator,
    VerificationError,
    VerifiedAttestation,
    Verifier,
)
from agentguard._attestation import OperatorSignature

from .conftest import POLICY_CLIENT


@pytest.fixture
def verifier(operators):
    return Verifier(operators.addresses, policy_client=POLICY_CLIENT)


def test_two_of_three_verifies(verifier, operators, intent):
    verified = verifier.verify(operators.attest(intent), intent)
    assert verified.intent is intent
    assert len(verified.signers) == 2
    assert verified.assurance == "quorum-ecdsa"


def test_threshold_follows_newtons_rule(operators):
    def threshold(pct: int) -> int:
        return Verifier(
            operators.addresses, policy_client=POLICY_CLIENT, threshold_percentage=pct
        ).threshold

    assert threshold(66) == 2  # 2*100 >= 3*66
    assert threshold(67) == 3  # 2*100 < 3*67
    assert threshold(34) == 2
    assert threshold(33) == 1


def test_deny_is_final_and_readable(verifier, operators, intent):
    attestation = operators.attest(intent, decision="deny", reasons=("amount 5 exceeds cap 1",))
    with pytest.raises(PolicyDenied, match="amount 5 exceeds cap 1") as info:
        verifier.verify(attestation, intent)
    assert info.value.reasons == ["amount 5 exceeds cap 1"]


def test_approval_required_carries_the_intent_hash(verifier, operators, intent):
    with pytest.raises(ApprovalRequired) as info:
        verifier.verify(operators.attest(intent, decision="approval_required"), intent)
    assert info.value.intent_hash == "0x" + intent.intent_hash.hex()


def test_other_intent_is_refused(verifier, operators, intent, make_intent):
    with pytest.raises(IntentMismatch):
        verifier.verify(operators.attest(make_intent(amount=999)), intent)


def test_forged_intent_hash_field_still_fails_on_signatures(
    verifier, operators, intent, make_intent
):
    other = operators.attest(make_intent(amount=999))
    forged = other.model_copy(update={"intent_hash": intent.intent_hash})
    with pytest.raises(UnknownOperator):
        verifier.verify(forged, intent)


def test_other_chain_is_refused(verifier, operators, intent):
    with pytest.raises(UnknownOperator):
        verifier.verify(operators.attest(intent, chain_id=1), intent)


def test_other_policy_client_is_refused(verifier, operators, intent):
    other = "0x000000000000000000000000000000000000dEaD"
    with pytest.raises(IntentMismatch):
        verifier.verify(operators.attest(intent, policy_client=other), intent)


def test_pinned_policy_id(operators, intent):
    verifier = Verifier(
        operators.addresses, policy_client=POLICY_CLIENT, policy_id="0x" + "02" * 32
    )
    verifier.verify(operators.attest(intent), intent)
    with pytest.raises(IntentMismatch, match="policy id"):
        verifier.verify(operators.attest(intent, policy_id=b"\x03" * 32), intent)


def test_expired_is_refused(verifier, operators, intent):
    with pytest.raises(AttestationExpired):
        verifier.verify(operators.attest(intent, expires_at=int(time.time()) - 1), intent)


def test_absurd_lifetime_is_refused(verifier, operators, intent):
    with pytest.raises(AttestationExpired, match="lifetime"):
        verifier.verify(operators.attest(intent, expires_at=int(time.time()) + 10 * 86400), intent)


def test_injected_clock_expires(operators, intent):
    now = [time.time()]
    verifier = Verifier(operators.addresses, policy_client=POLICY_CLIENT, clock=lambda: now[0])
    attestation = operators.attest(intent, expires_at=int(now[0]) + 30)
    now[0] += 31
    with pytest.raises(AttestationExpired):
        verifier.verify(attestation, intent)


def test_replay_is_refused(verifier, operators, intent):
    attestation = operators.attest(intent)
    verifier.verify(attestation, intent)
    with pytest.raises(AttestationReplayed):
        verifier.verify(attestation, intent)


def test_unknown_key_is_refused_even_with_a_quorum(verifier, operators, intent):
    stranger = PrivateKey()
    attestation = operators.attest(intent, keys=[operators.keys[0], operators.keys[1], stranger])
    with pytest.raises(UnknownOperator):
        verifier.verify(attestation, intent)


def test_duplicate_signatures_do_not_make_a_quorum(verifier, operators, intent):
    attestation = operators.attest(intent, keys=[operators.keys[0], operators.keys[0]])
    with pytest.raises(DuplicateSignature):
        verifier.verify(attestation, intent)


def test_too_few_signatures(verifier, operators, intent):
    with pytest.raises(InsufficientQuorum):
        verifier.verify(operators.attest(intent, signers=[2]), intent)
    with pytest.raises(InsufficientQuorum):
        verifier.verify(operators.attest(intent, keys=[]), intent)


def test_high_s_signature_is_refused(verifier, operators, intent):
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    attestation = operators.attest(intent)
    sig = attestation.signatures[0].signature
    s = int.from_bytes(sig[32:64], "big")
    flipped = sig[:32] + (n - s).to_bytes(32, "big") + bytes([55 - sig[64]])
    tampered = attestation.model_copy(
        update={
            "signatures": (
                OperatorSignature(operator=attestation.signatures[0].operator, signature=flipped),
                attestation.signatures[1],
            )
        }
    )
    with pytest.raises(MalformedSignature, match="high s"):
        verifier.verify(tampered, intent)


@pytest.mark.parametrize("signature", [b"", b"\x01" * 64, b"\x01" * 64 + b"\x05", b"\x00" * 65])
def test_malformed_signatures(verifier, operators, intent, signature):
    attestation = operators.attest(intent)
    tampered = attestation.model_copy(
        update={
            "signatures": (OperatorSignature(operator=operators.addresses[0], signature=signature),)
        }
    )
    with pytest.raises(MalformedSignature):
        verifier.verify(tampered, intent)


def test_newton_bls_attestations_need_the_onchain_check(verifier, operators, intent):
    attestation = operators.attest(intent).model_copy(update={"scheme": "newton-bls"})
    with pytest.raises(VerificationError, match="onchain"):
        verifier.verify(attestation, intent)


def test_verified_attestation_cannot_be_forged(operators, intent):
    with pytest.raises(VerificationError):
        VerifiedAttestation(
            attestation=operators.attest(intent),
            intent=intent,
            signers=(),
            assurance="forged",
            expires_at=2**40,
            _token=object(),
        )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 0},
        {"threshold": 4},
        {"threshold_percentage": 0},
        {"threshold_percentage": 101},
    ],
)
def test_bad_configuration(operators, kwargs):
    with pytest.raises(ConfigurationError):
        Verifier(operators.addresses, policy_client=POLICY_CLIENT, **kwargs)
    with pytest.raises(ConfigurationError):
        Verifier([], policy_client=POLICY_CLIENT)


def test_newton_binding_verifier_checks_what_python_can(operators, intent, make_intent):
    from agentguard._verifier import NewtonBindingVerifier

    block = [100]
    verifier = NewtonBindingVerifier(policy_client=POLICY_CLIENT, block_number=lambda: block[0])
    bls = operators.attest(intent, expires_at=130, keys=[]).model_copy(
        update={"scheme": "newton-bls"}
    )
    verified = verifier.verify(bls, intent)
    assert verified.assurance == "newton-bls-binding"
    with pytest.raises(AttestationReplayed):
        verifier.verify(bls, intent)
    other = operators.attest(make_intent(amount=3), expires_at=130, keys=[]).model_copy(
        update={"scheme": "newton-bls"}
    )
    with pytest.raises(IntentMismatch):
        verifier.verify(other, intent)
    block[0] = 130
    late = operators.attest(intent, expires_at=130, keys=[]).model_copy(
        update={"scheme": "newton-bls"}
    )
    with pytest.raises(AttestationExpired):
        verifier.verify(late, intent)
    with pytest.raises(VerificationError):  # an ECDSA attestation is not for this verifier
        NewtonBindingVerifier(policy_client=POLICY_CLIENT, block_number=lambda: 0).verify(
            operators.attest(intent), intent
        )


GOOD = "0x000000000000000000000000000000000000c1E7"


@pytest.mark.parametrize(
    "address",
    [
        "0x000000000000000000000000000000000000C1e7",  # mixed case, wrong EIP-55 checksum
        "0x000000000000000000000000000000000000c1e",  # 19.5 bytes
        "0x000000000000000000000000000000000000c1E7aa",
        "000000000000000000000000000000000000c1E7",
        "0xzz0000000000000000000000000000000000c1E7",
        "",
        None,
        12345,
        b"\x00" * 20,
    ],
)
def test_malformed_operator_or_client_addresses_are_configuration_errors(operators, address):
    """Before: these raised eth_utils' ValueError/TypeError, and a wrong checksum was accepted
    silently (a one-character typo names another account)."""
    from agentguard._verifier import NewtonBindingVerifier

    with pytest.raises(ConfigurationError):
        Verifier([*operators.addresses[:2], address], policy_client=POLICY_CLIENT)
    with pytest.raises(ConfigurationError):
        Verifier(operators.addresses, policy_client=address)
    with pytest.raises(ConfigurationError):
        NewtonBindingVerifier(policy_client=address, block_number=lambda: 0)


def test_checksummed_lowercase_and_uppercase_addresses_are_accepted(operators):
    for client in (GOOD, GOOD.lower(), "0x" + GOOD[2:].upper()):
        assert Verifier(operators.addresses, policy_client=client).policy_client == GOOD
    lowered = [a.lower() for a in operators.addresses]
    assert Verifier(lowered, policy_client=GOOD).operators == frozenset(operators.addresses)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": "2"},
        {"threshold": 2.0},
        {"threshold": True},
        {"threshold": -1},
        {"threshold_percentage": 66.5},
        {"threshold_percentage": "66"},
        {"threshold_percentage": None},
        {"policy_id": "0x1234"},
        {"policy_id": b"\x02" * 32},
        {"policy_id": "02" * 32},
        {"max_lifetime": 0},
        {"max_lifetime": 1.5},
    ],
)
def test_bad_threshold_and_option_types_are_configuration_errors(operators, kwargs):
    """Before: a string threshold raised TypeError, a float one was silently used, and a short
    policy id became a wrong pin."""
    with pytest.raises(ConfigurationError):
        Verifier(operators.addresses, policy_client=POLICY_CLIENT, **kwargs)


@pytest.mark.parametrize("operators_value", [GOOD, 42, None])
def test_operators_must_be_a_list_of_addresses(operators_value):
    """A single address string used to be iterated character by character."""
    with pytest.raises(ConfigurationError):
        Verifier(operators_value, policy_client=POLICY_CLIENT)


def test_verify_refuses_something_that_is_not_an_attestation(verifier, operators, intent):
    with pytest.raises(VerificationError):
        verifier.verify(operators.attest(intent).to_json(), intent)  # type: ignore[arg-type]
    with pytest.raises(VerificationError):
        verifier.verify(operators.attest(intent), intent.wire())  # type: ignore[arg-type]


def test_clock_and_block_number_must_be_functions(operators):
    from agentguard._verifier import NewtonBindingVerifier

    with pytest.raises(ConfigurationError, match="clock"):
        Verifier(operators.addresses, policy_client=POLICY_CLIENT, clock=1_700_000_000)
    with pytest.raises(ConfigurationError, match="block_number"):
        NewtonBindingVerifier(policy_client=POLICY_CLIENT, block_number=100)


def test_recovered_addresses_are_the_keys_own_even_when_remembered() -> None:
    """``recover_signer`` remembers each public key's address; every recovery, first or
    repeated, must still name the key that signed (never another key's cached address)."""
    from agentguard._attestation import (
        _address_of,
        operator_address,
        recover_signer,
        sign_attestation,
    )
    from agentguard._eip712 import keccak

    _address_of.cache_clear()
    keys = [PrivateKey(bytes([i]) * 32) for i in range(1, 40)]
    for round_ in range(2):
        for i, key in enumerate(keys):
            digest = keccak(bytes([i, round_]))
            expected = keccak(key.public_key.format(compressed=False)[1:])[12:]
            assert expected == bytes.fromhex(operator_address(key)[2:])
            assert recover_signer(digest, sign_attestation(key, digest)) == expected
            other = keys[(i + 1) % len(keys)]
            assert recover_signer(digest, sign_attestation(other, digest)) != expected
    assert _address_of.cache_info().hits > 0
