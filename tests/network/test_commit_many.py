"""``agentguard_commitTasks`` against the one-commit method it batches: the same answers, item
by item, the same errors, the same gateway state (seeded random and hostile items)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from agentguard.network._rpc import RPCError
from agentguard.network.config import ApiKeyEntry
from agentguard.network.gateway import _settle
from agentguard.network.state import State, open_state

CLIENT = "0x" + "cc" * 20
OTHER = "0x" + "dd" * 20
AGENT = "0x" + "aa" * 20
ASSET = "0x" + "11" * 20
NOW = 1_764_000_000
KEY = ApiKeyEntry(sha256="00" * 32, policy_clients=frozenset({CLIENT}))


def _allowed(state: State, task_id: str, client: str) -> None:
    reservation = state.reserve(
        policy_client=client, agent=AGENT, windows=(60,), task_id=task_id, asset=ASSET,
        amount=5, now=NOW,
    )  # fmt: skip
    state.record(reservation, expires_at=NOW + 300, result={"id": task_id})


def _states(tmp_path: Path, tasks: dict[str, str]) -> tuple[State, State]:
    pair = open_state(str(tmp_path / "one.sqlite3")), open_state(str(tmp_path / "many.sqlite3"))
    for state in pair:
        for task_id, client in tasks.items():
            _allowed(state, task_id, client)
    return pair


def _one(state: State, item: Any) -> dict[str, Any]:
    """What the one-commit method answers for ``item``, as a batch entry."""
    try:
        if not isinstance(item, dict):
            raise _settle.invalid("each commit must be an object {task_id, outcome}")
        return _settle.commit(state, KEY, item)
    except RPCError as exc:
        task_id = item.get("task_id") if isinstance(item, dict) else None
        ok = isinstance(task_id, str) and _settle.B32.match(task_id)
        return {"task_id": task_id.lower() if ok else None, "error": exc.to_json()}


def _hostile_item(rng: random.Random, tasks: list[str]) -> Any:
    task = rng.choice(tasks)
    return rng.choice(
        [
            {"task_id": task, "outcome": "0x" + "ab" * 32},
            {"task_id": task.upper().replace("0X", "0x"), "outcome": "landed"},
            {"task_id": "0x" + "ee" * 32, "outcome": "unknown task"},
            {"task_id": task[:-1], "outcome": "short id"},
            {"task_id": 7, "outcome": "not a string"},
            {"task_id": task, "outcome": 12},
            {"task_id": task, "outcome": "x" * 1001},
            {"task_id": task},
            ["not", "an", "object"],
            None,
        ]
    )


@pytest.mark.parametrize("seed", range(12))
def test_a_batch_answers_and_leaves_what_one_commit_at_a_time_would(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    tasks = {
        f"0x{rng.getrandbits(256):064x}": rng.choice([CLIENT, CLIENT, OTHER]) for _ in range(6)
    }
    one, many = _states(tmp_path, tasks)
    items = [_hostile_item(rng, list(tasks)) for _ in range(rng.randint(1, 30))]
    expected = [_one(one, item) for item in items]
    assert _settle.commit_many(many, KEY, {"commits": items}) == {"results": expected}
    for task_id in tasks:
        a, b = one.task(task_id), many.task(task_id)
        assert a is not None and b is not None and a.status == b.status


def test_a_task_twice_in_one_batch_lands_once(tmp_path: Path) -> None:
    task = "0x" + "12" * 32
    _, state = _states(tmp_path, {task: CLIENT})
    item = {"task_id": task, "outcome": "landed"}
    first, second = _settle.commit_many(state, KEY, {"commits": [item, item]})["results"]
    assert first == {"task_id": task, "status": "committed"}
    assert second["task_id"] == task and "is committed" in second["error"]["message"]


@pytest.mark.parametrize(
    "commits", [None, "0x", {}, [], [{"task_id": "0x" + "12" * 32}] * (_settle.MAX_COMMITS + 1)]
)
def test_a_batch_that_is_not_a_list_of_1_to_256_is_refused_whole(
    tmp_path: Path, commits: Any
) -> None:
    task = "0x" + "12" * 32
    _, state = _states(tmp_path, {task: CLIENT})
    with pytest.raises(RPCError, match="commits must be a list"):
        _settle.commit_many(state, KEY, {"commits": commits})
    record = state.task(task)
    assert record is not None and record.status == "attested"
