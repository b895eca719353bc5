"""``upto`` over Permit2: a ``PermitWitnessTransferFrom`` capped at the session maximum.

The witness binds the payee, the facilitator allowed to settle and ``validAfter``; the
spender is x402's upto proxy, which only transfers to the witnessed payee. A spender the
server names must be one the agent trusts (see ``Allowances.upto_spenders``): any other
spender could send the permitted tokens anywhere.
"""

from __future__ import annotations

import secrets
from typing import Any

from agentguard._intent import chain_id_from_network
from agentguard.x402._wire import Requirement

__all__ = ["PERMIT2", "UPTO_PERMIT2_PROXY", "payload", "reference", "typed_data"]

PERMIT2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
UPTO_PERMIT2_PROXY = "0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002"

_TYPES = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "PermitWitnessTransferFrom": [
        {"name": "permitted", "type": "TokenPermissions"},
        {"name": "spender", "type": "address"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
        {"name": "witness", "type": "Witness"},
    ],
    "TokenPermissions": [
        {"name": "token", "type": "address"},
        {"name": "amount", "type": "uint256"},
    ],
    "Witness": [
        {"name": "to", "type": "address"},
        {"name": "facilitator", "type": "address"},
        {"name": "validAfter", "type": "uint256"},
    ],
}


def typed_data(
    req: Requirement, payer: str, *, deadline: int, nonce: int | None = None
) -> dict[str, Any]:
    """The full EIP-712 Permit2 message for a session capped at ``req.amount``, usable until
    ``deadline`` (``exact.client.valid_until``: never past the attestation's expiry)."""
    del payer  # Permit2 recovers the owner from the signature; it is not in the message
    return {
        "types": _TYPES,
        "primaryType": "PermitWitnessTransferFrom",
        "domain": {
            "name": "Permit2",
            "chainId": chain_id_from_network(req.network),
            "verifyingContract": PERMIT2,
        },
        "message": {
            "permitted": {"token": req.asset, "amount": req.amount},
            "spender": req.extra.get("spender", UPTO_PERMIT2_PROXY),
            "nonce": secrets.randbits(256) if nonce is None else nonce,
            "deadline": deadline,
            "witness": {
                "to": req.pay_to,
                "facilitator": req.extra["facilitatorAddress"],
                "validAfter": 0,
            },
        },
    }


def reference(typed: dict[str, Any], payer: str) -> str:
    """What the ledger records (Permit2 nonces are per owner):
    ``permit2:<chain id>:<owner>:<nonce>:<deadline>``."""
    message = typed["message"]
    return f"permit2:{typed['domain']['chainId']}:{payer}:{message['nonce']}:{message['deadline']}"


def payload(typed: dict[str, Any], signature: bytes, payer: str) -> dict[str, Any]:
    message = typed["message"]
    witness = message["witness"]
    return {
        "signature": "0x" + signature.hex(),
        "permit2Authorization": {
            "from": payer,
            "permitted": {
                "token": message["permitted"]["token"],
                "amount": str(message["permitted"]["amount"]),
            },
            "spender": message["spender"],
            "nonce": str(message["nonce"]),
            "deadline": str(message["deadline"]),
            "witness": {
                "to": witness["to"],
                "facilitator": witness["facilitator"],
                "validAfter": str(witness["validAfter"]),
            },
        },
    }
