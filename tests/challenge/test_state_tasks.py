"""What an auditor reads from the gateway's state: recorded tasks by a cursor that never skips
one, and every registration ever saved by its policy id (SQLite and a real PostgreSQL)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from coincurve import PrivateKey

from agentguard.network.registration import Registration
from agentguard.network.state import PolicyClientRecord, State, open_state
from agentguard.policies import load
from tests.ledger.conftest import base_url
from tests.network.test_state import AGENT, ASSET, CLIENT, NOW, reserve


@pytest.fixture(params=["sqlite", "postgres"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> State:
    if request.param == "sqlite":
        return open_state(str(tmp_path / "state.sqlite3"))
    return open_state(f"{base_url('postgres', request)}?namespace=c{uuid.uuid4().hex[:16]}")


def _record(state: State, task_id: str, amount: int, now: int = NOW) -> None:
    state.record(
        reserve(state, task_id, amount, now), expires_at=now + 300, result={"id": task_id}
    )


def test_tasks_come_in_record_order_with_a_cursor(state: State) -> None:
    for i in range(5):
        _record(state, f"t{i}", 10 + i, NOW + i)
    first = state.tasks(limit=2)
    assert [t.task_id for t in first] == ["t0", "t1"]
    assert first[0].amount == 10 and first[0].agent == AGENT and first[0].asset == ASSET
    assert first[0].result == {"id": "t0"} and first[0].status == "attested"
    rest = state.tasks(after=first[-1].seq)
    assert [t.task_id for t in rest] == ["t2", "t3", "t4"]
    assert state.tasks(after=rest[-1].seq) == []
    assert state.tasks(policy_client="0x" + "dd" * 20) == []
    assert len(state.tasks(policy_client=CLIENT.upper().replace("0X", "0x"))) == 5


def test_a_task_in_flight_is_not_listed_and_a_late_record_is_not_skipped(state: State) -> None:
    """Reserved earlier, recorded after a later task: a cursor taken in between must still
    see it (a sequence number taken at reserve time would put it behind the cursor)."""
    early = reserve(state, "early", 1, NOW)
    _record(state, "late", 2, NOW + 1)
    seen = state.tasks()
    assert [t.task_id for t in seen] == ["late"]
    state.record(early, expires_at=NOW + 300, result={"id": "early"})
    assert [t.task_id for t in state.tasks(after=seen[-1].seq)] == ["early"]


def test_every_saved_registration_stays_readable_by_its_policy_id(state: State) -> None:
    key = PrivateKey()
    policy = load("agent_spend")
    saved = []
    for cap in ("1", "2"):
        registration = Registration.sign(
            key,
            policy_client=CLIENT,
            policy=policy,
            params={"max_per_tx": cap},
            expire_after=300,
            chain_id=8453,
            version=int(cap),
        )
        state.save_policy_client(PolicyClientRecord(registration, policy))
        saved.append(registration)
    for registration in saved:
        found = state.policy_version("0x" + registration.policy_id.hex())
        assert found is not None and found.registration == registration
        assert found.policy.code_hash == policy.code_hash
    current = state.policy_client(CLIENT)
    assert current is not None and current.registration == saved[1]
    assert state.policy_version("0x" + "00" * 32) is None
