"""agentguard: an AI agent may spend only what a quorum of policy operators attested."""

import importlib
from typing import TYPE_CHECKING, Any

from agentguard._attestation import Attestation, OperatorSignature
from agentguard._exceptions import (
    AgentGuardError,
    ApprovalRejected,
    ApprovalRequired,
    ApprovalTimedOut,
    AttestationExpired,
    AttestationReplayed,
    AuthorizationError,
    BudgetExceeded,
    ConfigurationError,
    DataProviderError,
    DuplicateSignature,
    EndpointNotActive,
    ExecutionError,
    FeeCapExceeded,
    GatewayAuthError,
    GatewayProtocolError,
    GatewayRPCError,
    GatewayUnavailable,
    IncompatiblePolicyVersion,
    InsufficientQuorum,
    IntentError,
    IntentMismatch,
    LedgerError,
    MalformedSignature,
    MissingExtra,
    NodeUnavailable,
    NotAnAuditLog,
    OnchainCheckRequired,
    OperatorNotRegistered,
    OutcomeUnknown,
    PaidRequestRefused,
    PaymentOutcomeUnknown,
    PaymentRejected,
    PaymentRequiredError,
    PaymentSessionBusy,
    PolicyContractError,
    PolicyDenied,
    PolicyError,
    PolicyEvaluationError,
    PolicyIdMismatch,
    PolicyProbeUnavailable,
    ProofError,
    QuorumNotReached,
    RequestNotSent,
    ReservationError,
    StreamUnverified,
    TeeNotActive,
    TierQuorumNotReached,
    TierTooLow,
    TlsPinMismatch,
    TransactionReverted,
    UnknownModel,
    UnknownOperator,
    UnknownTier,
    VerificationError,
)
from agentguard._intent import PaymentIntent, Spend, TransactionIntent
from agentguard._json import strict_loads
from agentguard._recursion import undo_py_ecc_limit as _undo_py_ecc_limit
from agentguard._tiers import MinimumTiers
from agentguard._units import Amount, Token, format_amount, parse_amount
from agentguard._verifier import (
    MemoryReplayGuard,
    NewtonBindingVerifier,
    VerifiedAttestation,
    Verifier,
)

_undo_py_ecc_limit()  # py_ecc (web3 imports it) sets 100,000: see agentguard/_recursion.py

if TYPE_CHECKING:
    from agentguard._explain import explain
    from agentguard._gateway import (
        ApprovalStatus,
        AsyncAuthorizer,
        AsyncNewtonGateway,
        Authorizer,
        NewtonGateway,
        Simulation,
    )
    from agentguard._guard import AsyncGuard, Guard
    from agentguard._logging import configure_logging
    from agentguard._signer import FeeCap, SignedTransaction, Signer
    from agentguard.actions import OFFCHAIN_TARGET, call_intent
    from agentguard.budget import Budget
    from agentguard.ledger import Ledger, Limits, RateCap, WindowCap
    from agentguard.wallet import AsyncGuardedWallet, GuardedWallet, Receipt

# Imported on first use: an operator or gateway process needs intents and attestations, not
# web3, eth-account and httpx (which would add seconds to every process start).
_LAZY = {
    "ApprovalStatus": "agentguard._gateway",
    "AsyncAuthorizer": "agentguard._gateway",
    "AsyncNewtonGateway": "agentguard._gateway",
    "Authorizer": "agentguard._gateway",
    "NewtonGateway": "agentguard._gateway",
    "Simulation": "agentguard._gateway",
    "AsyncGuard": "agentguard._guard",
    "Guard": "agentguard._guard",
    "configure_logging": "agentguard._logging",
    "explain": "agentguard._explain",
    "OFFCHAIN_TARGET": "agentguard.actions",
    "call_intent": "agentguard.actions",
    "FeeCap": "agentguard._signer",
    "SignedTransaction": "agentguard._signer",
    "Signer": "agentguard._signer",
    "Budget": "agentguard.budget",
    "Ledger": "agentguard.ledger",
    "Limits": "agentguard.ledger",
    "RateCap": "agentguard.ledger",
    "WindowCap": "agentguard.ledger",
    "AsyncGuardedWallet": "agentguard.wallet",
    "GuardedWallet": "agentguard.wallet",
    "Receipt": "agentguard.wallet",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agentguard' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "OFFCHAIN_TARGET",
    "AgentGuardError",
    "Amount",
    "ApprovalRejected",
    "ApprovalRequired",
    "ApprovalStatus",
    "ApprovalTimedOut",
    "AsyncAuthorizer",
    "AsyncGuard",
    "AsyncGuardedWallet",
    "AsyncNewtonGateway",
    "Attestation",
    "AttestationExpired",
    "AttestationReplayed",
    "AuthorizationError",
    "Authorizer",
    "Budget",
    "BudgetExceeded",
    "ConfigurationError",
    "DataProviderError",
    "DuplicateSignature",
    "EndpointNotActive",
    "ExecutionError",
    "FeeCap",
    "FeeCapExceeded",
    "GatewayAuthError",
    "GatewayProtocolError",
    "GatewayRPCError",
    "GatewayUnavailable",
    "Guard",
    "GuardedWallet",
    "IncompatiblePolicyVersion",
    "InsufficientQuorum",
    "IntentError",
    "IntentMismatch",
    "Ledger",
    "LedgerError",
    "Limits",
    "MalformedSignature",
    "MemoryReplayGuard",
    "MinimumTiers",
    "MissingExtra",
    "NewtonBindingVerifier",
    "NewtonGateway",
    "NodeUnavailable",
    "NotAnAuditLog",
    "OnchainCheckRequired",
    "OperatorNotRegistered",
    "OperatorSignature",
    "OutcomeUnknown",
    "PaidRequestRefused",
    "PaymentIntent",
    "PaymentOutcomeUnknown",
    "PaymentRejected",
    "PaymentRequiredError",
    "PaymentSessionBusy",
    "PolicyContractError",
    "PolicyDenied",
    "PolicyError",
    "PolicyEvaluationError",
    "PolicyIdMismatch",
    "PolicyProbeUnavailable",
    "ProofError",
    "QuorumNotReached",
    "RateCap",
    "Receipt",
    "RequestNotSent",
    "ReservationError",
    "SignedTransaction",
    "Signer",
    "Simulation",
    "Spend",
    "StreamUnverified",
    "TeeNotActive",
    "TierQuorumNotReached",
    "TierTooLow",
    "TlsPinMismatch",
    "Token",
    "TransactionIntent",
    "TransactionReverted",
    "UnknownModel",
    "UnknownOperator",
    "UnknownTier",
    "VerificationError",
    "VerifiedAttestation",
    "Verifier",
    "WindowCap",
    "call_intent",
    "configure_logging",
    "explain",
    "format_amount",
    "parse_amount",
    "strict_loads",
]
