"""``SQLiteState.claim_approval`` asks the file only for policy clients that may hold an
approved request (``_approving``); every other task gets ``None`` without a statement.

Differential: seeded random sequences of parking, approving, rejecting, claiming, giving back,
using, time passing and restarts (a state reopened from the file) run on the fast state and on
one that always asks the file; every claim answers the same and the files end the same. Plus
the cases the set must never miss: an approval made before a restart, and a client's first
approval.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from agentguard.network.state._sqlite import SQLiteState

NOW = 1_764_000_000
CLIENTS = ["0x" + c * 40 for c in "abc"]
INTENTS = ["0x" + c * 64 for c in "123"]


class _Everyone(set[str]):
    """Holds every client: the state asks the file on every claim (the old path)."""

    def __contains__(self, item: object) -> bool:
        return True


def _slow(path: Path) -> SQLiteState:
    state = SQLiteState(path)
    state._approving = _Everyone()
    return state


def _park(state: SQLiteState, client: str, intent: str, now: int, ttl: int) -> Any:
    parked = state.park_approval(
        policy_client=client,
        intent_hash=intent,
        intent={"to": client},
        spend={"asset": client, "amount": "5", "recipient": client, "kind": "transfer"},
        reasons=["needs a human"],
        now=now,
        ttl=ttl,
    )
    return None if parked is None else parked.status


def _rows(state: SQLiteState) -> list[tuple[Any, ...]]:
    return state._db.execute(
        "SELECT policy_client, intent_hash, status, approval, used_by, expires_at "
        "FROM approval_requests ORDER BY policy_client, intent_hash"
    ).fetchall()


@pytest.mark.parametrize("seed", range(12))
def test_claims_answer_as_when_every_claim_asks_the_file(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    fast_path, slow_path = tmp_path / "fast.sqlite3", tmp_path / "slow.sqlite3"
    fast, slow = SQLiteState(fast_path), _slow(slow_path)
    now = NOW
    tasks = [f"task-{i}" for i in range(6)]
    for _ in range(300):
        client, intent, task = rng.choice(CLIENTS), rng.choice(INTENTS), rng.choice(tasks)
        # the clients, in any spelling the callers use
        spelled = client.upper().replace("0X", "0x") if rng.random() < 0.3 else client
        op = rng.randrange(8)
        if op == 0:
            ttl = rng.choice([5, 60, 900])
            assert _park(fast, spelled, intent, now, ttl) == _park(slow, client, intent, now, ttl)
        elif op == 1:
            expires = now + rng.choice([1, 30, 900])
            args = {"approval": {"signed": intent}, "approver": client, "now": now}
            assert fast.approve(spelled, intent, expires_at=expires, **args) == slow.approve(
                client, intent, expires_at=expires, **args
            )
        elif op == 2:
            assert fast.reject(spelled, intent, now) == slow.reject(client, intent, now)
        elif op in (3, 4):
            got = fast.claim_approval(spelled, intent, task, now)
            assert got == slow.claim_approval(client, intent, task, now)
        elif op == 5:
            fast.unclaim_approval(spelled, intent, task)
            slow.unclaim_approval(client, intent, task)
        elif op == 6:
            fast.use_approval(spelled, intent, task)
            slow.use_approval(client, intent, task)
        elif rng.random() < 0.5:
            now += rng.choice([1, 10, 100, 1000])
        else:  # a restart: the set is rebuilt from the file
            fast.close()
            slow.close()
            fast, slow = SQLiteState(fast_path), _slow(slow_path)
    assert _rows(fast) == _rows(slow)
    fast.close()
    slow.close()


def test_an_approval_made_before_a_restart_is_claimed_after_it(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    state = SQLiteState(path)
    _park(state, CLIENTS[0], INTENTS[0], NOW, 900)
    assert state.approve(
        CLIENTS[0],
        INTENTS[0],
        approval={"ok": 1},
        approver=CLIENTS[1],
        expires_at=NOW + 900,
        now=NOW,
    )
    state.close()
    reopened = SQLiteState(path)
    assert reopened.claim_approval(CLIENTS[0], INTENTS[0], "t", NOW) == {"ok": 1}
    assert reopened.claim_approval(CLIENTS[1], INTENTS[0], "t", NOW) is None
    reopened.close()


def test_a_clients_first_approval_is_claimed_at_once(tmp_path: Path) -> None:
    state = SQLiteState(tmp_path / "state.sqlite3")
    _park(state, CLIENTS[2], INTENTS[1], NOW, 900)
    assert state.claim_approval(CLIENTS[2], INTENTS[1], "t", NOW) is None  # pending
    assert CLIENTS[2] not in state._approving
    assert state.approve(
        CLIENTS[2].upper().replace("0X", "0x"),
        INTENTS[1],
        approval={"ok": 2},
        approver=CLIENTS[0],
        expires_at=NOW + 900,
        now=NOW,
    )
    assert state.claim_approval(CLIENTS[2], INTENTS[1], "t", NOW) == {"ok": 2}
    assert state.claim_approval(CLIENTS[2], INTENTS[1], "u", NOW) is None  # claimed once
    state.close()
