"""An operator's registry of versions, unit by unit (the chain's answers are plain functions
here; ``test_network_versions.py`` runs the same rules with a real vault and network)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard._exceptions import ConfigurationError
from agentguard.network.registration import MAX_VERSIONS, Registration
from agentguard.network.registry import Registry
from tests.network.conftest import NETCHECK, UNIT, params

VAULT = "0x" + "cc" * 20
OWNER = PrivateKey(b"\x07" * 32)
THIEF = PrivateKey(b"\x08" * 32)


def signed(version: int, *, cap: int = UNIT, owner: PrivateKey = OWNER) -> Registration:
    return Registration.sign(
        owner,
        policy_client=VAULT,
        policy=NETCHECK,
        params=params(max_per_tx=cap),
        expire_after=300,
        chain_id=8453,
        version=version,
    )


def test_versions_survive_a_restart_and_a_pre_versions_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    db = sqlite3.connect(path)  # the one-registration-per-client table of before
    db.execute("CREATE TABLE registrations (policy_client TEXT PRIMARY KEY, registration TEXT)")
    db.execute("INSERT INTO registrations VALUES (?, ?)", (VAULT, json.dumps(signed(1).to_json())))
    db.commit()
    db.close()
    registry = Registry(path)
    registry.offer(signed(2))
    registry.close()
    again = Registry(path)
    assert [r.version for r in again.versions(bytes.fromhex(VAULT[2:]))] == [1, 2]


def test_history_is_bounded_and_never_made_newest_by_an_older_version() -> None:
    registry = Registry(":memory:", pinned=lambda r: signed(1).policy_id)
    for version in range(1, MAX_VERSIONS + 3):
        registry.offer(signed(version, cap=version * UNIT))
    held = registry.versions(bytes.fromhex(VAULT[2:]))
    assert len(held) == MAX_VERSIONS and held[-1].version == MAX_VERSIONS + 2
    with pytest.raises(ConfigurationError, match="older than every version kept"):
        registry.offer(signed(1, cap=UNIT))  # pinned, but below the history kept


def test_without_a_chain_only_the_newest_is_signed_under() -> None:
    """Before versions an operator held only the newest; it still signs only under it when it
    cannot read the vault (a gateway naming an older one it holds gets a refusal)."""
    registry = Registry(":memory:")
    older, newer = registry.offer(signed(1, cap=100 * UNIT)), registry.offer(signed(2))
    assert registry.choose(newer) == newer
    with pytest.raises(ConfigurationError, match="not newer"):
        registry.choose(older)


def test_with_a_chain_only_the_pinned_version_is_signed_under() -> None:
    pin: dict[str, Any] = {"id": None}
    registry = Registry(":memory:", pinned=lambda r: pin["id"])
    older, newer = registry.offer(signed(1, cap=100 * UNIT)), registry.offer(signed(2))
    pin["id"] = older.policy_id
    assert registry.choose(older) == older
    with pytest.raises(ConfigurationError, match="pins policy id"):
        registry.choose(newer)
    pin["id"] = None  # no code yet, another chain: the newest
    assert registry.choose(newer) == newer


def test_an_older_version_joins_the_history_only_if_the_vault_pins_it() -> None:
    pin: dict[str, Any] = {"id": None}
    registry = Registry(":memory:", pinned=lambda r: pin["id"])
    registry.offer(signed(3))
    with pytest.raises(ConfigurationError, match="not newer"):
        registry.offer(signed(1, cap=100 * UNIT))
    pin["id"] = signed(2).policy_id
    assert registry.choose(registry.offer(signed(2))).version == 2
    with pytest.raises(ConfigurationError, match="not newer"):
        registry.offer(signed(2, cap=7 * UNIT))  # another version 2, not the pinned one


def test_a_takeover_by_the_chains_owner_drops_the_strangers_versions() -> None:
    thief_address = (
        "0x"
        + Registration.sign(
            THIEF,
            policy_client=VAULT,
            policy=NETCHECK,
            params={},
            expire_after=1,
            chain_id=1,
            version=0,
        ).owner.hex()
    )
    owner_of = {"owner": thief_address}
    registry = Registry(":memory:", check_owner=lambda r: owner_of["owner"])
    registry.offer(signed(5, cap=100 * UNIT, owner=THIEF))
    owner_of["owner"] = signed(1).owner_hex
    registry.offer(signed(1))
    assert [r.owner for r in registry.versions(bytes.fromhex(VAULT[2:]))] == [signed(1).owner]
