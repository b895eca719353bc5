"""After a crash or an unanswered payment: did a signed x402 authorization move funds?

``Ledger.recover(resolver(w3))`` settles what ``X402Auth`` left signed. The chain is the
truth: an EIP-3009 nonce (``authorizationState``) or a Permit2 nonce (``nonceBitmap``) that
is spent means the payment landed; one still unspent at a block the chain dates after its
``validBefore``/``deadline`` (and after it on our clock too) can never land and is given back.
Anything else stays counted (``unknown``).

An ``upto`` payment commits less than its signed maximum only on onchain proof: a
``Settled(owner, to, token, amount, nonce)`` event of a trusted upto proxy (the Permit2
spender, which alone can use the nonce) for exactly this owner, token and nonce. Without one
(another proxy, logs beyond ``lookback_blocks``) the maximum is committed. What a payee reports
in its answer never lowers the count.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

from web3 import Web3

from agentguard._redact import register_node_secrets
from agentguard.ledger import Reservation, Resolver, Spent, Verdict
from agentguard.x402.upto.client import PERMIT2, UPTO_PERMIT2_PROXY

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


_SETTLED = Web3.keccak(text="Settled(address,address,address,uint256,uint256)")


def _word(address: str) -> str:
    return "0x" + address.lower().removeprefix("0x").rjust(64, "0")


def _settled_amount(
    w3: Web3, proxies: Collection[str], owner: str, token: str, nonce: int, lookback: int
) -> int | None:
    """The amount a trusted upto proxy settled on (owner, nonce), if its event says so."""
    latest = int(w3.eth.block_number)
    logs = w3.eth.get_logs(
        {
            "fromBlock": max(0, latest - lookback),
            "toBlock": latest,
            "address": [Web3.to_checksum_address(p) for p in proxies],
            "topics": [_SETTLED, _word(owner), None, _word(token)],
        }
    )
    amounts = []
    for entry in logs:
        data = bytes(entry["data"])
        if len(data) == 64 and int.from_bytes(data[32:]) == nonce:
            amounts.append(int.from_bytes(data[:32]))
    return amounts[0] if len(amounts) == 1 else None  # Permit2 nonces are single use


def resolver(
    w3: Web3,
    *,
    clock: Callable[[], float] = time.time,
    upto_proxies: Collection[str] = (UPTO_PERMIT2_PROXY,),
    lookback_blocks: int = 100_000,
) -> Resolver:
    """A ``Ledger.recover`` resolver for x402 payments on ``w3``'s chain; ``unknown`` for any
    other reference (so it can be chained with the wallet's resolver). ``upto_proxies``: the
    Permit2 spenders trusted to report settlements (as in ``Allowances.upto_spenders``)."""
    register_node_secrets(w3)  # a node's error may quote its URL, and a provider key in it
    chain_id = int(w3.eth.chain_id)

    def resolve(reservation: Reservation) -> Verdict:
        parts = (reservation.reference or "").split(":")
        try:
            if parts[0] == "eip3009" and len(parts) == 6 and int(parts[1]) == chain_id:
                _, _, token, payer, nonce_hex, valid_before = parts
                at, chain_time = _latest(w3)
                contract = w3.eth.contract(
                    address=Web3.to_checksum_address(token), abi=_EIP3009_ABI
                )
                used = contract.functions.authorizationState(
                    Web3.to_checksum_address(payer), bytes.fromhex(nonce_hex[2:])
                ).call(block_identifier=at)
                return _verdict(bool(used), int(valid_before), min(clock(), chain_time))
            if parts[0] == "permit2" and len(parts) == 5 and int(parts[1]) == chain_id:
                _, _, owner, nonce_text, deadline = parts
                nonce = int(nonce_text)
                at, chain_time = _latest(w3)
                permit2 = w3.eth.contract(
                    address=Web3.to_checksum_address(PERMIT2), abi=_PERMIT2_ABI
                )
                bitmap = permit2.functions.nonceBitmap(
                    Web3.to_checksum_address(owner), nonce >> 8
                ).call(block_identifier=at)
                used = bool((int(bitmap) >> (nonce & 0xFF)) & 1)
                if used:
                    amount = _settled_amount(
                        w3, upto_proxies, owner, reservation.asset, nonce, lookback_blocks
                    )
                    return "committed" if amount is None else Spent(amount)
                return _verdict(used, int(deadline), min(clock(), chain_time))
        except (ValueError, IndexError):
            return "unknown"
        return "unknown"

    return resolve


def _latest(w3: Web3) -> tuple[int, int]:
    """The block every read is made at, and the time the chain gives it: "can never land" is
    decided only at a block the chain itself dates past the deadline (a stale node, or our
    clock running ahead, must not release a payment the payee can still settle)."""
    block = w3.eth.get_block("latest")
    return int(block["number"]), int(block["timestamp"])


def _verdict(used: bool, valid_until: int, now: float) -> Verdict:
    if used:
        return "committed"
    return "released" if now > valid_until else "unknown"
