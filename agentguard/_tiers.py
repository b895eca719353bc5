"""Trust tiers: how much assurance one action needs, as a small fixed table.

A tier is a ``uint8`` the operators sign inside the attestation (EIP-712 field ``tier``), so a
gateway cannot change it without the signatures failing to recover. Its low two bits are the
*level* (each level requires everything the one below it requires):

=====  ==========  ===============================================================
level  name        signatures required
=====  ==========  ===============================================================
0      standard    the configured quorum (``threshold``)
1      high        a higher threshold the client / vault owner sets (default: every operator)
2      all         every operator of the configured set
3      human       every operator, and the operators signed only after checking a person's
                   signed approval of this exact intent (the approval flow)
=====  ==========  ===============================================================

Bit ``VAULT_ONLY`` (4) adds: only through a vault, whose contract re-checks the quorum; the
EOA path (a transaction or payment valid on its own) refuses it. Tiers above 7 are unknown and
refused everywhere. Tier 0 is what a policy that says nothing gets: behaviour as before tiers.

``MinimumTiers`` is the client side: the least tier a client accepts for an action, judged
from what its calldata moves (``intent.spend``), never from a name the caller supplies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agentguard._exceptions import ConfigurationError
from agentguard._value import UINT256_MAX, Spend

__all__ = [
    "ALL",
    "HIGH",
    "HUMAN",
    "LEVEL_NAMES",
    "MAX_TIER",
    "STANDARD",
    "VAULT_ONLY",
    "MinimumTiers",
    "TierThresholds",
    "human_gate",
    "known",
    "level",
    "satisfies",
    "tier_name",
    "vault_only",
]

STANDARD, HIGH, ALL, HUMAN = 0, 1, 2, 3
VAULT_ONLY = 4
MAX_TIER = 7
LEVEL_NAMES = ("standard", "high", "all", "human")
_LEVEL_MASK = 3
_AMOUNT = re.compile(r"^(0|[1-9][0-9]{0,77})\Z")
_ASSET = re.compile(r"^(0x[0-9a-f]{40}|\*)\Z")


def level(tier: int) -> int:
    """The signature level of ``tier`` (0 standard .. 3 human)."""
    return tier & _LEVEL_MASK


def vault_only(tier: int) -> bool:
    return bool(tier & VAULT_ONLY)


def known(tier: object) -> bool:
    return type(tier) is int and 0 <= tier <= MAX_TIER


def tier_name(tier: int) -> str:
    """``"high"``, ``"human+vault"``; ``"unknown(9)"`` for a tier outside the table."""
    if not known(tier):
        return f"unknown({tier})"
    return LEVEL_NAMES[level(tier)] + ("+vault" if vault_only(tier) else "")


def human_gate(
    decision: str, reasons: tuple[str, ...], tier: int, *, approved: bool
) -> tuple[str, tuple[str, ...]]:
    """The decision to sign at ``tier``: at level human an ``allow`` stands only with a
    person's approval the operator checked itself; otherwise it is ``approval_required``."""
    if decision == "allow" and level(tier) == HUMAN and not approved:
        reason = f"trust tier {tier_name(tier)}: a person must approve this exact intent"
        return "approval_required", (*reasons, reason)
    return decision, reasons


def satisfies(signed: int, required: int) -> bool:
    """Whether an attestation signed at ``signed`` meets a client minimum of ``required``:
    its level is at least as high. (A vault-only minimum is met by going through a vault: the
    verifier marks such a ticket vault-only whatever the signed bit says.)"""
    return level(signed) >= level(required)


@dataclass(frozen=True)
class TierThresholds:
    """Signatures each level needs over a set of ``operators`` keys with quorum ``threshold``;
    ``high`` is level 1's (``None``: every operator), within ``threshold..operators``."""

    operators: int
    threshold: int
    high: int | None = None

    def __post_init__(self) -> None:
        if self.high is not None and (
            type(self.high) is not int or not self.threshold <= self.high <= self.operators
        ):
            raise ConfigurationError(
                f"the high tier's threshold must be an integer between the quorum "
                f"{self.threshold} and the {self.operators} operators, got {self.high!r:.40}"
            )

    def required(self, tier: int) -> int:
        lvl = level(tier)
        if lvl == STANDARD:
            return self.threshold
        if lvl == HIGH and self.high is not None:
            return self.high
        return self.operators


def _tier_of(name: object) -> int:
    if name == "vault":
        return VAULT_ONLY
    if isinstance(name, str) and name in LEVEL_NAMES:
        return LEVEL_NAMES.index(name)
    raise ConfigurationError(
        f"tiers: unknown tier {name!r:.40}; use one of {', '.join(LEVEL_NAMES[1:])}, vault"
    )


def _amount(value: object, where: str) -> int:
    if type(value) is int and 0 <= value < 1 << 256:
        return value
    if isinstance(value, str) and _AMOUNT.match(value):
        return int(value)
    raise ConfigurationError(
        f"tiers.{where} must be an amount in atomic units (an int or a decimal string), "
        f"got {value!r:.40}"
    )


@dataclass(frozen=True)
class MinimumTiers:
    """The least tier this client accepts, by what an action moves.

    ``rules`` has the shape of the bundled policies' ``tiers`` param, so one dict can
    configure both: ``{"high": {"0x<asset, lowercase>": 1000, "*": ...}, "all": {...},
    "human": {...}, "vault": {...}}``; an action moving strictly more than an entry (of its
    asset, else ``"*"``) needs at least that tier. Amounts are atomic units.
    """

    rules: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: object) -> MinimumTiers:
        if isinstance(value, MinimumTiers):
            return value
        if not isinstance(value, Mapping):
            raise ConfigurationError(
                'tiers must map a tier name (high, all, human, vault) to {asset or "*": amount}'
            )
        rules: dict[str, dict[str, int]] = {}
        for name, table in value.items():
            _tier_of(name)
            if not isinstance(table, Mapping) or not table:
                raise ConfigurationError(f"tiers.{name} must map assets to amounts")
            parsed: dict[str, int] = {}
            for asset, amount in table.items():
                if not isinstance(asset, str) or not _ASSET.match(asset.lower()):
                    raise ConfigurationError(
                        f'tiers.{name}: {asset!r:.50} is not an asset address or "*"'
                    )
                parsed[asset.lower()] = _amount(amount, f"{name}.{asset}")
            rules[str(name)] = parsed
        return cls(rules)

    def required(self, spend: Spend) -> int:
        """The minimum tier for ``spend`` (``intent.spend``, valued from the calldata).

        A call agentguard cannot value (``unknown_call``: its ``amount`` is only the ETH it
        sends) may move anything, so it counts as the uint256 maximum here, as an NFT does:
        every ``"*"`` (and native-asset) rule applies to it."""
        asset = spend.asset.lower()
        amount = UINT256_MAX if spend.kind == "unknown_call" else spend.amount
        tier = STANDARD
        for name, table in self.rules.items():
            limit = table.get(asset, table.get("*"))
            if limit is None or amount <= limit:
                continue
            needed = _tier_of(name)
            if needed == VAULT_ONLY:
                tier |= VAULT_ONLY
            elif needed > level(tier):
                tier = (tier & VAULT_ONLY) | needed
        return tier

    def to_json(self) -> dict[str, Any]:
        return {n: {a: str(v) for a, v in t.items()} for n, t in self.rules.items()}
