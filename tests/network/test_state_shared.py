"""The gateway's state shared by replicas (PostgreSQL): races between handles that each hold
their own connection, as separate gateway processes do; outages; stale in-flight rows; URLs.

A real PostgreSQL (``tests/ledger/servers.py``); each test works in a schema of its own."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from agentguard._exceptions import (
    ConfigurationError,
    GatewayStateError,
    StateUnavailable,
    TaskAlreadyRecorded,
)
from agentguard._redact import MASK, redact
from agentguard.network.gateway._sweep import Sweeper
from agentguard.network.state import State, open_state
from agentguard.network.state._postgres import STALE_RESERVATION
from tests.ledger.conftest import base_url
from tests.ledger.servers import ServerUnavailable, start_postgres

from .test_state import AGENT, ASSET, CLIENT, NOW, TRUSTED, allow, approve, park, reserve, spent

CAP = 50


@pytest.fixture
def open_shared(request: pytest.FixtureRequest) -> Iterator[Callable[[], State]]:
    """Opens another handle (a replica) on one fresh schema; all are closed afterwards."""
    url = f"{base_url('postgres', request)}?namespace=r{uuid.uuid4().hex[:16]}"
    opened: list[State] = []

    def make() -> State:
        opened.append(open_state(url))
        return opened[-1]

    yield make
    for state in opened:
        state.close()


def _race(replicas: list[State], attempts: int, decide: Callable[[State, int], bool]) -> int:
    """``attempts`` calls of ``decide`` spread over threads, two per replica; how many said yes."""
    wins: list[bool] = []
    lock = threading.Lock()
    work = iter(range(attempts))

    def worker(state: State) -> None:
        while True:
            with lock:
                n = next(work, None)
            if n is None:
                return
            won = decide(state, n)
            with lock:
                wins.append(won)

    threads = [threading.Thread(target=worker, args=(s,)) for s in replicas for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == attempts
    return sum(wins)


def _gateway_step(state: State, n: int) -> bool:
    """What the gateway does for one task: reserve, let the policy judge the totals it was
    shown against the cap, then record the allow or cancel."""
    held = reserve(state, f"t{n}", 1)
    if held.history[3600].spent.get(ASSET, 0) + 1 > CAP:
        state.cancel(held)
        return False
    state.record(held, expires_at=NOW + 300, result={"task_id": f"t{n}"})
    return True


def test_replicas_racing_one_cap_allow_exactly_the_cap(open_shared: Callable[[], State]) -> None:
    """Attack: flood the same agent's cap through several replicas at once. Without the
    advisory lock (checked by removing it) replicas read the totals before the others'
    in-flight rows existed and more than the cap got through. Exactly ``CAP`` units are
    allowed, and counted; then rounds of 8 requests released at once, each round against a
    fresh agent with room for 2, allow exactly 2 per round."""
    replicas = [open_shared() for _ in range(4)]
    assert _race(replicas, 3 * CAP, _gateway_step) == CAP
    for state in replicas:
        totals = state.totals(policy_client=CLIENT, agent=AGENT, windows=(60,), now=NOW)
        assert (totals[3600].count, totals[3600].spent) == (CAP, {ASSET: CAP})
    rounds, room = 30, 2
    start = threading.Barrier(8)
    allowed = [0] * rounds

    def burst(state: State, worker: int) -> None:
        for r in range(rounds):
            start.wait()
            held = state.reserve(
                policy_client=CLIENT,
                agent=f"0x{r + 1:040x}",
                windows=(),
                task_id=f"r{r}w{worker}",
                asset=ASSET,
                amount=1,
                now=NOW,
            )
            if held.history[3600].spent.get(ASSET, 0) + 1 > room:
                state.cancel(held)
            else:
                state.record(held, expires_at=NOW + 300, result={})
                with lock:
                    allowed[r] += 1

    lock = threading.Lock()
    threads = [threading.Thread(target=burst, args=(replicas[i % 4], i)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert allowed == [room] * rounds


def test_an_approval_is_claimed_once_across_replicas(open_shared: Callable[[], State]) -> None:
    """Attack: fire the approved intent at every replica at once to use one approval twice."""
    replicas = [open_shared() for _ in range(4)]
    park(replicas[0], "0xab")
    assert approve(replicas[1], "0xab")
    claims = _race(
        replicas, 40, lambda s, n: s.claim_approval(CLIENT, "0xab", f"t{n}", NOW + 1) is not None
    )
    assert claims == 1

    def park_one(state: State, n: int) -> bool:
        parked = state.park_approval(
            policy_client=CLIENT,
            intent_hash=f"0x{n % 20:02x}",  # each intent twice, on different replicas
            intent={},
            spend={},
            reasons=[],
            now=NOW,
            ttl=60,
            max_pending=21,
        )
        return parked is not None

    assert _race(replicas, 40, park_one) == 40  # the same intent again reads the live one
    assert len(replicas[2].approval_requests(NOW, policy_client=CLIENT)) == 21


def test_the_same_task_on_two_replicas_is_recorded_once(open_shared: Callable[[], State]) -> None:
    """Two requests for one task (same client, intent and id through two API keys) on two
    replicas: one row counts it, the later one gets the first one's answer."""
    first, second = open_shared(), open_shared()
    mine = reserve(first, "t1", 5)
    theirs = reserve(second, "t1", 5)
    assert theirs.history[3600].spent == {ASSET: 5}  # it already counts, once
    first.record(mine, expires_at=NOW + 300, result={"task_id": "t1", "who": "first"})
    with pytest.raises(TaskAlreadyRecorded):
        second.record(theirs, expires_at=NOW + 300, result={"task_id": "t1", "who": "second"})
    second.cancel(theirs)  # not its row: changes nothing
    assert second.stored_result("t1") == {"task_id": "t1", "who": "first"}
    totals = second.totals(policy_client=CLIENT, agent=AGENT, windows=(), now=NOW)
    assert (totals[3600].count, totals[3600].spent) == (1, {ASSET: 5})


def test_a_stale_reservation_stops_counting_and_can_never_be_recorded(
    open_shared: Callable[[], State],
) -> None:
    """A replica that froze mid-task (or died) must not hold the cap for ever, nor record an
    allow after its reservation was given back: that allow would pass the cap."""
    frozen, other = open_shared(), open_shared()
    held = reserve(frozen, "t1", 7)
    other.sweep_expired(NOW + STALE_RESERVATION - 1, None, TRUSTED)
    assert reserve(other, "t2", 1, now=NOW + 1).history[3600].spent == {ASSET: 7}
    other.sweep_expired(NOW + STALE_RESERVATION, None, TRUSTED)
    late = other.totals(policy_client=CLIENT, agent=AGENT, windows=(), now=NOW + 2)
    assert late[3600].spent == {ASSET: 1}  # t2, itself still in flight
    with pytest.raises(GatewayStateError, match="not recorded"):
        frozen.record(held, expires_at=NOW + 300, result={"task_id": "t1"})
    assert other.task("t1") is None and other.stored_result("t1") is None


def test_a_client_registered_on_one_replica_is_found_on_another(
    open_shared: Callable[[], State],
) -> None:
    from .test_state import _register

    first, second = open_shared(), open_shared()
    assert second.policy_client(CLIENT) is None
    _register(first, 120)
    found = second.policy_client(CLIENT.upper().replace("0X", "0x"))
    assert (
        found is not None and found.registration.params["rate_limits"][0]["window_seconds"] == 120
    )


def test_an_outage_fails_closed_and_recovers_without_repair() -> None:
    """The database goes away mid-life: every change is a ``StateUnavailable`` (the gateway
    answers an error, never an allow), a denial's cancel still returns, and once the server
    is back the same handle works on, with totals that never lost what was counted."""
    try:
        server = start_postgres()
    except ServerUnavailable as exc:
        pytest.skip(f"no PostgreSQL on this machine: {exc}")
    try:
        state = open_state(server.url)
        held = reserve(state, "t1", 5)
        state.record(held, expires_at=NOW + 300, result={"task_id": "t1"})
        in_flight = reserve(state, "t2", 3)
        server.stop()
        with pytest.raises(StateUnavailable, match="gateway state"):
            reserve(state, "t3", 1)
        with pytest.raises(StateUnavailable):
            state.record(in_flight, expires_at=NOW + 300, result={"task_id": "t2"})
        with pytest.raises(StateUnavailable):
            state.stored_result("t1")
        with pytest.raises(StateUnavailable):
            state.claim_approval(CLIENT, "0xab", "t4", NOW)
        state.cancel(in_flight)  # swallowed: t2 stays counted until swept as stale
        server.start()
        again = reserve(state, "t3", 1)
        assert again.history[3600].spent == {ASSET: 8}  # t1 recorded, t2 never settled
        assert state.stored_result("t1") == {"task_id": "t1"}
        state.close()
    finally:
        server.close()


def test_state_urls_are_checked_and_never_quoted(request: pytest.FixtureRequest) -> None:
    for bad in ("redis://127.0.0.1:6379/0", "mysql://u@h/db", "postgresql:db", ""):
        with pytest.raises(ConfigurationError):
            open_state(bad)
    secret = "pw-" + uuid.uuid4().hex
    with pytest.raises(StateUnavailable) as caught:  # nothing listens on port 1
        open_state(f"postgresql://agent:{secret}@127.0.0.1:1/db?namespace=x")
    assert secret not in str(caught.value) and secret not in repr(caught.value)
    assert redact(f"said {secret}") == f"said {MASK}"  # masked in any log line too
    assert redact("agentguard_registerPolicyClient") == "agentguard_registerPolicyClient"
    with pytest.raises(ConfigurationError):
        open_state(f"postgresql://agent:{secret}@127.0.0.1:1/db?namespace=Bad-Name")


def test_two_gateways_sweeping_at_once_give_each_released_task_back_once(
    open_shared: Callable[[], State],
) -> None:
    """Two replicas' sweeps interleave at every usage check (answers come off the loop, in a
    seeded random order) while hosts commit some of the tasks meanwhile: each task is given
    back once at most, a committed one never, and the totals end at exactly what was used."""
    first, second = open_shared(), open_shared()
    ids = [f"t{i}" for i in range(30)]
    for task_id in ids:
        allow(first, task_id, 1, expires_in=10)
        assert first.release(task_id, NOW, trusted=False) == "releasing"
    rng = random.Random(12)
    delays = {task_id: rng.random() / 200 for task_id in ids}
    used = set(rng.sample(ids, 10))

    def checks(task):  # type: ignore[no-untyped-def]
        def check() -> bool:
            time.sleep(delays[task.task_id])
            if task.task_id in used:  # the host's commit lands while the check runs
                second.commit(task.task_id, "used")
            return False  # the chain says unused: given back unless committed meanwhile

        return check

    sweepers = [Sweeper(), Sweeper()]

    async def both() -> list[int]:
        return list(
            await asyncio.gather(
                sweepers[0].sweep(first, NOW + 11, checks, TRUSTED),
                sweepers[1].sweep(second, NOW + 11, checks, TRUSTED),
            )
        )

    try:
        assert sum(asyncio.run(both())) == 20
    finally:
        for sweeper in sweepers:
            sweeper.close()
    statuses = {task_id: first.task(task_id).status for task_id in ids}  # type: ignore[union-attr]
    assert {t for t, s in statuses.items() if s == "committed"} == used
    assert {t for t, s in statuses.items() if s == "released"} == set(ids) - used
    assert spent(first, 60, NOW + 11) == spent(second, 60, NOW + 11) == (10, 10)
