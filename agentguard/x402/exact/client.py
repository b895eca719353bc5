"""``exact`` over EIP-3009: a ``TransferWithAuthorization`` of exactly the price.

The time window follows x402's own client so facilitators accept it: v2 signs
``validAfter = 0``, v1 ``validAfter = now - 600``; ``validBefore`` is the caller's bound,
``min(now + maxTimeoutSeconds, attestation expiry)`` (``valid_until``): an authorization never
outlives the attestation that allowed it. The token's EIP-712 domain name and version come
from the server's ``extra`` (USDC on Base is ``"USD Coin"``/``"2"``, on Base Sepolia
``"USDC"``/``"2"``); a wrong one only makes the signature useless, never redirects funds.
"""

from __future__ import annotations

import secrets
from typing import Any

from agentguard._intent import chain_id_from_network
from agentguard._signer import eip3009_typed_data
from agentguard.x402._wire import Requirement

__all__ = ["payload", "reference", "typed_data", "valid_until"]

V1_CLOCK_SKEW = 600


def valid_until(req: Requirement, *, now: int, expires_at: int) -> int:
    """The last moment a signed payment may be used: the server's timeout, never past the
    attestation's expiry (the Signer refuses a longer window)."""
    return min(now + req.max_timeout_seconds, expires_at)


def typed_data(
    req: Requirement, payer: str, *, now: int, valid_before: int, nonce: bytes | None = None
) -> dict[str, Any]:
    """The full EIP-712 message (eth-account's ``full_message`` shape) to sign for ``req``."""
    nonce = secrets.token_bytes(32) if nonce is None else nonce
    valid_after = 0 if req.x402_version == 2 else now - V1_CLOCK_SKEW
    return eip3009_typed_data(
        req.extra["name"],
        req.extra["version"],
        chain_id_from_network(req.network),
        req.asset,
        payer,
        req.pay_to,
        req.amount,
        valid_after,
        valid_before,
        "0x" + nonce.hex(),
    )


def reference(typed: dict[str, Any]) -> str:
    """What the ledger records to find this payment later (see ``agentguard.x402.resolver``):
    ``eip3009:<chain id>:<token>:<payer>:<nonce>:<validBefore>``."""
    domain, message = typed["domain"], typed["message"]
    return (
        f"eip3009:{domain['chainId']}:{domain['verifyingContract']}:{message['from']}:"
        f"{message['nonce']}:{message['validBefore']}"
    )


def payload(typed: dict[str, Any], signature: bytes) -> dict[str, Any]:
    """The scheme ``payload`` object: every authorization field as a string."""
    message = typed["message"]
    return {
        "signature": "0x" + signature.hex(),
        "authorization": {
            "from": message["from"],
            "to": message["to"],
            "value": str(message["value"]),
            "validAfter": str(message["validAfter"]),
            "validBefore": str(message["validBefore"]),
            "nonce": message["nonce"],
        },
    }
