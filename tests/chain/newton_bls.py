"""BLS operators of ``NewtonBlsValidator`` for the tests, on ``agentguard.newton``'s BN254.

The validator holds its own operator table (no Merkle tree), so a non-signer's witness has an
empty proof and exactly the table's entry (``OperatorInfo(key, (weight,))``). Its operators sign
what EigenLayer's verifier (and ``agentguard.newton.NewtonVerifier``) has them sign:
``certificate_digest(referenceTimestamp, messageHash)``. ``signatureData`` is the same
``BN254Certificate`` encoding as Newton's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentguard.newton import (
    BN254Certificate,
    G1Point,
    G2Point,
    OperatorInfo,
    TaskResponse,
    Witness,
    aggregate_g1,
    aggregate_g2,
    certificate_digest,
    keypair,
    sign,
)


@dataclass(frozen=True)
class Operator:
    secret: int
    pubkey: G1Point
    pubkey_g2: G2Point
    weight: int

    @classmethod
    def from_seed(cls, seed: str, weight: int) -> Operator:
        secret, g1, g2 = keypair(seed.encode())
        return cls(secret, g1, g2, weight)

    @property
    def info(self) -> OperatorInfo:
        return OperatorInfo(self.pubkey, (self.weight,))

    def sign(self, message: bytes) -> G1Point:
        return sign(self.secret, message)


def table_args(validator: Any, operators: Sequence[Operator]) -> dict[str, Any]:
    """``NewtonBlsValidator.setOperators`` arguments for ``operators``: keys, weights and each
    operator's proof of possession (its signature over the validator's possession message)."""
    return {
        "g1": [op.pubkey for op in operators],
        "g2": [op.pubkey_g2 for op in operators],
        "weights": [op.weight for op in operators],
        "possession": [
            op.sign(validator.functions.possessionMessage(op.pubkey).call()) for op in operators
        ],
    }


def aggregate_signature(signers: Sequence[Operator], message: bytes) -> G1Point:
    return aggregate_g1([op.sign(message) for op in signers])


def aggregate_key(signers: Sequence[Operator]) -> G2Point:
    return aggregate_g2([op.pubkey_g2 for op in signers])


def witness(index: int, info: OperatorInfo) -> Witness:
    """A non-signer as the validator reads it: its table index and entry, no Merkle proof."""
    return Witness(index, b"", info)


def certificate(
    *,
    reference_timestamp: int,
    message_hash: bytes,
    table: Sequence[Operator],
    signers: Sequence[Operator] | None = None,
    signed_message: bytes | None = None,
) -> BN254Certificate:
    """``signers`` (default: the whole table) sign ``signed_message`` (default: the
    certificate digest of ``reference_timestamp`` and ``message_hash``); every other operator of
    ``table`` is a non-signer, in index order."""
    chosen = list(table) if signers is None else list(signers)
    signed = signed_message or certificate_digest(reference_timestamp, message_hash)
    return BN254Certificate(
        reference_timestamp=reference_timestamp,
        message_hash=message_hash,
        signature=aggregate_signature(chosen, signed),
        apk=aggregate_key(chosen),
        non_signer_witnesses=tuple(
            witness(i, op.info) for i, op in enumerate(table) if op not in chosen
        ),
    )


def certify(
    result: dict[str, Any],
    *,
    reference_timestamp: int,
    table: Sequence[Operator],
    signers: Sequence[Operator] | None = None,
) -> dict[str, Any]:
    """A Newton ``newt_createTask`` result plus ``signature_data``: the validator's operators
    certify the consensus digest of the result's ``task_response``."""
    digest = TaskResponse.parse(result["task_response"]).consensus_digest()
    cert = certificate(
        reference_timestamp=reference_timestamp, message_hash=digest, table=table, signers=signers
    )
    return {**result, "signature_data": "0x" + cert.encode().hex()}
