"""Amounts as people type them ("5 USDC", "0.1 OPG", "0.002 ETH") and as agentguard keeps them
(exact integers in the token's atomic units).

Symbols resolve per chain against a small registry of known tokens (USDC, OPG and ETH on Base
and Base Sepolia); a local chain or another token is added with ``tokens=`` (a ``Token`` or
a mapping of symbol to ``Token``). Parsing is exact: ``Decimal`` from the text, never a float,
and more decimals than the token has is an error, not a rounding.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext

from agentguard._exceptions import ConfigurationError

__all__ = ["KNOWN_TOKENS", "Amount", "Token", "format_amount", "parse_amount", "resolve_token"]

ETH_ADDRESS = "0x0000000000000000000000000000000000000000"
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}\Z")
_SYMBOL = re.compile(r"^[A-Za-z][A-Za-z0-9.]{0,15}\Z")
_AMOUNT = re.compile(
    r"^\s*([0-9][0-9_]*(?:\.[0-9]+)?|\.[0-9]+)\s*([A-Za-z][A-Za-z0-9.]{0,15})\s*\Z"
)
"""A number (no sign, exponent or comma: "1,5" means 1.5 in half the world) and a symbol."""


@dataclass(frozen=True, slots=True)
class Token:
    """One asset on one chain: what a symbol means there."""

    symbol: str
    address: str
    decimals: int
    chain_id: int

    def __post_init__(self) -> None:
        if not isinstance(self.symbol, str) or not _SYMBOL.match(self.symbol):
            raise ConfigurationError(f"token symbol {self.symbol!r} is not a short word")
        if not isinstance(self.address, str) or not _ADDRESS.match(self.address):
            raise ConfigurationError(f"token address {self.address!r} is not 0x + 40 hex")
        if type(self.decimals) is not int or not 0 <= self.decimals <= 77:
            raise ConfigurationError(f"token decimals {self.decimals!r} is not 0..77")
        if type(self.chain_id) is not int or self.chain_id <= 0:
            raise ConfigurationError(f"token chain id {self.chain_id!r} is not a positive int")
        object.__setattr__(self, "address", self.address.lower())

    def atomic(self, amount: str | int | Decimal) -> int:
        """``amount`` whole tokens (text or Decimal, exact) in atomic units."""
        if isinstance(amount, bool | float):
            raise ConfigurationError(f"{amount!r} is not an exact amount of {self.symbol}")
        with localcontext(prec=200):  # exact for any uint256 at any decimals
            try:
                value = Decimal(amount.replace("_", "") if isinstance(amount, str) else amount)
            except (InvalidOperation, TypeError, ValueError):
                raise ConfigurationError(f"{amount!r} is not an amount of {self.symbol}") from None
            if not value.is_finite():
                raise ConfigurationError(f"{amount!r} is not an exact amount of {self.symbol}")
            scaled = value.scaleb(self.decimals)
        if value < 0 or scaled != scaled.to_integral_value():
            raise ConfigurationError(
                f"{amount} {self.symbol} is not a whole number of atomic units "
                f"({self.symbol} has {self.decimals} decimals)"
            )
        atomic = int(scaled)
        if atomic >= 2**256:
            raise ConfigurationError(f"{amount} {self.symbol} does not fit in a uint256")
        return atomic

    def human(self, atomic: int) -> str:
        """``atomic`` units as text a person reads: ``"5 USDC"``, ``"0.000123 OPG"``."""
        with localcontext(prec=200):
            text = format(Decimal(atomic).scaleb(-self.decimals), "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return f"{text} {self.symbol}"


@dataclass(frozen=True, slots=True)
class Amount:
    """A parsed amount: the token and the exact atomic integer."""

    token: Token
    atomic: int

    def __str__(self) -> str:
        return self.token.human(self.atomic)


KNOWN_TOKENS: tuple[Token, ...] = (
    Token("ETH", ETH_ADDRESS, 18, 8453),
    Token("USDC", "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", 6, 8453),
    Token("OPG", "0xFbC2051AE2265686a469421b2C5A2D5462FbF5eB", 18, 8453),
    Token("ETH", ETH_ADDRESS, 18, 84532),
    Token("USDC", "0x036CbD53842c5426634e7929541eC2318f3dCF7e", 6, 84532),
    Token("OPG", "0x240b09731D96979f50B2C649C9CE10FcF9C7987F", 18, 84532),
)
"""Base (8453) and Base Sepolia (84532): USDC (Circle), OPG (OpenGradient), ETH."""

Tokens = Token | Iterable[Token] | Mapping[str, Token] | None


def _extra(tokens: Tokens) -> tuple[Token, ...]:
    """The ``tokens=`` entries; one address on one chain has one symbol and one scale (a known
    token's address with other decimals would make "5 USDC" cap 5 * 10**18 real USDC)."""
    if tokens is None:
        return ()
    if isinstance(tokens, Token):
        items: tuple[object, ...] = (tokens,)
    else:
        items = tuple(tokens.values() if isinstance(tokens, Mapping) else tokens)
    seen = {(t.chain_id, t.address): t for t in KNOWN_TOKENS}
    known = set(seen)
    out: list[Token] = []
    for t in items:
        if not isinstance(t, Token):
            raise ConfigurationError(f"tokens= must hold Token values, got {t!r}")
        other = seen.setdefault((t.chain_id, t.address), t)
        if (other.symbol.upper(), other.decimals) != (t.symbol.upper(), t.decimals):
            where = "a known token" if (t.chain_id, t.address) in known else "named twice"
            raise ConfigurationError(
                f"tokens=: {t.address} on chain {t.chain_id} is {where} ({other.symbol}, "
                f"{other.decimals} decimals), not {t.symbol} with {t.decimals}; drop the entry"
            )
        out.append(t)
    return tuple(out)


def resolve_token(symbol_or_address: str, chain_id: int, tokens: Tokens = None) -> Token:
    """The token a symbol (or address) names on ``chain_id``; ``tokens=`` come first."""
    key = symbol_or_address.strip()
    candidates = (*_extra(tokens), *KNOWN_TOKENS)
    for t in candidates:
        if t.chain_id == chain_id and (t.symbol.upper() == key.upper() or t.address == key.lower()):
            return t
    known = sorted({t.symbol for t in candidates if t.chain_id == chain_id})
    raise ConfigurationError(
        f"no token {key!r} on chain {chain_id}; known there: {', '.join(known) or 'none'} "
        "(add one with tokens=Token(symbol, address, decimals, chain_id))"
    )


def parse_amount(text: str, chain_id: int, tokens: Tokens = None) -> Amount:
    """``"5 USDC"`` → ``Amount(USDC on chain_id, 5_000_000)``; exact or a ConfigurationError."""
    if not isinstance(text, str):
        raise ConfigurationError(f"an amount is text like '5 USDC', got {text!r}")
    match = _AMOUNT.match(text)
    if match is None:
        raise ConfigurationError(
            f"{text!r} is not an amount; write a number and a token, e.g. '5 USDC' or '0.1 OPG'"
        )
    token = resolve_token(match.group(2), chain_id, tokens)
    return Amount(token, token.atomic(match.group(1)))


def format_amount(atomic: int, asset: str, chain_id: int, tokens: Tokens = None) -> str:
    """Atomic units of ``asset`` as a person reads them; an unknown asset stays exact."""
    try:
        return resolve_token(asset, chain_id, tokens).human(atomic)
    except ConfigurationError:
        return f"{atomic} atomic units of {asset}"
