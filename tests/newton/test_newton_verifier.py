"""NewtonVerifier against real BN254 keys and signatures and an operator table on anvil.

Each attack test builds what a lying gateway (or RPC) could send and asserts the verifier
refuses it; without the check named in its docstring the attestation would have verified and
an EOA would have signed.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from eth_account import Account

from agentguard._attestation import Attestation
from agentguard._exceptions import (
    AttestationExpired,
    AttestationReplayed,
    InsufficientQuorum,
    IntentMismatch,
    MalformedAttestation,
    PolicyDenied,
    VerificationError,
)
from agentguard._intent import TransactionIntent
from agentguard._signer import Signer
from agentguard.newton import NewtonVerifier, TaskResponse, keypair
from tests.newton.conftest import Chain
from tests.newton.newton_quorum import attestation_for, make_operators, newton_result

AGENT = Account.from_key(b"\x11" * 32)
CLIENT = "0x0000000000000000000000000000000000000c1e"
POLICY_ID = b"\x42" * 32
INTENT = TransactionIntent(
    from_=AGENT.address,
    to="0x000000000000000000000000000000000000bEEF",
    value=10**15,
    chain_id=8453,
)


def _result(chain: Chain, task_id: bytes, **kwargs: Any) -> dict[str, Any]:
    block = chain.w3.eth.block_number
    params: dict[str, Any] = {
        "policy_client": CLIENT,
        "policy_id": POLICY_ID,
        "task_id": task_id,
        "expiration": block + 100,
        "task_created_block": block,
    }
    params.update(kwargs)
    return newton_result(INTENT, **params)


def _verifier(chain: Chain, **kwargs: Any) -> NewtonVerifier:
    return chain.quorum.verifier(CLIENT, policy_id="0x" + POLICY_ID.hex(), **kwargs)


def _certified(chain: Chain, task_id: bytes, **certify: Any) -> Attestation:
    result = chain.quorum.certify(_result(chain, task_id), **certify)
    return attestation_for(result, INTENT)


def test_valid_certificate_verifies_and_an_eoa_signs_once(chain: Chain, task_id: bytes) -> None:
    verified = _verifier(chain).verify(_certified(chain, task_id), INTENT)
    assert verified.assurance == "newton-bls"
    signer = Signer(AGENT)
    signed = signer.sign_transaction(
        verified, nonce=0, gas=21_000, max_fee_per_gas=10**9, max_priority_fee_per_gas=1
    )
    assert signed.raw and signed.task_id == "0x" + task_id.hex()
    with pytest.raises(AttestationReplayed):
        signer.sign_transaction(
            verified, nonce=1, gas=21_000, max_fee_per_gas=10**9, max_priority_fee_per_gas=1
        )


def test_one_operator_missing_with_its_witness_still_meets_quorum(
    chain: Chain, task_id: bytes
) -> None:
    att = _certified(chain, task_id, signers=[0, 2])  # 200 of 300 signed, 40% required
    assert _verifier(chain).verify(att, INTENT).assurance == "newton-bls"


def test_below_quorum_is_refused(chain: Chain, task_id: bytes) -> None:
    """One of three (33%) is below the 40% floor, though the signature itself is valid."""
    att = _certified(chain, task_id, signers=[1])
    with pytest.raises(InsufficientQuorum):
        _verifier(chain).verify(att, INTENT)


def test_threshold_one_percent_from_the_gateway_is_raised_to_the_floor(
    chain: Chain, task_id: bytes
) -> None:
    """Attack: the gateway sets quorumThresholdPercentage 1 (the Task is not signed) and
    sends one operator's signature. Newton's own rule with the task's value would accept it."""
    result = chain.quorum.certify(_result(chain, task_id, threshold=1), signers=[1])
    with pytest.raises(InsufficientQuorum):
        _verifier(chain).verify(attestation_for(result, INTENT), INTENT)


@pytest.mark.parametrize("threshold", [0, 101])
def test_threshold_outside_1_to_100_is_refused(
    chain: Chain, task_id: bytes, threshold: int
) -> None:
    result = chain.quorum.certify(_result(chain, task_id, threshold=threshold))
    with pytest.raises(VerificationError, match="threshold"):
        _verifier(chain).verify(attestation_for(result, INTENT), INTENT)


def test_a_configured_threshold_above_the_task_one_applies(chain: Chain, task_id: bytes) -> None:
    att = _certified(chain, task_id, signers=[0, 2])  # 66.7% signed
    with pytest.raises(InsufficientQuorum):
        _verifier(chain, threshold_percentage=67).verify(att, INTENT)


def test_certificate_over_another_message_is_refused(chain: Chain, task_id: bytes) -> None:
    """Attack: a valid certificate for another task response (messageHash differs)."""
    result = _result(chain, task_id)
    other = chain.quorum.certify(_result(chain, b"\x07" * 32))
    result["signature_data"] = other["signature_data"]
    with pytest.raises(VerificationError, match="different task response"):
        _verifier(chain).verify(attestation_for(result, INTENT), INTENT)


def test_signature_over_a_wrong_message_is_refused(chain: Chain, task_id: bytes) -> None:
    """Attack: messageHash is the right digest, but the operators signed something else."""
    result = _result(chain, task_id)
    digest = TaskResponse.parse(result["task_response"]).consensus_digest()
    cert = chain.quorum.certificate(b"\x01" * 32)
    forged = dataclasses.replace(cert, message_hash=digest)
    result["signature_data"] = "0x" + forged.encode().hex()
    with pytest.raises(VerificationError, match="does not verify"):
        _verifier(chain).verify(attestation_for(result, INTENT), INTENT)


def test_wrong_reference_timestamps_operator_set_is_refused(chain: Chain, task_id: bytes) -> None:
    """Attack: operators of a newer table (other keys) sign a certificate naming the older
    reference timestamp; the verifier reads the older table, whose keys did not sign."""
    quorum = chain.quorum
    newer = quorum.reference_timestamp + 1
    quorum.register(newer, make_operators((100, 100, 100), b"new"))
    result = _result(chain, task_id)
    digest = TaskResponse.parse(result["task_response"]).consensus_digest()
    cert = quorum.certificate(digest, reference_timestamp=newer)
    stale = dataclasses.replace(cert, reference_timestamp=quorum.reference_timestamp)
    result["signature_data"] = "0x" + stale.encode().hex()
    with pytest.raises(VerificationError, match="does not verify"):
        _verifier(chain).verify(attestation_for(result, INTENT), INTENT)


def test_reference_timestamp_without_a_table_is_refused(chain: Chain, task_id: bytes) -> None:
    """An unset timestamp reads as an all-zero table; it must never count as one."""
    result = _result(chain, task_id)
    digest = TaskResponse.parse(result["task_response"]).consensus_digest()
    cert = dataclasses.replace(
        chain.quorum.certificate(digest), reference_timestamp=chain.quorum.reference_timestamp + 7
    )
    result["signature_data"] = "0x" + cert.encode().hex()
    with pytest.raises(VerificationError, match="no operator table"):
        _verifier(chain).verify(attestation_for(result, INTENT), INTENT)


def test_forged_non_signer_witness_is_refused(chain: Chain, task_id: bytes) -> None:
    """Attack: two operators sign; the third's witness claims a lighter weight (so that fewer
    weights are subtracted) with a made-up Merkle proof."""
    result = _result(chain, task_id)
    digest = TaskResponse.parse(result["task_response"]).consensus_digest()
    cert = chain.quorum.certificate(digest, signers=[0, 1])
    witness = cert.non_signer_witnesses[0]
    light = dataclasses.replace(
        witness, operator_info=dataclasses.replace(witness.operator_info, weights=(1,))
    )
    forged = dataclasses.replace(cert, non_signer_witnesses=(light,))
    result["signature_data"] = "0x" + forged.encode().hex()
    with pytest.raises(VerificationError, match="Merkle proof"):
        _verifier(chain).verify(attestation_for(result, INTENT), INTENT)


def test_rogue_key_apk_g2_not_matching_the_signers_is_refused(chain: Chain, task_id: bytes) -> None:
    """Attack: an outsider's key signs alone and puts its own G2 key as ``apk``, claiming all
    operators signed (no non-signers). The signers' G1 aggregate is the table's, not the
    outsider's, so the gamma-randomised pairing fails."""
    from agentguard.newton import certificate_digest, sign

    result = _result(chain, task_id)
    digest = TaskResponse.parse(result["task_response"]).consensus_digest()
    cert = chain.quorum.certificate(digest)
    secret, _, g2 = keypair(b"rogue")
    rogue = dataclasses.replace(
        cert,
        signature=sign(secret, certificate_digest(cert.reference_timestamp, digest)),
        apk=g2,
    )
    result["signature_data"] = "0x" + rogue.encode().hex()
    with pytest.raises(VerificationError, match="does not verify"):
        _verifier(chain).verify(attestation_for(result, INTENT), INTENT)


def test_replay_of_a_verified_attestation_is_refused(chain: Chain, task_id: bytes) -> None:
    verifier = _verifier(chain)
    att = _certified(chain, task_id)
    verifier.verify(att, INTENT)
    with pytest.raises(AttestationReplayed):
        verifier.verify(att, INTENT)
    with pytest.raises(AttestationReplayed):  # another verifier in the process: ticket spent
        _verifier(chain).verify(att, INTENT)


def test_expired_block_is_refused(chain: Chain, task_id: bytes) -> None:
    block = chain.w3.eth.block_number
    result = chain.quorum.certify(_result(chain, task_id, expiration=block))
    with pytest.raises(AttestationExpired):
        _verifier(chain).verify(attestation_for(result, INTENT), INTENT)


def test_task_response_mutated_after_verification_signs_nothing(
    chain: Chain, task_id: bytes
) -> None:
    """Attack: swap in another recipient after verification; the signer re-hashes its copy."""
    att = _certified(chain, task_id)
    verified = _verifier(chain).verify(att, INTENT)
    doc = json.loads(att.newton_result or "")
    doc["task_response"]["intent"]["to"] = "0x000000000000000000000000000000000000dEaD"
    mutated = att.model_copy(update={"newton_result": json.dumps(doc)})
    with pytest.raises(IntentMismatch):
        Signer(AGENT).sign_transaction(
            dataclasses.replace(verified, attestation=mutated),
            nonce=0,
            gas=21_000,
            max_fee_per_gas=10**9,
            max_priority_fee_per_gas=1,
        )


def test_attested_intent_other_than_the_local_one_is_refused(chain: Chain, task_id: bytes) -> None:
    att = _certified(chain, task_id)
    other = INTENT.model_copy(update={"value": INTENT.value + 1})
    with pytest.raises(IntentMismatch):
        _verifier(chain).verify(att, TransactionIntent.model_validate(dict(other)))


def test_other_policy_client_or_policy_id_is_refused(chain: Chain, task_id: bytes) -> None:
    att = _certified(chain, task_id)
    with pytest.raises(IntentMismatch):
        chain.quorum.verifier(CLIENT, policy_id="0x" + "11" * 32).verify(att, INTENT)
    with pytest.raises(IntentMismatch):
        chain.quorum.verifier("0x" + "22" * 20).verify(att, INTENT)


def test_signed_deny_is_a_deny_even_if_the_summary_says_allow(chain: Chain, task_id: bytes) -> None:
    """Attack: the gateway's summary says allow; the operators' signed result is a deny."""
    result = chain.quorum.certify(_result(chain, task_id, allow=False))
    with pytest.raises(PolicyDenied):
        _verifier(chain).verify(attestation_for(result, INTENT), INTENT)


def test_rpc_lying_about_the_block_number_is_bounded_by_max_lifetime(
    chain: Chain, task_id: bytes
) -> None:
    """Attack: the RPC says block 0 and the policy allows a huge expireAfter; the ticket still
    lapses ``max_lifetime`` seconds from now."""
    result = chain.quorum.certify(_result(chain, task_id, expiration=2**31, expire_after=2**31))
    verifier = _verifier(chain, max_lifetime=600, clock=lambda: 1_000_000.0)
    table = verifier._resolve()[1]
    from agentguard.newton._operators import Head

    real_head = table.head()
    table.head = lambda: Head(0, real_head.timestamp)  # type: ignore[method-assign]
    verifier.verify(attestation_for(result, INTENT), INTENT)
    from agentguard._tickets import _REGISTRY

    assert _REGISTRY._live[task_id].expires_at == 1_000_600


def test_ticket_lifetime_follows_remaining_blocks(chain: Chain, task_id: bytes) -> None:
    block = chain.w3.eth.block_number
    result = chain.quorum.certify(_result(chain, task_id, expiration=block + 10))
    _verifier(chain, clock=lambda: 1_000_000.0).verify(attestation_for(result, INTENT), INTENT)
    from agentguard._tickets import _REGISTRY

    assert _REGISTRY._live[task_id].expires_at == 1_000_000 + 10 * 2


def test_disabled_root_and_stale_table_are_refused(chain: Chain, task_id: bytes) -> None:
    from agentguard.chain import transact
    from tests.newton.newton_quorum import OWNER

    quorum = chain.quorum
    transact(
        chain.w3,
        quorum.table.functions.setRootDisabled(quorum.reference_timestamp, True),
        sender=OWNER,
    )
    with pytest.raises(VerificationError, match="disabled"):
        _verifier(chain).verify(_certified(chain, task_id), INTENT)


def test_missing_certificate_or_result_is_refused(chain: Chain, task_id: bytes) -> None:
    result = _result(chain, task_id)
    with pytest.raises(VerificationError, match="signature_data"):
        _verifier(chain).verify(attestation_for(result, INTENT), INTENT)
    bare = attestation_for(chain.quorum.certify(result), INTENT).model_copy(
        update={"newton_result": None}
    )
    with pytest.raises(VerificationError, match="no gateway result"):
        _verifier(chain).verify(bare, INTENT)
    garbage = bare.model_copy(
        update={"newton_result": json.dumps({**result, "signature_data": "0x1234"})}
    )
    with pytest.raises(MalformedAttestation):
        _verifier(chain).verify(garbage, INTENT)


def _with_certificate(chain: Chain, task_id: bytes, edit: Any, **certify: Any) -> Attestation:
    """A result whose certificate (for the right message) went through ``edit`` first."""
    result = _result(chain, task_id)
    digest = TaskResponse.parse(result["task_response"]).consensus_digest()
    cert = edit(chain.quorum.certificate(digest, **certify))
    result["signature_data"] = "0x" + cert.encode().hex()
    return attestation_for(result, INTENT)


def test_duplicate_or_unsorted_non_signers_are_refused(chain: Chain, task_id: bytes) -> None:
    """Newton requires strictly increasing indices (no operator counted twice)."""

    def twice(cert: Any) -> Any:
        (w,) = cert.non_signer_witnesses
        return dataclasses.replace(cert, non_signer_witnesses=(w, w))

    def unsorted(cert: Any) -> Any:
        return dataclasses.replace(cert, non_signer_witnesses=cert.non_signer_witnesses[::-1])

    with pytest.raises(VerificationError, match="strictly sorted"):
        _verifier(chain).verify(_with_certificate(chain, task_id, twice, signers=[0, 2]), INTENT)
    with pytest.raises(VerificationError, match="strictly sorted"):
        _verifier(chain).verify(_with_certificate(chain, task_id, unsorted, signers=[1]), INTENT)


def test_non_signer_index_outside_the_set_is_refused(chain: Chain, task_id: bytes) -> None:
    def outside(cert: Any) -> Any:
        (w,) = cert.non_signer_witnesses
        return dataclasses.replace(
            cert, non_signer_witnesses=(dataclasses.replace(w, operator_index=3),)
        )

    with pytest.raises(VerificationError, match="outside"):
        _verifier(chain).verify(_with_certificate(chain, task_id, outside, signers=[0, 1]), INTENT)


def test_signature_point_off_the_curve_is_a_verification_error(
    chain: Chain, task_id: bytes
) -> None:
    def off_curve(cert: Any) -> Any:
        return dataclasses.replace(cert, signature=(1, 3))

    with pytest.raises(VerificationError, match="invalid"):
        _verifier(chain).verify(_with_certificate(chain, task_id, off_curve), INTENT)


def test_stale_operator_table_is_refused(chain: Chain, task_id: bytes) -> None:
    """A table older than its operator set's maxStalenessPeriod no longer counts."""
    quorum = chain.quorum
    newer = quorum.reference_timestamp + 1
    quorum.register(newer, quorum.operators, max_staleness=1)
    quorum.reference_timestamp = newer
    try:
        with pytest.raises(AttestationExpired, match="stale"):
            _verifier(chain).verify(_certified(chain, task_id), INTENT)
    finally:
        quorum.reference_timestamp = newer - 1


def test_source_chain_aggregation_without_certificate_is_refused(
    chain: Chain, task_id: bytes
) -> None:
    result = {**_result(chain, task_id), "aggregation_response": {"signers_apk_g2": []}}
    with pytest.raises(VerificationError, match="aggregation_response"):
        _verifier(chain).verify(attestation_for(result, INTENT), INTENT)


def test_task_without_quorum_numbers_is_refused(chain: Chain, task_id: bytes) -> None:
    result = chain.quorum.certify(_result(chain, task_id, quorum_numbers=b""))
    with pytest.raises(VerificationError, match="quorum"):
        _verifier(chain).verify(attestation_for(result, INTENT), INTENT)


def test_intent_for_another_chain_is_refused(chain: Chain, task_id: bytes) -> None:
    """The operator table read is Base's; an intent for chain 1 is not checked against it."""
    other = TransactionIntent(from_=AGENT.address, to=INTENT.to, value=1, chain_id=1)
    block = chain.w3.eth.block_number
    result = newton_result(
        other,
        policy_client=CLIENT,
        policy_id=POLICY_ID,
        task_id=task_id,
        expiration=block + 100,
        task_created_block=block,
    )
    att = attestation_for(chain.quorum.certify(result), other)
    with pytest.raises(IntentMismatch, match="chain"):
        _verifier(chain).verify(att, other)


def test_unreachable_rpc_is_node_unavailable_not_a_web3_error(task_id: bytes) -> None:
    from web3 import Web3

    from agentguard._exceptions import NodeUnavailable
    from agentguard.newton import BN254Certificate

    dead = Web3(Web3.HTTPProvider("http://127.0.0.1:9", request_kwargs={"timeout": 2}))
    verifier = NewtonVerifier(policy_client=CLIENT, web3=dead, policy_id="0x" + POLICY_ID.hex())
    result = newton_result(
        INTENT,
        policy_client=CLIENT,
        policy_id=POLICY_ID,
        task_id=task_id,
        expiration=100,
        task_created_block=1,
    )
    digest = TaskResponse.parse(result["task_response"]).consensus_digest()
    cert = BN254Certificate(1, digest, (1, 2), ((0, 0), (0, 0)), ())
    result["signature_data"] = "0x" + cert.encode().hex()
    with pytest.raises(NodeUnavailable):
        verifier.verify(attestation_for(result, INTENT), INTENT)


def test_default_deployment_address_without_code_is_refused(chain: Chain, task_id: bytes) -> None:
    """On anvil (chain 8453) Newton's published Base verifier has no code: its reads return
    nothing, which must be a refusal, not an empty table."""
    verifier = NewtonVerifier(policy_client=CLIENT, web3=chain.w3, policy_id="0x" + POLICY_ID.hex())
    with pytest.raises(VerificationError, match="not Newton's certificate verifier"):
        verifier.verify(_certified(chain, task_id), INTENT)


def test_configuration_is_checked_up_front(chain: Chain) -> None:
    from agentguard._exceptions import ConfigurationError

    for bad in (
        {"threshold_percentage": 0},
        {"threshold_percentage": 101},
        {"block_time": 0},
        {"max_lifetime": -1},
        {"certificate_verifier": "0x1234"},
        {"policy_id": "0x12"},
    ):
        with pytest.raises(ConfigurationError):
            NewtonVerifier(policy_client=CLIENT, web3=chain.w3, **bad)
    with pytest.raises(ConfigurationError):
        NewtonVerifier(policy_client=CLIENT, web3="http://localhost")  # type: ignore[arg-type]


def test_verified_payment_is_signed_by_an_eoa_once(chain: Chain, task_id: bytes) -> None:
    """A Newton-attested x402 payment: verified on its Newton form (the token transfer), then
    the EOA signs the EIP-3009 authorization once; ``newton-bls-binding`` never could."""
    import time

    from agentguard._intent import PaymentIntent
    from agentguard.x402._wire import Requirement
    from agentguard.x402.exact import client as exact_client

    token = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
    payee = "0x000000000000000000000000000000000000bEEF"
    payment = PaymentIntent(
        payer=AGENT.address, scheme="exact", network="eip155:8453",
        asset=token, amount=1_000, pay_to=payee,
    )  # fmt: skip
    block = chain.w3.eth.block_number
    result = newton_result(
        payment,
        policy_client=CLIENT,
        policy_id=POLICY_ID,
        task_id=task_id,
        expiration=block + 100,
        task_created_block=block,
    )
    verified = _verifier(chain).verify(
        attestation_for(chain.quorum.certify(result), payment), payment
    )
    typed = exact_client.typed_data(
        Requirement(
            x402_version=2, scheme="exact", network="eip155:8453", amount=1_000,
            asset=token, pay_to=payee, max_timeout_seconds=60,
            extra={"name": "USD Coin", "version": "2"}, resource="", raw={},
        ),
        AGENT.address,
        now=int(time.time()),
        valid_before=int(time.time()) + 60,
    )  # fmt: skip
    signer = Signer(AGENT)
    assert signer.sign_payment(verified, typed)
    with pytest.raises(AttestationReplayed):
        signer.sign_payment(verified, typed)


def test_identity_signature_or_g2_key_is_refused(chain: Chain, task_id: bytes) -> None:
    """Defence in depth: the point at infinity contributes 1 to a pairing product."""

    def identity_apk(cert: Any) -> Any:
        return dataclasses.replace(cert, apk=((0, 0), (0, 0)))

    def identity_signature(cert: Any) -> Any:
        return dataclasses.replace(cert, signature=(0, 0))

    for edit in (identity_apk, identity_signature):
        with pytest.raises(VerificationError, match="identity"):
            _verifier(chain).verify(_with_certificate(chain, task_id, edit), INTENT)
