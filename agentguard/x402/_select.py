"""Which of a server's payment options this agent may pay, cheapest first.

The local allowances here are the first gate (the authorization network is the second and
final one): only configured assets, each with its own per-payment cap; only EVM chains the
agent is set up for; only schemes agentguard can bind to an attestation. An option outside
them is never offered to the authorization network, let alone signed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from agentguard._exceptions import ConfigurationError, IntentError, PaymentRequiredError
from agentguard._intent import chain_id_from_network
from agentguard.x402._wire import PaymentRequired, Requirement, _address
from agentguard.x402.upto.client import UPTO_PERMIT2_PROXY

__all__ = ["Allowances", "select"]


@dataclass(frozen=True, slots=True)
class Allowances:
    """What an agent may pay over x402, whatever a server asks.

    ``assets`` maps a token address to the most one payment may move (atomic units); for
    ``upto`` that is the session maximum. Tokens not listed are never paid.
    """

    assets: Mapping[str, int]
    chain_ids: Collection[int] = (8453,)
    schemes: Collection[str] = ("exact", "upto")
    upto_spenders: Collection[str] = (UPTO_PERMIT2_PROXY,)
    _caps: Mapping[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        caps: dict[str, int] = {}
        for asset, cap in self.assets.items():
            address = _address(asset)
            if address is None:
                raise ConfigurationError(f"x402 allowance asset {asset!r} is not an address")
            if isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0:
                raise ConfigurationError(
                    f"x402 allowance for {asset} must be a positive int (atomic units), got {cap!r}"
                )
            caps[address.lower()] = cap
        if not caps:
            raise ConfigurationError("x402 allowances name no asset, so nothing could be paid")
        unknown = set(self.schemes) - {"exact", "upto"}
        if unknown:
            raise ConfigurationError(f"unsupported x402 schemes {sorted(unknown)}")
        object.__setattr__(self, "_caps", MappingProxyType(caps))
        object.__setattr__(self, "chain_ids", frozenset(self.chain_ids))
        object.__setattr__(self, "schemes", frozenset(self.schemes))
        object.__setattr__(self, "upto_spenders", frozenset(s.lower() for s in self.upto_spenders))

    def refusal(self, req: Requirement) -> str | None:
        """Why ``req`` may not be paid, or ``None`` if it may."""
        if req.scheme not in self.schemes:
            return f"{_where(req)}: scheme {req.scheme!r} is not supported"
        try:
            chain_id = chain_id_from_network(req.network)
        except IntentError:
            return f"{_where(req)}: network {req.network!r} is not a known EVM network"
        if chain_id not in self.chain_ids:
            return f"{_where(req)}: chain {chain_id} is not one this agent pays on"
        cap = self._caps.get(req.asset.lower())
        if cap is None:
            return f"{_where(req)}: asset {req.asset} is not on the allowlist"
        if req.amount > cap:
            return f"{_where(req)}: above the per-payment cap of {cap}"
        return _scheme_refusal(req, self.upto_spenders)


def _where(req: Requirement) -> str:
    """What a refusal names (written only when there is one: most requirements pass)."""
    return f"{req.scheme} {req.amount} of {req.asset} on {req.network}"


def _scheme_refusal(req: Requirement, spenders: Collection[str]) -> str | None:
    extra = req.extra
    if req.scheme == "exact":
        method = extra.get("assetTransferMethod", "eip3009")
        if method != "eip3009":
            return (
                f"{_where(req)}: asset transfer method {method!r} is not supported (eip3009 only)"
            )
        name, version = extra.get("name"), extra.get("version")
        if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
            return f"{_where(req)}: extra lacks the token's EIP-712 name and version"
        if len(name) > 64 or len(version) > 16:
            return f"{_where(req)}: extra name/version are implausibly long"
        return None
    if _address(extra.get("facilitatorAddress")) is None:
        return f"{_where(req)}: extra.facilitatorAddress is missing or not an address"
    spender = extra.get("spender", UPTO_PERMIT2_PROXY)
    if not isinstance(spender, str) or spender.lower() not in spenders:
        return f"{_where(req)}: Permit2 spender {spender!r} is not a trusted x402 upto proxy"
    return None


def select(
    required: PaymentRequired, allowances: Allowances, *, from_vault: bool = False
) -> Requirement:
    """The cheapest option the allowances permit, or ``PaymentRequiredError`` with every reason.

    ``from_vault``: only ``exact`` options, the one scheme an ``AgentVault`` can authorize.
    """
    reasons = list(required.dropped)
    payable: list[Requirement] = []
    for req in required.accepts:
        refusal = allowances.refusal(req)
        if refusal is None and from_vault and req.scheme != "exact":
            refusal = (
                f"{_where(req)}: a vault pays only "
                "'exact' (EIP-3009, checked by its ERC-1271); Permit2 'upto' from a vault is not "
                "supported"
            )
        if refusal is None:
            payable.append(req)
        else:
            reasons.append(refusal)
    if not payable:
        raise PaymentRequiredError(
            "no payment option in the 402 answer may be paid", reasons=reasons
        )
    return min(payable, key=lambda r: r.amount)  # min is stable: server order breaks ties
