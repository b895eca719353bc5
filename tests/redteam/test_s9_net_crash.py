"""Red team of session 9's group commit on a real gateway: a failed commit, a waiter that
stops waiting, and a gateway process SIGKILLed after its commit but before its answer (and
before its commit). What must hold: nothing answered ``allow`` is missing from the file or
the books, nothing not written is counted, a retry gets the recorded answer, never a second
attestation."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agentguard._exceptions import GatewayStateError
from agentguard.network.gateway import Gateway
from agentguard.network.state import open_state
from tests.redteam._s9_net import KEY, UNIT, Net, agent, params

ROOT = Path(__file__).resolve().parents[2]


class _FailingCommits:
    """A SQLite connection whose next ``failures`` COMMITs fail (a full disk, an I/O error)."""

    def __init__(self, db: sqlite3.Connection, failures: int) -> None:
        self._db, self.failures = db, failures

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT" and self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def _rows(path: str) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])


def test_a_failed_group_commit_answers_a_typed_error_and_counts_nothing(tmp_path: Path) -> None:
    net = Net(tmp_path)
    try:
        real = net.state._db  # type: ignore[attr-defined]
        net.state._db = _FailingCommits(real, failures=1)  # type: ignore[attr-defined]
        request = params(1, 5 * UNIT)
        with pytest.raises(GatewayStateError):
            net.create("fails", request)
        assert net.spent(agent(1)) == (0, 0)
        assert _rows(net.path) == 0
        assert (KEY.sha256, "fails") not in net.gateway.idempotency._entries
        first = net.create("fails", request)  # the retry runs again, and is counted once
        assert json.loads(first)["attestation"]["decision"] == "allow"
        assert net.create("fails", request) == first
        assert net.spent(agent(1)) == (1, 5 * UNIT)
        assert _rows(net.path) == 1
    finally:
        net.close()


def test_a_waiter_that_stops_waiting_still_gets_its_record_and_the_retry_its_answer(
    tmp_path: Path,
) -> None:
    """The client hangs up while its allow is queued for the commit: the record is written
    and counted anyway, and the retry is answered from it (no second evaluation)."""
    import asyncio

    net = Net(tmp_path)
    try:
        request = params(2)

        async def hang_up() -> None:
            task = asyncio.ensure_future(net.ask("hangup", request))
            while not net.state._queue:  # type: ignore[attr-defined]
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0)  # the group commit runs

        net.run(hang_up())
        assert _rows(net.path) == 1
        assert net.spent(agent(2)) == (1, UNIT)
        asked = 0

        def count(i: int, reply: dict[str, Any]) -> Any:
            nonlocal asked
            asked += 1
            return reply

        net.tamper = count
        answer = json.loads(net.create("hangup", request))
        assert answer["attestation"]["decision"] == "allow"
        assert asked == 0
        assert net.spent(agent(2)) == (1, UNIT)
    finally:
        net.close()


_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from agentguard.network.state import _sqlite
    from tests.redteam._s9_net import Net, params

    where = {where!r}
    if where == "after commit":
        settle = _sqlite.SQLiteState._settle
        def dying_settle(self, item):
            os.kill(os.getpid(), signal.SIGKILL)  # written, committed, nobody answered
        _sqlite.SQLiteState._settle = dying_settle
    else:
        flush = _sqlite.SQLiteState._flush
        def dying_flush(self):
            if self._queue:
                os.kill(os.getpid(), signal.SIGKILL)  # nothing written, nobody answered
            flush(self)
        _sqlite.SQLiteState._flush = dying_flush
    net = Net(Path({folder!r}))
    net.create("killed", params(3, 5 * {unit}))
    print("ANSWERED", flush=True)
    """
)


@pytest.mark.parametrize("where", ["after commit", "before commit"])
def test_sigkill_around_the_group_commit_loses_no_answered_allow_and_counts_once(
    tmp_path: Path, where: str
) -> None:
    script = _CHILD.format(root=str(ROOT), where=where, folder=str(tmp_path), unit=UNIT)
    child = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert "ANSWERED" not in child.stdout  # the client never got an answer
    state_path = str(tmp_path / "state.sqlite3")
    assert _rows(state_path) == (1 if where == "after commit" else 0)

    net = Net(tmp_path)  # the restarted gateway, on the same file
    try:
        before = net.spent(agent(3))
        assert before == ((1, 5 * UNIT) if where == "after commit" else (0, 0))
        asked = 0

        def count(i: int, reply: dict[str, Any]) -> Any:
            nonlocal asked
            asked += 1
            return reply

        net.tamper = count
        retry = net.create("killed", params(3, 5 * UNIT))
        result = json.loads(retry)
        assert result["attestation"]["decision"] == "allow"
        if where == "after commit":
            assert asked == 0  # the recorded answer, not a second attestation
            stored = net.state.stored_result(result["task_id"])
            assert stored is not None and json.dumps(stored) == json.dumps(result)
        assert net.spent(agent(3)) == (1, 5 * UNIT)
        assert _rows(state_path) == 1
        # the cap (12 USDC a day) holds across the crash: one more 5 passes, the next not
        second = json.loads(net.create("next", params(3, 5 * UNIT)))
        third = json.loads(net.create("third", params(3, 5 * UNIT)))
        assert second["attestation"]["decision"] == "allow"
        assert third["attestation"]["decision"] == "deny"
        restarted = Gateway(net.gateway.config, open_state(net.path))
        try:
            again = net.run(
                restarted.dispatch(KEY, "killed", "newt_createTask", params(3, 5 * UNIT))
            )
            assert again.data == retry
        finally:
            net.run(restarted.close())
            restarted.state.close()
    finally:
        net.close()


def _approval_client(net: Net) -> tuple[Any, str]:
    """A policy client whose owner must approve anything above 2 USDC."""
    from coincurve import PrivateKey

    from agentguard._attestation import operator_address
    from agentguard.network.registration import Registration
    from agentguard.policies import load
    from tests.network.test_gateway_memory import PARAMS, USDC

    owner = PrivateKey(b"\x55" * 32)
    address = operator_address(owner)
    registration = Registration.sign(
        owner,
        policy_client=address,
        policy=load("agent_spend"),
        params={**PARAMS, "approval_above": {USDC.lower(): str(2 * UNIT)}},
        expire_after=300,
        chain_id=8453,
        version=1,
    )
    net.gateway.register({"registration": registration.to_json(), "policy": "agent_spend"})
    return owner, address


def _approved(net: Net, rpc_id: str) -> tuple[dict[str, Any], str]:
    """A 3 USDC transfer parked, then approved by the owner: (its request, its intent hash)."""
    import time

    from agentguard.network.approvals import SignedApproval

    owner, address = _approval_client(net)
    request = {**params(5, 3 * UNIT), "policy_client": address}
    parked = json.loads(net.create(f"{rpc_id}-park", request))
    assert parked["attestation"]["decision"] == "approval_required"
    intent_hash = parked["attestation"]["intent_hash"]
    approval = SignedApproval.sign(
        owner,
        policy_client=address,
        intent_hash=intent_hash,
        chain_id=8453,
        expires_at=int(time.time()) + 600,
    ).to_json()
    net.run(net.gateway.dispatch(KEY, f"{rpc_id}-ok", "agentguard_approve", {"approval": approval}))
    return request, intent_hash


def test_a_failed_commit_gives_the_claimed_approval_back(tmp_path: Path) -> None:
    """The approved task's allow cannot be written: the approval it claimed must be free
    again (the task was not allowed), so the retry is allowed on it, once."""
    net = Net(tmp_path)
    try:
        request, _ = _approved(net, "a")
        real = net.state._db  # type: ignore[attr-defined]
        net.state._db = _FailingCommits(real, failures=1)  # type: ignore[attr-defined]
        with pytest.raises(GatewayStateError):
            net.create("approved", request)
        net.state._db = real  # type: ignore[attr-defined]
        retry = json.loads(net.create("approved", request))
        assert retry["attestation"]["decision"] == "allow", retry["attestation"]
        again = json.loads(net.create("approved-again", request))
        assert again["attestation"]["decision"] == "approval_required"  # used once
    finally:
        net.close()


def test_a_hung_up_approved_task_marks_its_approval_used(tmp_path: Path) -> None:
    """The client hangs up while its approved allow is queued for the commit: the allow is
    recorded, so its approval is used (not left approved and claimed by a task)."""
    import asyncio

    net = Net(tmp_path)
    try:
        request, intent_hash = _approved(net, "b")

        async def hang_up() -> None:
            task = asyncio.ensure_future(net.ask("approved", request))
            while not net.state._queue:  # type: ignore[attr-defined]
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0)

        net.run(hang_up())
        assert _rows(net.path) == 1
        row = net.state._db.execute(  # type: ignore[attr-defined]
            "SELECT status FROM approval_requests WHERE intent_hash = ?", (intent_hash,)
        ).fetchone()
        assert row[0] == "used"
    finally:
        net.close()
