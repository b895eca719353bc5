"""The gateway's spend records: windows, in-flight reservations, release, restart, approvals.

Every test that takes ``state`` or ``spec`` runs on SQLite and on a real PostgreSQL (started
once per session by ``tests/ledger/servers.py``; skipped with the reason where it cannot)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from agentguard.network.state import State, TaskRecord, open_state
from agentguard.network.state import _base as state_base
from agentguard.network.state import _postgres as state_postgres
from agentguard.network.state import _sqlite as state_sqlite
from tests.ledger.conftest import base_url

CLIENT = "0x" + "cc" * 20
AGENT = "0x" + "aa" * 20
ASSET = "0x" + "11" * 20
NOW = 1_764_000_000


def TRUSTED(task: TaskRecord) -> bool:
    return True


def UNTRUSTED(task: TaskRecord) -> bool:
    return False


def reserve(
    state: State, task_id: str, amount: int, now: int = NOW, windows: tuple[int, ...] = (60,)
):  # type: ignore[no-untyped-def]
    return state.reserve(
        policy_client=CLIENT,
        agent=AGENT,
        windows=windows,
        task_id=task_id,
        asset=ASSET,
        amount=amount,
        now=now,
    )


def allow(state: State, task_id: str, amount: int, now: int = NOW, expires_in: int = 300) -> None:
    state.record(
        reserve(state, task_id, amount, now), expires_at=now + expires_in, result={"id": task_id}
    )


def spent(state: State, window: int, now: int = NOW) -> tuple[int, int]:
    totals = state.totals(policy_client=CLIENT, agent=AGENT, windows=(60,), now=now)[window]
    return totals.count, totals.spent.get(ASSET, 0)


@pytest.fixture(params=["sqlite", "postgres"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty state on each backend in turn: a file, or a schema of its own."""
    if request.param == "sqlite":
        return str(tmp_path / "state.sqlite3")
    return f"{base_url('postgres', request)}?namespace=s{uuid.uuid4().hex[:16]}"


@pytest.fixture
def state(spec: str) -> State:
    return open_state(spec)


def test_windows_count_what_was_attested_and_roll_over(state: State) -> None:
    allow(state, "t1", 5, now=NOW)
    allow(state, "t2", 7, now=NOW + 30)
    assert spent(state, 60, NOW + 30) == (2, 12)
    assert spent(state, 60, NOW + 60) == (1, 7)  # t1 is exactly 60 s old: out of the window
    assert spent(state, 3600, NOW + 60) == (2, 12)
    assert spent(state, 86400, NOW + 86400 + 30) == (0, 0)


def test_amounts_are_exact_past_2_to_the_64(state: State) -> None:
    big = 2**64 + 1
    allow(state, "t1", big)
    allow(state, "t2", big)
    assert spent(state, 86400) == (2, 2 * big)


def test_in_flight_reservations_count_until_cancelled(state: State) -> None:
    first = reserve(state, "t1", 5)
    second = reserve(state, "t2", 3)
    assert first.history[60].spent == {}
    assert second.history[60].spent == {ASSET: 5}  # sees the first, still in flight
    state.cancel(first)
    assert spent(state, 60) == (1, 3)
    state.cancel(second)
    assert spent(state, 60) == (0, 0)


def test_records_survive_a_restart(spec: str) -> None:
    first = State(spec)
    allow(first, "t1", 5)
    in_flight = reserve(first, "t2", 100)  # never recorded: the gateway died mid-task
    assert in_flight.entry.amount == 100
    first.close()
    again = State(spec)
    if spec.startswith("postgresql"):
        # Shared: another replica may still be deciding it, so it counts until it is stale.
        assert spent(again, 60) == (2, 105)
        from agentguard.network.state._postgres import STALE_RESERVATION

        again.sweep_expired(NOW + STALE_RESERVATION, None, TRUSTED)
        assert spent(again, 3600, NOW + STALE_RESERVATION) == (1, 5)
    else:
        assert spent(again, 60) == (1, 5)
    assert again.stored_result("t1") == {"id": "t1"}
    assert again.stored_result("t2") is None
    assert again.task("t2") is None


def test_release_only_while_attested(state: State) -> None:
    allow(state, "t1", 5, expires_in=0)  # already expired: can never be used any more
    allow(state, "t2", 7)
    assert state.release("t1", NOW, trusted=True) == "released"
    assert state.release("t1", NOW, trusted=True) is None
    assert spent(state, 60) == (1, 7)
    assert state.commit("t2", "0xfeed") is True
    assert state.release("t2", NOW, trusted=True) is None
    assert spent(state, 60) == (1, 7)
    assert state.release("unknown", NOW, trusted=True) is None


def test_a_valid_attestation_released_keeps_counting_until_it_expires(state: State) -> None:
    allow(state, "t1", 5, expires_in=30)
    assert state.release("t1", NOW, trusted=True) == "releasing"
    assert state.release("t1", NOW, trusted=True) is None  # once
    assert spent(state, 60) == (1, 5)  # a host could still use it: it counts
    assert state.sweep_expired(NOW + 29, None, TRUSTED) == 0
    assert spent(state, 60, NOW + 29) == (1, 5)
    assert state.sweep_expired(NOW + 30, None, TRUSTED) == 1
    assert spent(state, 60, NOW + 30) == (0, 0)


def test_an_untrusted_release_stays_counted_without_a_usage_check(state: State) -> None:
    """Release-then-use: before the fix a vault client's host released each attestation and
    still executed it before expiry; at expiry the amount came back (15-25 USDC reached the
    shop under a 12 USDC cap). Without a usage check nothing can rule the use out."""
    allow(state, "t1", 5, expires_in=30)
    allow(state, "t2", 7, expires_in=0)
    assert state.release("t1", NOW, trusted=False) == "releasing"
    assert state.release("t2", NOW, trusted=False) == "releasing"  # expired, still not trusted
    assert state.sweep_expired(NOW + 30, None, UNTRUSTED) == 0
    assert state.task("t1").status == "committed"  # type: ignore[union-attr]
    assert spent(state, 60, NOW + 30) == (2, 12)


def test_a_released_attestation_that_was_used_after_all_stays_counted(state: State) -> None:
    allow(state, "t1", 5, expires_in=30)
    assert state.release("t1", NOW, trusted=True) == "releasing"
    assert state.sweep_expired(NOW + 30, Usage({"t1": True}), TRUSTED) == 0
    assert state.task("t1").status == "committed"  # type: ignore[union-attr]
    assert spent(state, 60, NOW + 30) == (1, 5)


def test_release_after_restart_gives_the_amount_back(spec: str) -> None:
    first = State(spec)
    allow(first, "t1", 5, expires_in=10)
    first.close()
    again = State(spec)
    assert spent(again, 60) == (1, 5)
    assert again.release("t1", NOW + 10, trusted=True) == "released"
    assert spent(again, 60, NOW + 10) == (0, 0)


class Usage:
    def __init__(self, answers: dict[str, bool | None]) -> None:
        self.answers = answers
        self.asked: list[TaskRecord] = []

    def was_used(self, task: TaskRecord) -> bool | None:
        self.asked.append(task)
        return self.answers[task.task_id]


def test_expired_tasks_are_released_only_when_the_usage_check_says_unused(state: State) -> None:
    allow(state, "unused", 1, expires_in=10)
    allow(state, "used", 2, expires_in=10)
    allow(state, "unknown", 4, expires_in=10)
    allow(state, "live", 8, expires_in=1000)
    usage = Usage({"unused": False, "used": True, "unknown": None})
    assert state.sweep_expired(NOW + 11, usage, TRUSTED) == 1
    assert {t.task_id for t in usage.asked} == {"unused", "used", "unknown"}
    assert spent(state, 3600, NOW + 11) == (3, 14)
    assert state.task("used") is not None and state.task("used").status == "committed"  # type: ignore[union-attr]
    assert state.task("unknown").status == "attested"  # type: ignore[union-attr]


class Broken(Usage):
    """A check that raises for ``broken`` (a node error, a contract whose ``taskUsed`` reverts)."""

    def was_used(self, task: TaskRecord) -> bool | None:
        if task.task_id == "broken":
            raise RuntimeError("execution reverted")
        return super().was_used(task)


def test_a_task_whose_usage_check_raises_does_not_hold_back_the_others(state: State) -> None:
    """Before the fix the first task's error aborted the pass; expiring first, that task headed
    every pass, so another client's release was never given back."""
    allow(state, "broken", 1, expires_in=5)
    allow(state, "unused", 2, expires_in=10)
    allow(state, "used", 4, expires_in=10)
    assert state.release("unused", NOW, trusted=False) == "releasing"
    with pytest.raises(RuntimeError, match="execution reverted"):  # reported after the pass
        state.sweep_expired(NOW + 11, Broken({"unused": False, "used": True}), UNTRUSTED)
    assert state.task("broken").status == "attested"  # type: ignore[union-attr]
    assert state.task("unused").status == "released"  # type: ignore[union-attr]
    assert state.task("used").status == "committed"  # type: ignore[union-attr]
    assert spent(state, 3600, NOW + 11) == (2, 5)  # the broken one stays counted


def test_tasks_left_as_they_are_do_not_hold_back_later_ones_past_a_batch(
    state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tasks the check cannot settle stay ``attested`` and expire first: before the fix every
    pass took the same first batch of them, so a later release was never reached."""
    for backend in (state_base, state_sqlite, state_postgres):
        monkeypatch.setattr(backend, "SWEEP_BATCH", 2)
    for n in range(3):
        allow(state, f"stuck{n}", 1, expires_in=5 + n)
    allow(state, "unused", 2, expires_in=10)
    assert state.release("unused", NOW, trusted=False) == "releasing"
    usage = Usage({"stuck0": None, "stuck1": None, "stuck2": None, "unused": False})
    assert state.sweep_expired(NOW + 11, usage, UNTRUSTED) == 0  # stuck0, stuck1
    assert state.sweep_expired(NOW + 12, usage, UNTRUSTED) == 1  # stuck2, unused
    assert state.task("unused").status == "released"  # type: ignore[union-attr]
    assert state.sweep_expired(NOW + 13, usage, UNTRUSTED) == 0  # nothing past it: the end
    assert state.sweep_expired(NOW + 14, usage, UNTRUSTED) == 0  # from the start again
    assert [t.task_id for t in usage.asked] == [
        "stuck0",
        "stuck1",
        "stuck2",
        "unused",
        "stuck0",
        "stuck1",
    ]
    assert spent(state, 3600, NOW + 14) == (3, 3)


def test_a_new_window_rebuilds_totals_and_keeps_in_flight_amounts(state: State) -> None:
    allow(state, "t1", 5, now=NOW)
    in_flight = reserve(state, "t2", 3, now=NOW + 100)
    totals = state.totals(policy_client=CLIENT, agent=AGENT, windows=(60, 600), now=NOW + 100)
    assert totals[600].spent == {ASSET: 8}
    assert totals[60].spent == {ASSET: 3}
    state.cancel(in_flight)
    totals = state.totals(policy_client=CLIENT, agent=AGENT, windows=(600,), now=NOW + 100)
    assert totals[600].spent == {ASSET: 5}


def park(state: State, intent_hash: str, now: int = NOW, ttl: int = 900) -> None:
    state.park_approval(
        policy_client=CLIENT,
        intent_hash=intent_hash,
        intent={"to": CLIENT},
        spend={"asset": ASSET, "amount": "5", "recipient": AGENT, "kind": "transfer"},
        reasons=["needs a human"],
        now=now,
        ttl=ttl,
    )


def approve(state: State, intent_hash: str, now: int = NOW, expires_at: int = NOW + 900) -> bool:
    return state.approve(
        CLIENT,
        intent_hash,
        approval={"signed": intent_hash},
        approver=AGENT,
        expires_at=expires_at,
        now=now,
    )


def test_an_approval_is_claimed_by_one_task_and_given_back_on_failure(state: State) -> None:
    """Before the fix the approval was read when the input was built and consumed only after
    the operators answered, so concurrent tasks all saw ``approved``."""
    assert not approve(state, "0xab")  # nothing parked: nothing to approve
    park(state, "0xAB")
    assert approve(state, "0xab")
    assert state.approved(CLIENT, "0xab", NOW + 10)
    assert not state.approved(CLIENT, "0xab", NOW + 900)  # expired
    assert state.claim_approval(CLIENT, "0xab", "t1", NOW + 10) == {"signed": "0xab"}
    assert state.claim_approval(CLIENT, "0xab", "t2", NOW + 10) is None  # one task at a time
    state.unclaim_approval(CLIENT, "0xab", "t2")  # not t2's to give back
    assert state.claim_approval(CLIENT, "0xab", "t3", NOW + 10) is None
    state.unclaim_approval(CLIENT, "0xab", "t1")  # t1 was denied
    assert state.claim_approval(CLIENT, "0xab", "t3", NOW + 10) is not None
    state.use_approval(CLIENT, "0xab", "t3")  # t3 was allowed: spent for good
    state.unclaim_approval(CLIENT, "0xab", "t3")
    assert state.claim_approval(CLIENT, "0xab", "t4", NOW + 10) is None
    assert state.approval_request(CLIENT, "0xab", NOW + 10).status == "used"  # type: ignore[union-attr]
    park(state, "0xab", now=NOW + 20)  # the same action asked again: a new decision
    assert state.approval_request(CLIENT, "0xab", NOW + 20).status == "pending"  # type: ignore[union-attr]
    park(state, "0xcd")
    assert approve(state, "0xcd")
    assert state.claim_approval(CLIENT, "0xcd", "t5", NOW + 900) is None  # expired


def test_a_rejected_request_is_never_approved_or_claimed(state: State) -> None:
    """Attack: approve after a rejection (the approver signed, then changed their mind, or a
    replayed approval): a rejected request never becomes approved, and re-asking the same intent
    does not revive it while it lives."""
    park(state, "0xab")
    assert state.reject(CLIENT, "0xab", NOW + 1)
    assert not approve(state, "0xab", now=NOW + 2)
    assert state.claim_approval(CLIENT, "0xab", "t1", NOW + 3) is None
    park(state, "0xab", now=NOW + 4)
    assert state.approval_request(CLIENT, "0xab", NOW + 4).status == "rejected"  # type: ignore[union-attr]
    assert not state.reject(CLIENT, "0xab", NOW + 5)  # decided once
    # an approved one nobody holds can still be rejected; a claimed one cannot
    park(state, "0xcd")
    assert approve(state, "0xcd")
    assert state.reject(CLIENT, "0xcd", NOW + 1)
    assert state.claim_approval(CLIENT, "0xcd", "t2", NOW + 2) is None


def _register(state: State, window: int) -> None:
    from coincurve import PrivateKey

    from agentguard.network.registration import Registration
    from agentguard.network.state import PolicyClientRecord

    from .conftest import NETCHECK, params

    config = params()
    config["rate_limits"] = [{"window_seconds": window, "max_count": 1000}]
    registration = Registration.sign(
        PrivateKey(b"\x05" * 32),
        policy_client=CLIENT,
        policy=NETCHECK,
        params=config,
        expire_after=300,
        chain_id=8453,
        version=window,
    )
    state.save_policy_client(PolicyClientRecord(registration, NETCHECK))


def test_re_registration_keeps_in_flight_amounts_exact(state: State) -> None:
    """Before the fix re-registering a client dropped its in-flight amounts (13-24 allows got
    through a 10-per-hour cap) and cancelling them afterwards drove totals negative."""
    allow(state, "t0", 2)
    cancelled = reserve(state, "t1", 5)
    recorded = reserve(state, "t2", 7)
    _register(state, 120)
    assert spent(state, 3600) == (3, 14)  # rebuilt from the file plus what is in flight
    state.cancel(cancelled)
    state.record(recorded, expires_at=NOW + 300, result={})
    _register(state, 180)
    late = reserve(state, "t3", 11)
    _register(state, 240)
    state.cancel(late)  # cancelled after its book was replaced
    assert spent(state, 3600) == (2, 9)
    assert state.release("t2", NOW + 300, trusted=True) == "released"
    assert spent(state, 3600, NOW + 300) == (1, 2)


def test_a_record_after_re_registration_is_counted(state: State) -> None:
    in_flight = reserve(state, "t1", 5)
    _register(state, 120)  # marks the book stale, not yet rebuilt
    state.record(in_flight, expires_at=NOW + 300, result={})
    assert spent(state, 3600) == (1, 5)
    assert spent(state, 3600) == (1, 5)


def test_an_agent_cannot_flood_the_approval_requests(state: State) -> None:
    """Attack: an agent asks for approval of endless variations (1 wei more each time) to fill
    the gateway's file and bury the real request under thousands. Live requests per client are
    capped; expired ones make room again."""
    for n in range(3):
        assert state.park_approval(
            policy_client=CLIENT,
            intent_hash=f"0x{n:02x}",
            intent={},
            spend={},
            reasons=[],
            now=NOW,
            ttl=60,
            max_pending=3,
        )
    flood = dict(policy_client=CLIENT, intent={}, spend={}, reasons=[], ttl=60, max_pending=3)
    assert state.park_approval(intent_hash="0xff", now=NOW, **flood) is None  # type: ignore[arg-type]
    assert state.park_approval(intent_hash="0x01", now=NOW, **flood) is not None  # already live
    assert state.park_approval(intent_hash="0xff", now=NOW + 60, **flood) is not None
    newest = state.approval_requests(NOW + 60, policy_client=CLIENT)[0]
    assert newest.intent_hash == "0xff"
    assert state.approval_requests(NOW, policy_client="0x" + "dd" * 20) == []


def test_a_recorded_allow_reads_back_equal_and_compact(state: State, rpc: Any, client: str) -> None:
    """The real gateway's answer to an allow is stored as the attestation, the intent and the
    totals (not the ~6 KiB document) and read back as the same dict, on either backend."""
    import json

    from .conftest import decision, fresh_agent, transfer

    result = rpc.create(client, transfer(fresh_agent()))
    assert decision(result) == "allow"
    held = reserve(state, result["task_id"], 1)
    state.record(held, expires_at=result["expiration"], result=result)
    assert state.stored_result(result["task_id"]) == result
    text, part = state._stored(result["task_id"])  # type: ignore[misc]
    whole = json.dumps(result, separators=(",", ":"))
    assert part is not None and len(text) < len(whole) / 2
    params_hex = result["task_response"]["policy_config"]["policyParams"]
    assert params_hex not in text  # shared by every task of the client: stored once
    again = reserve(state, "t2", 1)
    second = {**result, "task_id": "t2"}  # a result not about its own task: stored whole
    state.record(again, expires_at=result["expiration"], result=second)
    assert state.stored_result("t2") == second


def test_a_result_of_another_shape_is_stored_whole(state: State) -> None:
    odd = {"task_id": "t1", "status": "success", "attestation": {"decision": "allow"}, "x": [1]}
    state.record(reserve(state, "t1", 1), expires_at=NOW + 60, result=odd)
    assert state.stored_result("t1") == odd
