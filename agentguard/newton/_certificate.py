"""EigenLayer's ``BN254Certificate`` and the checks its verifier makes, in Python.

Follows Layr-Labs/eigenlayer-contracts at f84a5151 (``IBN254CertificateVerifier``,
``IOperatorTableCalculator``, ``LeafCalculatorMixin``, ``Merkle.verifyInclusionKeccak``,
``BN254SignatureVerifier``) and Newton's ``ViewBN254CertificateVerifier`` (newton-contracts
55696e92), which verifies every non-signer's Merkle proof instead of caching it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode, encode

from agentguard._eip712 import keccak
from agentguard._exceptions import MalformedAttestation, VerificationError
from agentguard.newton._bn254 import G1Point, G2Point

__all__ = [
    "CERTIFICATE_ABI",
    "BN254Certificate",
    "OperatorInfo",
    "OperatorSetInfo",
    "Witness",
    "merkle_root",
    "operator_info_leaf",
    "process_inclusion_proof",
]

G1_ABI = "(uint256,uint256)"
G2_ABI = "(uint256[2],uint256[2])"
OPERATOR_INFO_ABI = f"({G1_ABI},uint256[])"
WITNESS_ABI = f"(uint32,bytes,{OPERATOR_INFO_ABI})"
CERTIFICATE_ABI = f"(uint32,bytes32,{G1_ABI},{G2_ABI},{WITNESS_ABI}[])"
OPERATOR_SET_INFO_ABI = f"(bytes32,uint256,{G1_ABI},uint256[])"
OPERATOR_INFO_LEAF_SALT = b"\x75"
_MAX_SIGNATURE_DATA = 64 * 1024
MAX_NON_SIGNERS = 512
MAX_PROOF_DEPTH = 32


@dataclass(frozen=True, slots=True)
class OperatorInfo:
    """``BN254OperatorInfo``: one operator's G1 key and stake weights."""

    pubkey: G1Point
    weights: tuple[int, ...]

    def abi(self) -> tuple[Any, ...]:
        return (self.pubkey, list(self.weights))


@dataclass(frozen=True, slots=True)
class Witness:
    """``BN254OperatorInfoWitness``: a non-signer, proven to be in the operator tree."""

    operator_index: int
    proof: bytes
    operator_info: OperatorInfo

    def abi(self) -> tuple[Any, ...]:
        return (self.operator_index, self.proof, self.operator_info.abi())


@dataclass(frozen=True, slots=True)
class OperatorSetInfo:
    """``BN254OperatorSetInfo`` for one operator set at one reference timestamp."""

    operator_info_tree_root: bytes
    num_operators: int
    aggregate_pubkey: G1Point
    total_weights: tuple[int, ...]

    def abi(self) -> tuple[Any, ...]:
        return (
            self.operator_info_tree_root,
            self.num_operators,
            self.aggregate_pubkey,
            list(self.total_weights),
        )

    @classmethod
    def from_abi(cls, value: Any) -> OperatorSetInfo:
        root, count, (x, y), weights = value
        return cls(bytes(root), int(count), (int(x), int(y)), tuple(int(w) for w in weights))


@dataclass(frozen=True, slots=True)
class BN254Certificate:
    reference_timestamp: int
    message_hash: bytes
    signature: G1Point
    apk: G2Point
    non_signer_witnesses: tuple[Witness, ...]

    @classmethod
    def decode(cls, raw: bytes) -> BN254Certificate:
        """``abi.decode(signatureData, (BN254Certificate))``, as Newton's
        ``DestinationTaskResponseHandler.decodeCertificate`` does; re-encoding must give back
        the same bytes (no trailing or re-pointed data another decoder could read otherwise)."""
        if len(raw) > _MAX_SIGNATURE_DATA:
            raise MalformedAttestation(f"signature_data is {len(raw)} bytes; too large")
        try:
            (value,) = decode([CERTIFICATE_ABI], raw)
        except Exception:
            raise MalformedAttestation(
                "signature_data is not an ABI-encoded BN254Certificate"
            ) from None
        ts, message, (sx, sy), ((xi, xr), (yi, yr)), witnesses = value
        if len(witnesses) > MAX_NON_SIGNERS:
            raise MalformedAttestation(f"certificate names {len(witnesses)} non-signers; too many")
        cert = cls(
            reference_timestamp=int(ts),
            message_hash=bytes(message),
            signature=(int(sx), int(sy)),
            apk=((int(xi), int(xr)), (int(yi), int(yr))),
            non_signer_witnesses=tuple(
                Witness(int(i), bytes(proof), OperatorInfo((int(px), int(py)), tuple(weights)))
                for i, proof, ((px, py), weights) in witnesses
            ),
        )
        if cert.encode() != bytes(raw):
            raise MalformedAttestation(
                "signature_data is not the canonical encoding of its certificate"
            )
        return cert

    def abi(self) -> tuple[Any, ...]:
        return (
            self.reference_timestamp,
            self.message_hash,
            self.signature,
            self.apk,
            [w.abi() for w in self.non_signer_witnesses],
        )

    def encode(self) -> bytes:
        return encode([CERTIFICATE_ABI], [self.abi()])


def operator_info_leaf(info: OperatorInfo) -> bytes:
    """``LeafCalculatorMixin.calculateOperatorInfoLeaf``: keccak(0x75 ‖ abi.encode(info))."""
    return keccak(OPERATOR_INFO_LEAF_SALT + encode([OPERATOR_INFO_ABI], [info.abi()]))


def process_inclusion_proof(proof: bytes, leaf: bytes, index: int) -> bytes:
    """``Merkle.processInclusionProofKeccak``: an empty proof is the leaf itself; otherwise
    32-byte siblings, the index's low bit choosing the side, and the index used up at the end."""
    if not proof:
        return leaf
    if len(proof) % 32 or len(proof) // 32 > MAX_PROOF_DEPTH:
        raise VerificationError("a non-signer's Merkle proof is malformed")
    node = leaf
    for i in range(0, len(proof), 32):
        sibling = proof[i : i + 32]
        node = keccak(node + sibling) if index % 2 == 0 else keccak(sibling + node)
        index //= 2
    if index != 0:
        raise VerificationError("a non-signer's Merkle proof is shorter than its index")
    return node


def merkle_root(leaves: list[bytes]) -> bytes:
    """The keccak Merkle root EigenLayer's operator-info tree uses (leaves padded with zero
    hashes to a power of two), and its proofs; for the stand-in table and tests."""
    return merkle_tree(leaves)[-1][0]


def merkle_tree(leaves: list[bytes]) -> list[list[bytes]]:
    size = 1
    while size < len(leaves):
        size *= 2
    layer = list(leaves) + [b"\x00" * 32] * (size - len(leaves))
    layers = [layer]
    while len(layer) > 1:
        layer = [keccak(layer[i] + layer[i + 1]) for i in range(0, len(layer), 2)]
        layers.append(layer)
    return layers


def merkle_proof(leaves: list[bytes], index: int) -> bytes:
    proof = b""
    for layer in merkle_tree(leaves)[:-1]:
        proof += layer[index ^ 1]
        index //= 2
    return proof
