"""After a crash or an unanswered payment: did a signed x402 authorization move funds?

``Ledger.recover(resolver(w3))`` settles what ``X402Auth`` left signed. The chain is the
truth: an EIP-3009 nonce (``authorizationState``) or a Permit2 nonce (``nonceBitmap``) that
is spent means the payment landed (counted in full: the chain does not say how much an
``upto`` settlement took); one still unspent after its ``validBefore``/``deadline`` can never
land and is given back. Anything else stays counted (``unknown``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from web3 import Web3

from agentguard.ledger import Reservation, Resolver, Verdict
from agentguard.x402.upto.client import PERMIT2

__all__ = ["resolver"]

_EIP3009_ABI: list[dict[str, Any]] = [
    {
        "name": "authorizationState",
        "type": "function",
        "stateMutability": "view",
        "inputs": [{"name": "authorizer", "type": "address"}, {"name": "nonce", "type": "bytes32"}],
        "outputs": [{"name": "", "type": "bool"}],
    }
]
_PERMIT2_ABI: list[dict[str, Any]] = [
    {
        "name": "nonceBitmap",
        "type": "function",
        "stateMutability": "view",
        "inputs": [{"name": "owner", "type": "address"}, {"name": "wordPos", "type": "uint256"}],
        "outputs": [{"name": "", "type": "uint256"}],
    }
]


def resolver(w3: Web3, *, clock: Callable[[], float] = time.time) -> Resolver:
    """A ``Ledger.recover`` resolver for x402 payments on ``w3``'s chain; ``unknown`` for any
    other reference (so it can be chained with the wallet's resolver)."""
    chain_id = int(w3.eth.chain_id)

    def resolve(reservation: Reservation) -> Verdict:
        parts = (reservation.reference or "").split(":")
        try:
            if parts[0] == "eip3009" and len(parts) == 6 and int(parts[1]) == chain_id:
                _, _, token, payer, nonce_hex, valid_before = parts
                contract = w3.eth.contract(
                    address=Web3.to_checksum_address(token), abi=_EIP3009_ABI
                )
                used = contract.functions.authorizationState(
                    Web3.to_checksum_address(payer), bytes.fromhex(nonce_hex[2:])
                ).call()
                return _verdict(bool(used), int(valid_before), clock())
            if parts[0] == "permit2" and len(parts) == 5 and int(parts[1]) == chain_id:
                _, _, owner, nonce_text, deadline = parts
                nonce = int(nonce_text)
                permit2 = w3.eth.contract(
                    address=Web3.to_checksum_address(PERMIT2), abi=_PERMIT2_ABI
                )
                bitmap = permit2.functions.nonceBitmap(
                    Web3.to_checksum_address(owner), nonce >> 8
                ).call()
                return _verdict(bool((int(bitmap) >> (nonce & 0xFF)) & 1), int(deadline), clock())
        except (ValueError, IndexError):
            return "unknown"
        return "unknown"

    return resolve


def _verdict(used: bool, valid_until: int, now: float) -> Verdict:
    if used:
        return "committed"
    return "released" if now > valid_until else "unknown"
