"""Red-team: agent names through the Redis ledger's keys.

The Lua script names an agent's keys ``#agent .. ':' .. agent``, where ``#`` counts *bytes*;
``RedisBackend.usage`` builds the same key in Python with ``len(agent)``, which counts
*characters*. For an agent name outside ASCII the two keys differ, and ``Ledger.usage`` reports
nothing spent for an agent that spent (SQLite and PostgreSQL report it).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agentguard._intent import Spend
from agentguard.ledger import Limits, open_ledger
from tests.ledger.conftest import base_url, fresh_url

USDC = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "redis"])
def test_usage_of_a_non_ascii_agent_counts_its_spend(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with open_ledger(fresh_url(kind, base_url(kind, request), tmp_path), create=True) as ledger:
        ledger.reserve("agënt-ü", Spend(asset=USDC, amount=5), key="k",
                       expires_at=time.time() + 600, limits=Limits())  # fmt: skip
        assert ledger.usage("agënt-ü", 3600).spent == {USDC: 5}
