"""The one-time ``OPG.approve(Permit2, amount)`` that OpenGradient's ``upto`` payments need.

It is an ordinary onchain action, so it goes through the guarded wallet: authorized by the
network (the policy sees an ``approve`` of ``amount`` to Permit2), reserved in the ledger,
recorded in the audit log. It is sent only when the current allowance is below the minimum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_utils.address import to_checksum_address
from web3 import Web3

from agentguard import ConfigurationError
from agentguard.wallet import GuardedWallet, Receipt
from agentguard.x402 import PERMIT2

__all__ = ["Permit2Approval", "ensure_permit2_approval"]

_ALLOWANCE_ABI: list[dict[str, Any]] = [
    {
        "name": "allowance",
        "type": "function",
        "stateMutability": "view",
        "inputs": [{"name": "owner", "type": "address"}, {"name": "spender", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    }
]


@dataclass(frozen=True, slots=True)
class Permit2Approval:
    allowance_before: int
    allowance_after: int
    receipt: Receipt | None
    """The approve transaction, or ``None`` when the allowance was already enough."""


def ensure_permit2_approval(
    wallet: GuardedWallet, token: str, min_allowance: int, amount: int, *, web3: Web3
) -> Permit2Approval:
    """Approve Permit2 for ``amount`` of ``token`` from ``wallet.account`` if its allowance is
    below ``min_allowance`` (atomic units). ``web3`` reads the allowance (same node as the
    wallet's). A refusal by the policy or the ledger raises as for any wallet action."""
    for name, value in (("min_allowance", min_allowance), ("amount", amount)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigurationError(f"{name} must be a non-negative int (atomic units)")
    if amount < min_allowance:
        raise ConfigurationError(
            f"approving {amount} would leave the allowance below the minimum {min_allowance}"
        )
    contract = web3.eth.contract(address=to_checksum_address(token), abi=_ALLOWANCE_ABI)
    owner = to_checksum_address(wallet.account)

    def allowance() -> int:
        return int(contract.functions.allowance(owner, PERMIT2).call())

    before = allowance()
    if before >= min_allowance:
        return Permit2Approval(before, before, None)
    receipt = wallet.call(contract.address, "approve(address,uint256)", [PERMIT2, amount])
    return Permit2Approval(before, allowance(), receipt)
