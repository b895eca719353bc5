"""Newton mode of the vault: Newton's Task/TaskResponse as call arguments, and deploying.

An ``AgentVault`` created with ``create_newton_vault`` executes a call only through
``executeNewton(to, value, data, task, taskResponse, signatureData)``, after its validator (a
contract with Newton's ``validateAttestationDirect``, such as the shipped
``NewtonBlsValidator``) verified the operators' BLS quorum over the response and allowed it.
The dataclasses here hold Newton's structs field for field (newton-contracts
``INewtonProverTaskManager.Task``/``TaskResponse``, ``NewtonMessage.Intent``/``PolicyTaskData``/
``PolicyData``, ``INewtonPolicy.PolicyConfig``) and give the tuples web3 passes for them.
``NewtonBlsValidator``'s ``signatureData`` is ``bls_certificate(...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from agentguard._eip712 import keccak
from agentguard._exceptions import ConfigurationError
from agentguard.chain.contracts import deploy, load_artifact, transact

__all__ = [
    "CERTIFICATE_ABI",
    "EXECUTE_NEWTON_SIGNATURE",
    "TASK_ABI",
    "TASK_RESPONSE_ABI",
    "VALIDATE_ATTESTATION_DIRECT",
    "G1Point",
    "G2Point",
    "NewtonIntent",
    "NewtonPolicyData",
    "NewtonTask",
    "NewtonTaskResponse",
    "NonSigner",
    "bls_certificate",
    "consensus_digest",
    "create_newton_vault",
    "deploy_newton_validator",
    "execute_newton_args",
    "execute_newton_calldata",
]

_INTENT_ABI = "(address,address,uint256,bytes,uint256,bytes)"
TASK_ABI = f"(bytes32,address,uint32,uint32,{_INTENT_ABI},bytes,bytes,bytes,uint256)"
_POLICY_TASK_DATA_ABI = "(bytes32,address,bytes,(bytes,bytes,address,uint32)[])"
TASK_RESPONSE_ABI = (
    f"(bytes32,address,bytes32,address,{_INTENT_ABI},bytes,bytes,{_POLICY_TASK_DATA_ABI},"
    "(bytes,uint32),uint256)"
)
# Newton's INewtonProverTaskManager.validateAttestationDirect, so the selector is Newton's.
VALIDATE_ATTESTATION_DIRECT = f"validateAttestationDirect({TASK_ABI},{TASK_RESPONSE_ABI},bytes)"
EXECUTE_NEWTON_SIGNATURE = (
    f"executeNewton(address,uint256,bytes,{TASK_ABI},{TASK_RESPONSE_ABI},bytes)"
)
_EXECUTE_NEWTON_TYPES = ["address", "uint256", "bytes", TASK_ABI, TASK_RESPONSE_ABI, "bytes"]
# EigenLayer's BN254Certificate: referenceTimestamp, messageHash, signature (G1), apk (G2),
# nonSignerWitnesses (operatorIndex, operatorInfoProof, (pubkey, weights)).
_WITNESS_ABI = "(uint32,bytes,((uint256,uint256),uint256[]))"
CERTIFICATE_ABI = f"(uint32,bytes32,(uint256,uint256),(uint256[2],uint256[2]),{_WITNESS_ABI}[])"

G1Point = tuple[int, int]
# The precompile's order: ((x_imaginary, x_real), (y_imaginary, y_real)).
G2Point = tuple[tuple[int, int], tuple[int, int]]


@dataclass(frozen=True, slots=True)
class NewtonIntent:
    from_: str
    to: str
    value: int
    data: bytes
    chain_id: int
    function_signature: bytes

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            to_checksum_address(self.from_),
            to_checksum_address(self.to),
            self.value,
            self.data,
            self.chain_id,
            self.function_signature,
        )


@dataclass(frozen=True, slots=True)
class NewtonTask:
    task_id: bytes
    policy_client: str
    task_created_block: int
    quorum_threshold_percentage: int
    intent: NewtonIntent
    intent_signature: bytes = b""
    wasm_args: bytes = b""
    quorum_numbers: bytes = b"\x00"
    initialization_timestamp: int = 0

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.task_id,
            to_checksum_address(self.policy_client),
            self.task_created_block,
            self.quorum_threshold_percentage,
            self.intent.as_tuple(),
            self.intent_signature,
            self.wasm_args,
            self.quorum_numbers,
            self.initialization_timestamp,
        )


@dataclass(frozen=True, slots=True)
class NewtonPolicyData:
    wasm_args: bytes
    data: bytes
    policy_data_address: str
    expire_block: int

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.wasm_args,
            self.data,
            to_checksum_address(self.policy_data_address),
            self.expire_block,
        )


@dataclass(frozen=True, slots=True)
class NewtonTaskResponse:
    """Newton's TaskResponse; ``policy_task_data`` repeats ``policy_id``/``policy_address``."""

    task_id: bytes
    policy_client: str
    policy_id: bytes
    policy_address: str
    intent: NewtonIntent
    evaluation_result: bytes
    expire_after: int
    initialization_timestamp: int
    intent_signature: bytes = b""
    policy: bytes = b""
    policy_data: tuple[NewtonPolicyData, ...] = ()
    policy_params: bytes = b""

    def as_tuple(self) -> tuple[Any, ...]:
        policy_address = to_checksum_address(self.policy_address)
        return (
            self.task_id,
            to_checksum_address(self.policy_client),
            self.policy_id,
            policy_address,
            self.intent.as_tuple(),
            self.intent_signature,
            self.evaluation_result,
            (self.policy_id, policy_address, self.policy, [d.as_tuple() for d in self.policy_data]),
            (self.policy_params, self.expire_after),
            self.initialization_timestamp,
        )


def consensus_digest(response: NewtonTaskResponse) -> bytes:
    """Newton's ``TaskLib.computeConsensusDigest``: keccak256(abi.encode(taskResponse))."""
    return keccak(abi_encode([TASK_RESPONSE_ABI], [response.as_tuple()]))


@dataclass(frozen=True, slots=True)
class NonSigner:
    """An operator of the validator's table that did not sign: its index, key and weight."""

    index: int
    pubkey: G1Point
    weight: int


def bls_certificate(
    *,
    reference_timestamp: int,
    message_hash: bytes,
    signature: G1Point,
    signers_apk: G2Point,
    non_signers: Sequence[NonSigner] = (),
) -> bytes:
    """``NewtonBlsValidator``'s ``signatureData``: the certificate for the table named by
    ``reference_timestamp``, non-signers in increasing index order (the contract insists)."""
    witnesses = [
        (n.index, b"", (n.pubkey, [n.weight])) for n in sorted(non_signers, key=lambda n: n.index)
    ]
    return abi_encode(
        [CERTIFICATE_ABI],
        [(reference_timestamp, message_hash, signature, signers_apk, witnesses)],
    )


def execute_newton_args(
    task: NewtonTask, response: NewtonTaskResponse, signature_data: bytes
) -> tuple[Any, ...]:
    """Arguments of ``AgentVault.executeNewton`` making exactly the attested intent's call."""
    intent = response.intent
    return (
        to_checksum_address(intent.to),
        intent.value,
        intent.data,
        task.as_tuple(),
        response.as_tuple(),
        signature_data,
    )


def execute_newton_calldata(
    task: NewtonTask, response: NewtonTaskResponse, signature_data: bytes
) -> bytes:
    """Calldata of the agent's transaction to its vault (``to`` = the vault, value 0)."""
    args = execute_newton_args(task, response, signature_data)
    return keccak(EXECUTE_NEWTON_SIGNATURE.encode())[:4] + abi_encode(_EXECUTE_NEWTON_TYPES, args)


def deploy_newton_validator(
    w3: Web3,
    *,
    owner: str,
    min_threshold_percentage: int,
    task_response_window_blocks: int,
    sender: str | LocalAccount,
) -> Contract:
    """Deploys ``NewtonBlsValidator``; its owner then sets the operator table (``setOperators``)."""
    return deploy(
        w3,
        "NewtonBlsValidator",
        to_checksum_address(owner),
        min_threshold_percentage,
        task_response_window_blocks,
        sender=sender,
    )


def create_newton_vault(
    w3: Web3,
    factory: Contract,
    *,
    owner: str,
    agent: str,
    validator: str,
    policy_id: bytes,
    salt: bytes,
    sender: str | LocalAccount,
) -> Contract:
    """Creates a Newton-mode ``AgentVault`` through ``factory``; returns it bound."""
    call = factory.functions.createNewtonVault(
        to_checksum_address(owner),
        to_checksum_address(agent),
        to_checksum_address(validator),
        policy_id,
        salt,
    )
    receipt = transact(w3, call, sender=sender)
    created = factory.events.VaultCreated().process_receipt(receipt, errors=DISCARD)
    if len(created) != 1:
        raise ConfigurationError("createNewtonVault emitted no VaultCreated event")
    vault: Contract = w3.eth.contract(
        address=created[0]["args"]["vault"], abi=load_artifact("AgentVault").abi
    )
    return vault
