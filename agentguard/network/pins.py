"""Which registration a vault client is evaluated under: the one whose policy id the vault pins.

A vault accepts attestations only under its ``policyId()``. The owner registers a new
configuration with the network before the vault switches to it (``agentguard.chain.owner``), so
for a while the network holds a registration newer than the one the vault pins; signing under
the newest then would give the agent attestations the vault refuses, and after a cancelled
switch, for good. So the gateway and each operator with a chain RPC read ``policyId()`` (kept
``PIN_TTL`` seconds) and evaluate under the registration with that id: a scheduled switch's new
id becomes current when the vault applies it, not when it is registered or due.

Where the chain cannot tell (no RPC, no code at the address yet, a registration for another
chain, a contract without ``policyId()``, or an EOA client, which pins nothing), the newest
registration is used, as before versions existed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from agentguard._logging import get_logger
from agentguard.network.registration import Registration

if TYPE_CHECKING:
    from agentguard.network.usage import ChainUsageCheck

__all__ = ["PIN_TTL", "VaultPins", "pinned_index"]

log = get_logger("agentguard.network.pins")

# Seconds a vault's pinned policy id is reused before the chain is asked again: for at most
# this long after the transaction that applies a switch, a task may still be attested under the
# old id (the vault refuses it; the wallet releases it before signing, see docs/vault-upgrades.md).
PIN_TTL = 1.0
_MAX_CACHED = 100_000


class VaultPins:
    """A vault's ``policyId()`` through the chain RPC, per policy client, cached ``ttl`` s."""

    def __init__(
        self,
        chain: ChainUsageCheck,
        *,
        ttl: float = PIN_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._chain = chain
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, bytes | None]] = {}

    def pinned(self, registration: Registration) -> bytes | None:
        """The policy id the vault pins now, or ``None`` where the chain cannot tell. A node
        that fails gives the last answer it gave (or ``None``): the vault refuses whatever id
        it does not pin, so a wrong guess costs a refused attestation, never a wrong one."""
        if registration.self_owned:
            return None
        key = registration.policy_client_hex
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            pin = (
                self._chain.policy_id(key)
                if registration.chain_id == self._chain.chain_id and self._chain.has_code(key)
                else None
            )
        except Exception as exc:  # the node is down or answers garbage
            log.warning(
                "cannot read the vault's policy id", policy_client=key, error=type(exc).__name__
            )
            return cached[1] if cached is not None else None
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[key] = (now + self._ttl, pin)
        return pin


def pinned_index(registrations: Sequence[Registration], pin: bytes | None) -> int | None:
    """Index of the registration to evaluate under (``registrations`` oldest first): the newest
    when ``pin`` is ``None``, else the newest whose policy id is ``pin``; ``None``: none is."""
    if not registrations:
        return None
    if pin is None:
        return len(registrations) - 1
    for index in range(len(registrations) - 1, -1, -1):
        if registrations[index].policy_id == pin:
            return index
    return None
