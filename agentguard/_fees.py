"""Network fees within one configured bound, whatever the RPC node quotes.

A node (or whoever answers in its name) chooses the base fee and tip the wallet sees; left
alone, a lying node makes the agent burn its ETH on gas. ``FeeCap`` bounds gas, fee per gas and
the total. It belongs to the ``Signer`` (which refuses to sign above it); the wallet quotes
within the same cap, clamped when the chain allows, refused with ``FeeCapExceeded`` when it does
not. In EOA mode the worst-case total (gas * maxFeePerGas) is also held in the budget as ETH
until the receipt says what was really paid.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentguard._exceptions import ConfigurationError, FeeCapExceeded

__all__ = ["FeeCap", "FeeQuote", "quote"]


def _positive(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"FeeCap.{what} must be a positive int, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class FeeCap:
    """The most one signed transaction may pay for gas, whatever an RPC node suggests.

    Defaults suit Base, where an ERC-20 transfer costs ~65k gas at well under 1 gwei:
    2M gas, 50 gwei per gas, and 0.002 ETH for ``gas * max_fee_per_gas`` in total.
    """

    max_gas: int = 2_000_000
    max_fee_per_gas: int = 50 * 10**9
    max_fee: int = 2 * 10**15

    def __post_init__(self) -> None:
        _positive(self.max_gas, "max_gas")
        _positive(self.max_fee_per_gas, "max_fee_per_gas")
        _positive(self.max_fee, "max_fee")


@dataclass(frozen=True, slots=True)
class FeeQuote:
    gas: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int

    @property
    def max_total(self) -> int:
        return self.gas * self.max_fee_per_gas


def quote(cap: FeeCap, *, gas: int, base_fee: int, tip: int) -> FeeQuote:
    """EIP-1559 fees for ``gas`` at the node's ``base_fee`` and ``tip``, within ``cap``."""
    for name, value in (("gas", gas), ("base fee", base_fee), ("tip", tip)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise FeeCapExceeded(f"the node quoted a {name} of {value!r}, which is not a fee")
    if gas > cap.max_gas:
        raise FeeCapExceeded(f"the call needs {gas} gas; the FeeCap allows {cap.max_gas}")
    if base_fee + tip > cap.max_fee_per_gas:
        raise FeeCapExceeded(
            f"base fee {base_fee} + tip {tip} wei per gas is above the FeeCap of "
            f"{cap.max_fee_per_gas}"
        )
    max_fee = min(2 * base_fee + tip, cap.max_fee_per_gas)
    fees = FeeQuote(gas=gas, max_fee_per_gas=max_fee, max_priority_fee_per_gas=tip)
    if fees.max_total > cap.max_fee:
        raise FeeCapExceeded(
            f"{gas} gas at up to {max_fee} wei could cost {fees.max_total} wei; the FeeCap "
            f"allows {cap.max_fee}"
        )
    return fees
