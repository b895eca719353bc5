"""agentguard for OpenGradient: verifiable TEE inference paid in OPG, under attestation.

    auth = X402Auth(signer=signer, guard=guard, ledger=ledger,
                    allowances=Allowances({OPG: 10**17}))
    ensure_permit2_approval(wallet, OPG, min_allowance=10**17, amount=10**18, web3=w3)
    og = OpenGradientClient(None, auth, tee=TeeRegistry.from_rpc(og_rpc_url))
    result = og.chat("openai/gpt-4.1", [{"role": "user", "content": "hi"}])
    result.text, result.receipt, result.proof

Payments use x402's ``upto`` scheme: one Permit2 signature caps a session, each answer is
charged against it, and the network authorizes the cap before anything is signed.
"""

from agentguard_opengradient._approval import Permit2Approval, ensure_permit2_approval
from agentguard_opengradient._client import (
    DATA_SETTLEMENT_TX_HASH,
    PLACEHOLDER_API_KEY,
    SETTLEMENT_TYPE,
    InferenceCost,
    InferenceResult,
    OpenGradientClient,
    SettlementMode,
)
from agentguard_opengradient._models import KNOWN_MODELS
from agentguard_opengradient._proof import TeeProof, tee_id, verify_proof
from agentguard_opengradient._stream import AsyncChatStream, ChatStream

__all__ = [
    "DATA_SETTLEMENT_TX_HASH",
    "KNOWN_MODELS",
    "PLACEHOLDER_API_KEY",
    "SETTLEMENT_TYPE",
    "AsyncChatStream",
    "ChatStream",
    "InferenceCost",
    "InferenceResult",
    "OpenGradientClient",
    "Permit2Approval",
    "SettlementMode",
    "TeeProof",
    "ensure_permit2_approval",
    "tee_id",
    "verify_proof",
]
