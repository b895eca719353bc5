"""What the agent sends to its ``AgentVault``: ``execute`` calls and x402 payment signatures.

The vault re-checks everything onchain (quorum, binding, expiry, single use). These helpers
only encode, after refusing combinations the vault would certainly revert, so a mistake
surfaces here with a clear message instead of as a failed transaction.
"""

from __future__ import annotations

from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address

from agentguard._attestation import Attestation
from agentguard._eip712 import keccak
from agentguard._exceptions import IntentMismatch, VerificationError
from agentguard._intent import PaymentIntent, TransactionIntent

__all__ = [
    "EXECUTE_SIGNATURE",
    "PAYMENT_SIGNATURE_TYPES",
    "ExecuteArgs",
    "execute_args",
    "execute_calldata",
    "payment_signature",
]

EXECUTE_SIGNATURE = "execute(address,uint256,bytes,bytes,bytes32,bytes32,uint64,bytes[],uint8)"
_EXECUTE_TYPES = [
    "address", "uint256", "bytes", "bytes", "bytes32", "bytes32", "uint64", "bytes[]", "uint8",
]  # fmt: skip
_EXECUTE_SELECTOR = keccak(EXECUTE_SIGNATURE.encode())[:4]
# token, payTo, value, validAfter, validBefore, nonce, taskId, policyId, expiresAt,
# agentSignature, operatorSignatures, tier: what AgentVault.isValidSignature decodes.
PAYMENT_SIGNATURE_TYPES = (
    "address", "address", "uint256", "uint256", "uint256", "bytes32",
    "bytes32", "bytes32", "uint64", "bytes", "bytes[]", "uint8",
)  # fmt: skip

ExecuteArgs = tuple[str, int, bytes, bytes, bytes, bytes, int, list[bytes], int]


def _check(attestation: Attestation, intent: TransactionIntent | PaymentIntent) -> None:
    if attestation.scheme != "ecdsa" or not attestation.allowed:
        raise VerificationError(
            f"the vault executes only allow decisions with ECDSA operator signatures; this "
            f"attestation is {attestation.scheme} {attestation.decision}"
        )
    payer = intent.payer if isinstance(intent, PaymentIntent) else intent.from_
    if to_checksum_address(attestation.policy_client) != payer:
        raise IntentMismatch(
            f"a vault acts from its own address: the intent's payer/from is {payer}, "
            f"the attestation's policy client (vault) is {attestation.policy_client}"
        )
    if attestation.intent_hash != intent.intent_hash:
        raise IntentMismatch("the attestation is bound to a different intent than this one")


def execute_args(intent: TransactionIntent, attestation: Attestation) -> ExecuteArgs:
    """Arguments of ``AgentVault.execute`` carrying ``intent`` under ``attestation``."""
    _check(attestation, intent)
    return (
        intent.to,
        intent.value,
        intent.data,
        intent.function_signature.encode(),
        attestation.task_id,
        attestation.policy_id,
        attestation.expires_at,
        [s.signature for s in attestation.signatures],
        attestation.tier,
    )


def execute_calldata(intent: TransactionIntent, attestation: Attestation) -> bytes:
    """Calldata for the agent's transaction to the vault (``to`` = the vault, value 0)."""
    return _EXECUTE_SELECTOR + abi_encode(_EXECUTE_TYPES, execute_args(intent, attestation))


def payment_signature(
    payment: PaymentIntent,
    attestation: Attestation,
    *,
    valid_after: int,
    valid_before: int,
    agent_signature: bytes,
) -> bytes:
    """The ``signature`` of an x402 EIP-3009 payment from a vault (checked by ERC-1271).

    The authorization must use ``nonce = attestation.task_id``; ``agent_signature`` is the
    agent key's 65-byte signature over that authorization's EIP-712 digest
    (``eip3009.transfer_authorization_digest``). Facilitators pass the blob to the token's
    ``transferWithAuthorization(…, bytes signature)``, which asks the vault; the vault says yes
    only to the token ``payment.asset`` itself (the blob names it), never to another caller.
    """
    _check(attestation, payment)
    return abi_encode(
        list(PAYMENT_SIGNATURE_TYPES),
        (
            payment.asset,
            payment.pay_to,
            payment.amount,
            valid_after,
            valid_before,
            attestation.task_id,
            attestation.task_id,
            attestation.policy_id,
            attestation.expires_at,
            agent_signature,
            [s.signature for s in attestation.signatures],
            attestation.tier,
        ),
    )
