"""Client-side verification of Newton's BLS (BN254) attestations (docs/newton.md).

``NewtonVerifier`` accepts a Newton attestation only when the operators' aggregate signature
over the task response verifies against Newton's operator table onchain, with Newton's quorum
rule; its tickets carry assurance ``"newton-bls"``, which the ``Signer`` accepts for EOA
transactions and payments. The BN254 helpers (keys from a seed, signing, aggregation) and the
task structs are exported for tests and tools that build or inspect certificates.
"""

from agentguard.newton._bn254 import (
    G1Point,
    G2Point,
    aggregate_g1,
    aggregate_g2,
    certificate_digest,
    hash_to_g1,
    keypair,
    local_pairing,
    sign,
    verify_signature,
)
from agentguard.newton._certificate import (
    BN254Certificate,
    OperatorInfo,
    OperatorSetInfo,
    Witness,
    merkle_proof,
    merkle_root,
    operator_info_leaf,
)
from agentguard.newton._operators import OperatorSet, OperatorTable
from agentguard.newton._structs import (
    NewtonIntent,
    PolicyConfig,
    PolicyData,
    PolicyTaskData,
    Task,
    TaskResponse,
)
from agentguard.newton._verifier import DEFAULT_THRESHOLD_FLOOR, DEPLOYMENTS, NewtonVerifier

__all__ = [
    "DEFAULT_THRESHOLD_FLOOR",
    "DEPLOYMENTS",
    "BN254Certificate",
    "G1Point",
    "G2Point",
    "NewtonIntent",
    "NewtonVerifier",
    "OperatorInfo",
    "OperatorSet",
    "OperatorSetInfo",
    "OperatorTable",
    "PolicyConfig",
    "PolicyData",
    "PolicyTaskData",
    "Task",
    "TaskResponse",
    "Witness",
    "aggregate_g1",
    "aggregate_g2",
    "certificate_digest",
    "hash_to_g1",
    "keypair",
    "local_pairing",
    "merkle_proof",
    "merkle_root",
    "operator_info_leaf",
    "sign",
    "verify_signature",
]
