"""Spend caps: per transaction, per rolling window, and by count per window.

Caps are plain frozen data so they can come from a config file and be handed to any backend.
Amounts are exact atomic ints; assets are compared case-insensitively (stored lowercase).
The refusal messages live here too, so every backend explains a refusal the same way; they
name amounts in human units ("5 USDC") only for assets ``Limits.units`` names (a ``Budget``
fills it from the tokens of its own chain: the ledger itself keys by address and never guesses
which chain, or which token, an address is).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from agentguard._exceptions import BudgetExceeded, ConfigurationError
from agentguard._units import Token

__all__ = ["Limits", "RateCap", "WindowCap"]


def _amount(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{what} must be a non-negative int (atomic units), got {value!r}")
    return value


def _seconds(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{what} must be a positive int number of seconds, got {value!r}")
    return value


def _asset(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"asset must be a non-empty string, got {value!r}")
    return value.lower()


@dataclass(frozen=True, slots=True)
class WindowCap:
    """At most ``max_amount`` of ``asset`` over any rolling ``window_seconds``."""

    asset: str
    window_seconds: int
    max_amount: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "asset", _asset(self.asset))
        _seconds(self.window_seconds, "WindowCap.window_seconds")
        _amount(self.max_amount, "WindowCap.max_amount")


@dataclass(frozen=True, slots=True)
class RateCap:
    """At most ``max_count`` reservations (any asset) over any rolling ``window_seconds``."""

    window_seconds: int
    max_count: int

    def __post_init__(self) -> None:
        _seconds(self.window_seconds, "RateCap.window_seconds")
        _amount(self.max_count, "RateCap.max_count")


@dataclass(frozen=True, slots=True)
class Limits:
    """Every cap one agent is held to. An asset without a cap is limited only by the rate caps."""

    per_tx: Mapping[str, int] = field(default_factory=dict)
    windows: Sequence[WindowCap] = ()
    rate: Sequence[RateCap] = ()
    units: Mapping[str, Token] = field(default_factory=dict, compare=False, repr=False)
    """Tokens by address, to word refusals in human units; the caps do not depend on it."""

    def __post_init__(self) -> None:
        per_tx: dict[str, int] = {}
        for asset, cap in self.per_tx.items():
            key = _asset(asset)
            if key in per_tx:
                raise ConfigurationError(f"per_tx names asset {key} twice (assets ignore case)")
            per_tx[key] = _amount(cap, f"per_tx[{asset}]")
        object.__setattr__(self, "per_tx", MappingProxyType(per_tx))
        windows, rate = tuple(self.windows), tuple(self.rate)
        for w in windows:
            if not isinstance(w, WindowCap):
                raise ConfigurationError(f"windows must hold WindowCap values, got {w!r}")
        for r in rate:
            if not isinstance(r, RateCap):
                raise ConfigurationError(f"rate must hold RateCap values, got {r!r}")
        object.__setattr__(self, "windows", windows)
        object.__setattr__(self, "rate", rate)
        if not isinstance(self.units, Mapping):
            raise ConfigurationError("units must map token addresses to Tokens")
        units: dict[str, Token] = {}
        for asset, token in self.units.items():
            if not isinstance(token, Token) or _asset(asset) != token.address:
                raise ConfigurationError(f"units must map a token's address to it, got {asset!r}")
            units[token.address] = token
        object.__setattr__(self, "units", MappingProxyType(units))

    def amount_text(self, asset: str) -> Callable[[int], str]:
        """How refusals write amounts of ``asset``: "5 USDC" if ``units`` knows it, else atomic."""
        token = self.units.get(asset.lower())
        return str if token is None else token.human

    def windows_for(self, asset: str) -> tuple[WindowCap, ...]:
        asset = asset.lower()
        return tuple(w for w in self.windows if w.asset == asset)


# -- refusals (shared by every backend) -------------------------------------------------------


def _when(at: float | None, now: float, what: str = "room") -> str:
    if at is None:
        return "this amount alone is above the cap, so it will never fit; raise the cap"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    return f"{what} frees up at {stamp} (in {max(0, round(at - now))} s) at the latest"


def per_tx_refusal(
    agent: str, asset: str, amount: int, cap: int, say: Callable[[int], str] = str
) -> BudgetExceeded:
    return BudgetExceeded(
        f"agent {agent}: per-transaction cap for asset {asset} is {say(cap)}, "
        f"this action spends {say(amount)}; it will never fit, split it or raise the cap",
        cap=cap,
        used=0,
        requested=amount,
        retry_at=None,
        asset=asset,
    )


def window_refusal(
    agent: str,
    cap: WindowCap,
    used: int,
    amount: int,
    in_window: Iterable[tuple[float, int]],
    now: float,
    say: Callable[[int], str] = str,
) -> BudgetExceeded:
    """``in_window``: (created_at, amount) of the counted spends in the window, oldest first."""
    free_at: float | None = None
    if amount <= cap.max_amount:
        remaining = used
        for created_at, spent in in_window:
            remaining -= spent
            if remaining + amount <= cap.max_amount:
                free_at = created_at + cap.window_seconds
                break
    return BudgetExceeded(
        f"agent {agent}: {cap.window_seconds} s window cap for asset {cap.asset} is "
        f"{say(cap.max_amount)}; {say(used)} already reserved or spent + {say(amount)} "
        f"requested = {say(used + amount)}; {_when(free_at, now)}",
        cap=cap.max_amount,
        used=used,
        requested=amount,
        retry_at=free_at,
        asset=cap.asset,
        window_seconds=cap.window_seconds,
    )


def rate_refusal(
    agent: str, cap: RateCap, count: int, in_window: Iterable[float], now: float
) -> BudgetExceeded:
    """``in_window``: created_at of the counted reservations still in the window, oldest first."""
    free_at: float | None = None
    if cap.max_count > 0:
        must_leave = count - cap.max_count + 1
        for i, created_at in enumerate(in_window, start=1):
            if i == must_leave:
                free_at = created_at + cap.window_seconds
                break
    when = _when(free_at, now, "a slot") if cap.max_count else "the cap is 0, nothing will fit"
    return BudgetExceeded(
        f"agent {agent}: rate cap is {cap.max_count} actions per {cap.window_seconds} s and "
        f"{count} are already counted; {when}",
        cap=cap.max_count,
        used=count,
        requested=1,
        retry_at=free_at,
        window_seconds=cap.window_seconds,
    )
