"""A vault's owner takes its policy client over from a stranger who registered it first
(``Registration.replaces``: the chain's ``owner()`` wins whatever the version). Two gateway
``Clients`` (two replicas) on one real PostgreSQL state; the chain's answer is a stub (only
``check_owner`` is asked)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard._attestation import operator_address
from agentguard.network.config import GatewaySettings
from agentguard.network.gateway import _registry
from agentguard.network.gateway._registry import Clients
from agentguard.network.registration import Registration
from agentguard.network.state import open_state, policy_material
from tests.ledger.conftest import base_url
from tests.network.conftest import NETCHECK, UNIT, params

VAULT = "0x" + "ab" * 20


class _Chain:
    """The chain's word on the vault's ``owner()``."""

    def __init__(self, owner: str) -> None:
        self.owner = owner

    def check_owner(self, registration: Registration) -> str | None:
        return self.owner


def _signed(key: PrivateKey, cap: int, version: int) -> dict[str, Any]:
    registration = Registration.sign(
        key,
        policy_client=VAULT,
        policy=NETCHECK,
        params=params(daily_cap=cap),
        expire_after=300,
        chain_id=8453,
        version=version,
    )
    return {"registration": registration.to_json(), "policy": policy_material(NETCHECK)}


def test_a_takeover_with_the_strangers_version_reaches_every_replica(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack: a stranger registers the vault first with a loose cap and version 7; the owner
    takes it over through replica 1, also with version 7. Replica 2 re-read the state every
    2 s but rebuilt its copy only when the version number changed, so before the fix it kept
    the stranger's registration (loose cap, the stranger as owner) for as long as it ran.
    Now a copy is replaced whenever the registration held in the state is another one."""
    url = f"{base_url('postgres', request)}?namespace=rt5{uuid.uuid4().hex[:12]}"
    stranger, owner = PrivateKey(), PrivateKey()
    owner_hex = operator_address(owner).lower()
    chain = _Chain(owner_hex)
    settings = GatewaySettings()
    one = Clients(settings, open_state(url), chain)  # type: ignore[arg-type]
    two = Clients(settings, open_state(url), chain)  # type: ignore[arg-type]
    one.register(_signed(stranger, 100 * UNIT, 7))
    cached = two.registered(VAULT)
    assert cached.registration.owner_hex != owner_hex
    taken = one.register(_signed(owner, UNIT, 7))
    assert taken.registration.owner_hex == owner_hex
    monkeypatch.setattr(_registry, "CLIENT_REFRESH", 0.0)
    two._fresh.clear()  # replica 2's 2 s are over
    seen = two.registered(VAULT)
    assert seen.registration.digest() == taken.registration.digest()
    assert seen.registration.owner_hex == owner_hex and seen.params == taken.params
