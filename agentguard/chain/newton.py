"""Newton mode of the vault: ``executeNewton`` calls built from a Newton gateway result.

An ``AgentVault`` created with ``create_newton_vault`` executes a call only through
``executeNewton(to, value, data, task, taskResponse, signatureData)``, after its validator (a
contract with Newton's ``validateAttestationDirect``, such as the shipped
``NewtonBlsValidator``) verified the operators' BLS quorum over the response and allowed it.
The structs are ``agentguard.newton``'s (``Task``/``TaskResponse``, ABI-encoded as Solidity
does); ``signatureData`` is an EigenLayer ``BN254Certificate`` (``agentguard.newton``), which
``NewtonBlsValidator`` reads with empty Merkle proofs against the table it holds.

``newton_execute_calldata`` is what the agent's signer sends: it re-reads the gateway's whole
result and refuses, before anything is signed, a result for another intent, sender or vault.
"""

from __future__ import annotations

from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from agentguard._attestation import Attestation
from agentguard._eip712 import keccak
from agentguard._exceptions import ConfigurationError, IntentMismatch, VerificationError
from agentguard._intent import TransactionIntent
from agentguard.chain.contracts import deploy, load_artifact, transact
from agentguard.newton import BN254Certificate, Task, TaskResponse
from agentguard.newton._structs import TASK_ABI, TASK_RESPONSE_ABI
from agentguard.newton._verifier import _result, _signature_data

__all__ = [
    "EXECUTE_NEWTON_SIGNATURE",
    "VALIDATE_ATTESTATION_DIRECT",
    "NewtonCall",
    "create_newton_vault",
    "deploy_newton_validator",
    "execute_newton_args",
    "execute_newton_calldata",
    "for_web3",
    "newton_call",
    "newton_execute_calldata",
]

# Newton's INewtonProverTaskManager.validateAttestationDirect, so the selector is Newton's.
VALIDATE_ATTESTATION_DIRECT = f"validateAttestationDirect({TASK_ABI},{TASK_RESPONSE_ABI},bytes)"
EXECUTE_NEWTON_SIGNATURE = (
    f"executeNewton(address,uint256,bytes,{TASK_ABI},{TASK_RESPONSE_ABI},bytes)"
)
_EXECUTE_NEWTON_TYPES = ["address", "uint256", "bytes", TASK_ABI, TASK_RESPONSE_ABI, "bytes"]
_EXECUTE_NEWTON_SELECTOR = keccak(EXECUTE_NEWTON_SIGNATURE.encode())[:4]

NewtonCall = tuple[Task, TaskResponse, bytes]
"""What ``executeNewton`` carries besides the call: task, task response, ``signatureData``."""


def for_web3(value: Any) -> Any:
    """An ``.abi()`` value with its addresses checksummed, as web3's contract calls insist."""
    if isinstance(value, str) and len(value) == 42 and value[:2] == "0x":
        return to_checksum_address(value)
    if isinstance(value, tuple | list):
        return type(value)(for_web3(v) for v in value)
    return value


def execute_newton_args(
    task: Task, response: TaskResponse, signature_data: bytes
) -> tuple[Any, ...]:
    """Arguments of ``AgentVault.executeNewton`` making exactly the attested intent's call."""
    intent = response.intent
    args = ("0x" + intent.to.hex(), intent.value, intent.data, task.abi(), response.abi())
    return (*for_web3(args), signature_data)


def execute_newton_calldata(task: Task, response: TaskResponse, signature_data: bytes) -> bytes:
    """Calldata of the agent's transaction to its vault (``to`` = the vault, value 0)."""
    args = execute_newton_args(task, response, signature_data)
    return _EXECUTE_NEWTON_SELECTOR + abi_encode(_EXECUTE_NEWTON_TYPES, args)


def newton_call(
    intent: TransactionIntent, attestation: Attestation, *, vault: str, agent: str
) -> NewtonCall:
    """Task, response and certificate of a Newton ``attestation`` for ``intent``, read from its
    ``newton_result`` and checked as the vault will: an allow decision, the signed intent is
    exactly ``intent`` (sent by ``agent``, Newton's ``intent.from == msg.sender``), task and
    response name the same task and this vault as policy client, and the certificate decodes
    canonically. The BLS quorum itself is the validator's to check, onchain."""
    if attestation.scheme != "newton-bls" or not attestation.allowed:
        raise VerificationError(
            f"a Newton vault executes only allow decisions of Newton's BLS quorum; this "
            f"attestation is {attestation.scheme} {attestation.decision}"
        )
    result = _result(attestation.newton_result)
    response = TaskResponse.parse(result.get("task_response"), "task_response")
    task = Task.parse(result.get("task"), "task")
    signature_data = _signature_data(result)
    BN254Certificate.decode(signature_data)  # the validator would revert on anything else
    if not response.allowed:
        raise VerificationError("the signed evaluation result is a deny; the vault moves nothing")
    if not (task.task_id == response.task_id == attestation.task_id):
        raise IntentMismatch("task, task response and attestation name different task ids")
    for who, client in (("task", task.policy_client), ("task response", response.policy_client)):
        if to_checksum_address(client) != to_checksum_address(vault):
            raise IntentMismatch(
                f"the {who}'s policy client is {to_checksum_address(client)}, not the vault {vault}"
            )
    if to_checksum_address(intent.from_) != to_checksum_address(agent):
        raise IntentMismatch(
            f"a Newton vault runs intents sent by its agent {agent}; "
            f"this one is from {intent.from_}"
        )
    if response.intent.intent_hash != intent.intent_hash or task.intent != response.intent:
        raise IntentMismatch("the Newton result attests a different intent than this one")
    return task, response, signature_data


def newton_execute_calldata(
    intent: TransactionIntent, attestation: Attestation, *, vault: str, agent: str
) -> bytes:
    """``executeNewton`` calldata carrying exactly ``intent`` under ``attestation``."""
    return execute_newton_calldata(*newton_call(intent, attestation, vault=vault, agent=agent))


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
