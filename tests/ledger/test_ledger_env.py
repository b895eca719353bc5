"""``AGENTGUARD_LEDGER`` takes a URL: ``Guard.from_env`` then shares the ledger and the record
of used attestations with every process configured the same way."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from agentguard import ConfigurationError, Guard
from agentguard._verifier import MemoryReplayGuard
from agentguard.ledger import Ledger, open_ledger
from tests.budget.test_env import env


def test_a_ledger_url_shares_the_ledger_and_the_replay_record(ledger_url: str) -> None:
    open_ledger(ledger_url, create=True).close()  # the setup step; workers only open it
    guard = Guard.from_env(env(LEDGER=ledger_url))
    assert isinstance(guard.defaults.ledger, Ledger)
    replay = guard.verifier._replay  # type: ignore[union-attr]
    assert not isinstance(replay, MemoryReplayGuard)
    task = uuid.uuid4().bytes * 2
    assert replay.claim(task, 2_000_000_000)
    other = Guard.from_env(env(LEDGER=ledger_url)).verifier._replay  # type: ignore[union-attr]
    assert not other.claim(task, 2_000_000_000)  # another guard (process) sees it used


@pytest.mark.parametrize("scheme", ["redis", "postgresql"])
def test_an_unreachable_ledger_url_names_the_variable_not_the_password(scheme: str) -> None:
    secret = "pw-" + uuid.uuid4().hex
    with pytest.raises(ConfigurationError, match="AGENTGUARD_LEDGER") as info:
        Guard.from_env(env(LEDGER=f"{scheme}://agent:{secret}@127.0.0.1:1/0"))
    assert secret not in str(info.value)
    with pytest.raises(ConfigurationError, match="AGENTGUARD_LEDGER"):
        Guard.from_env(env(LEDGER="mysql://127.0.0.1/x"))


def test_an_uncreated_redis_ledger_says_how_to_create_it(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A worker configured by env on a Redis namespace nobody created (or one that lost its
    data) is refused with what to do, not only an error class name."""
    from tests.ledger.conftest import base_url, fresh_url

    url = fresh_url("redis", base_url("redis", request), tmp_path)
    with pytest.raises(ConfigurationError, match=r"AGENTGUARD_LEDGER.*create=True"):
        Guard.from_env(env(LEDGER=url))
