"""The gateway's bookkeeping (commit/release) runs off the payment's critical path, and an
attacker, a crash or a broken gateway can make the network's view of the budget only
stricter, never looser.

Real reference network (gateway + 3 operators), a fresh policy client per test with a window
cap of 1.5 payments: while a payment counts at the gateway, a second one is refused there.
The local ledger is separate (a fresh one per test), so a refusal is the gateway's word.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from agentguard import Guard, Signer
from agentguard._exceptions import (
    GatewayProtocolError,
    GatewayRPCError,
    GatewayUnavailable,
    PolicyDenied,
)
from agentguard._gateway import NewtonGateway
from agentguard.ledger import Ledger
from agentguard.network.launcher import ReferenceNetwork
from agentguard.pipeline import _bookkeeping
from agentguard.pipeline._bookkeeping import bookkeeper
from agentguard.x402 import X402Auth

from .conftest import AGENT_KEY, ALLOWANCES, PARAMS, connect
from .fakes import TOKEN, FakeServer

PRICE = 10_000
URL = "http://shop.test/paid"


def capped_client(network: ReferenceNetwork, cap: int = 15_000, expire_after: int = 300) -> str:
    """A fresh policy client whose window cap lets ``cap`` of TOKEN through per hour."""
    client = "0x" + uuid.uuid4().hex[:40].rjust(40, "0")
    caps = [{"asset": TOKEN, "window_seconds": 3600, "max_amount": str(cap)}]
    network.register_policy_client(
        client, "agent_spend", {**PARAMS, "window_caps": caps}, expire_after=expire_after
    )
    return client


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_bookkeeping.Bookkeeper, "backoff", 0.01)
    monkeypatch.setattr(_bookkeeping.AsyncBookkeeper, "backoff", 0.01)
    # One call per commit, sent at once, as the spies here count and time them (batches and
    # their linger: test_batched_commits).
    for book in (_bookkeeping.Bookkeeper, _bookkeeping.AsyncBookkeeper):
        monkeypatch.setattr(book, "batch", 1)
        monkeypatch.setattr(book, "linger", 0.0)


@pytest.fixture
def capped(network: ReferenceNetwork) -> Iterator[Guard]:
    with connect(network, capped_client(network)) as guard:
        yield guard


class Spy:
    """Wraps the guard's ``commit``: counts calls, optionally fails or blocks first."""

    def __init__(self, guard: Guard, behave: Callable[[int], str] = lambda n: "pass") -> None:
        self.real = guard.authorizer.commit
        self.behave = behave
        self.calls: list[str] = []
        self.delivered: list[str] = []
        self.gate = threading.Event()
        self.lock = threading.Lock()
        guard.authorizer.commit = self  # type: ignore[method-assign]

    def __call__(self, task_id: str, outcome: str) -> None:
        with self.lock:
            self.calls.append(task_id)
            n = len(self.calls)
        action = self.behave(n)
        if action == "block":
            self.gate.wait(60)
            raise GatewayUnavailable("never sent (test)")
        if action == "down":
            raise GatewayUnavailable("gateway down (test)")
        self.real(task_id, outcome)
        self.delivered.append(task_id)
        if action == "lose-answer":
            raise GatewayUnavailable("answer lost (test)")


def pay(guard: Guard, ledger: Ledger) -> httpx.Response:
    auth = X402Auth(
        signer=Signer.from_key(AGENT_KEY), guard=guard, ledger=ledger, allowances=ALLOWANCES
    )
    with auth.client(transport=FakeServer().transport()) as http:
        return http.get(URL)


PAYER = Signer.from_key(AGENT_KEY).address


def committed(ledger: Ledger) -> list[int]:
    """What the local ledger counts for the payer, provided none of it is still unsettled."""
    assert ledger.recover(lambda r: "unknown").unknown == ()
    return sorted(ledger.usage(PAYER, 3600).spent.values())


def test_the_paid_answer_does_not_wait_for_the_gateway_commit(capped: Guard) -> None:
    """The commit is blocked until the test lets it go: the payment still returns, with the
    local ledger already committed. Before, the commit ran inline and the payment waited on
    it (here: a minute, then the commit had already happened before the answer)."""
    spy = Spy(capped, lambda n: "block" if n == 1 else "pass")
    ledger = Ledger()
    assert pay(capped, ledger).status_code == 200
    assert committed(ledger) == [PRICE]  # synchronous and exact
    assert spy.delivered == [] and bookkeeper(capped).pending == 1
    spy.gate.set()
    assert capped.flush() == 0
    assert spy.delivered == spy.calls[1:] and len(spy.delivered) == 1


def test_a_gateway_down_during_the_commit_is_retried_then_left_counted(capped: Guard) -> None:
    """Every round fails: the bookkeeper gives up after its rounds, the local ledger is exact,
    and the gateway still counts the payment: a second one passes the local caps but the
    gateway's window cap refuses it."""
    spy = Spy(capped, lambda n: "down")
    ledger = Ledger()
    assert pay(capped, ledger).status_code == 200
    assert capped.flush() == 0
    assert len(spy.calls) == _bookkeeping.Bookkeeper.rounds and spy.delivered == []
    with pytest.raises(PolicyDenied):
        pay(capped, ledger)
    assert committed(ledger) == [PRICE]


def test_a_gateway_back_up_gets_the_commit_once(capped: Guard) -> None:
    """Two failed rounds, then delivered; the gateway refuses any further commit of it."""
    spy = Spy(capped, lambda n: "down" if n <= 2 else "pass")
    ledger = Ledger()
    assert pay(capped, ledger).status_code == 200
    assert capped.flush() == 0
    assert len(spy.calls) == 3 and len(spy.delivered) == 1
    with pytest.raises(GatewayRPCError, match="committed"):
        spy.real(spy.delivered[0], "again")


def test_a_commit_whose_answer_was_lost_is_refused_on_retry_not_counted_twice(
    network: ReferenceNetwork,
) -> None:
    """The gateway took the commit but its answer was lost: the retry is refused by the
    gateway (the task is no longer ``attested``) and not retried further; the payment counts
    once: under a cap of 2.5 payments a second still passes, a third does not."""
    with connect(network, capped_client(network, cap=25_000)) as guard:
        spy = Spy(guard, lambda n: "lose-answer" if n == 1 else "pass")
        ledger = Ledger()
        assert pay(guard, ledger).status_code == 200
        assert guard.flush() == 0
        assert len(spy.calls) == 2 and spy.calls[0] == spy.calls[1]
        assert len(spy.delivered) == 1  # the second was refused by the gateway
        assert pay(guard, ledger).status_code == 200
        assert guard.flush() == 0
        with pytest.raises(PolicyDenied):
            pay(guard, ledger)


def test_the_reference_gateway_refuses_a_repeated_commit(capped: Guard) -> None:
    spy = Spy(capped)
    assert pay(capped, Ledger()).status_code == 200
    assert capped.flush() == 0
    [task] = spy.delivered
    with pytest.raises(GatewayRPCError, match="is committed"):
        spy.real(task, "a second commit")


def test_a_duplicate_submission_sends_one_commit(capped: Guard) -> None:
    from agentguard.pipeline import GatewayCommit

    spy = Spy(capped, lambda n: "down")
    book = bookkeeper(capped)
    book.rounds = 1
    book.submit(GatewayCommit("0x" + "11" * 32, "landed"))
    book.submit(GatewayCommit("0x" + "11" * 32, "landed"))
    assert book.flush() == 0
    book.submit(GatewayCommit("0x" + "11" * 32, "landed"))  # already done
    assert book.flush() == 0 and spy.calls == ["0x" + "11" * 32]


def test_two_threads_paying_at_once_each_commit_once(network: ReferenceNetwork) -> None:
    with connect(network, capped_client(network, cap=100_000)) as guard:
        spy = Spy(guard)
        ledger = Ledger()
        barrier = threading.Barrier(2)
        answers: list[int] = []

        def run() -> None:
            barrier.wait()
            answers.append(pay(guard, ledger).status_code)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers == [200, 200]
        assert guard.flush() == 0
        assert sorted(spy.delivered) == sorted(set(spy.calls)) and len(spy.delivered) == 2
        assert committed(ledger) == [2 * PRICE]


def test_close_delivers_pending_commits(network: ReferenceNetwork) -> None:
    guard = connect(network, capped_client(network))
    spy = Spy(guard, lambda n: "block" if n == 1 else "pass")
    assert pay(guard, Ledger()).status_code == 200
    closing = threading.Thread(target=guard.close)
    closing.start()
    spy.gate.set()  # the first round fails; close() waits for the retry
    closing.join()
    assert len(spy.delivered) == 1 and bookkeeper(guard).pending == 0


def test_close_is_bounded_and_leaves_a_stuck_commit_counted(
    network: ReferenceNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = capped_client(network)
    guard = connect(network, client)
    spy = Spy(guard, lambda n: "block")
    monkeypatch.setattr(_bookkeeping, "CLOSE_DRAIN_SECONDS", 0.2)
    assert pay(guard, Ledger()).status_code == 200
    guard.close()  # returns although the commit never finished
    assert bookkeeper(guard).pending == 1
    spy.gate.set()
    with connect(network, client) as again, pytest.raises(PolicyDenied):
        pay(again, Ledger())


class GarbageGateway:
    """A gateway that answers every bookkeeping call with ``body``; counts the calls."""

    def __init__(self, body: bytes) -> None:
        self.body, self.calls = body, 0

    def client(self) -> NewtonGateway:
        def handle(request: httpx.Request) -> httpx.Response:
            self.calls += 1
            return httpx.Response(200, content=self.body)

        return NewtonGateway(
            "http://gateway.test",
            policy_client="0x" + "00" * 20,
            transport=httpx.MockTransport(handle),
            bookkeeping=True,
        )


@pytest.mark.parametrize(
    ("body", "retried"),
    [
        (b"\x00\xff not json", True),
        (b'{"jsonrpc":"2.0","id":"x","result":1}', True),  # not the answer to this call
        (b'{"jsonrpc":"2.0","id":null,"error":{"code":-32602,"message":"no"}}', False),
    ],
)
def test_a_gateway_answering_the_commit_with_garbage_or_an_error(
    capped: Guard, body: bytes, retried: bool
) -> None:
    """Garbage (maybe a proxy's) is retried for the bookkeeper's rounds, an error object is
    the gateway's final word; either way nothing raises into the payment, and the real
    gateway, never told, keeps counting the payment."""
    garbage = GarbageGateway(body)
    capped.authorizer.commit = garbage.client().commit  # type: ignore[method-assign]
    ledger = Ledger()
    assert pay(capped, ledger).status_code == 200
    assert capped.flush() == 0
    assert garbage.calls == (_bookkeeping.Bookkeeper.rounds if retried else 1)
    with pytest.raises(PolicyDenied):
        pay(capped, ledger)
    assert committed(ledger) == [PRICE]


def test_garbage_is_a_protocol_error_which_the_bookkeeper_retries() -> None:
    assert _bookkeeping._transient(GatewayProtocolError("x"))
    assert _bookkeeping._transient(GatewayUnavailable("x"))
    assert not _bookkeeping._transient(GatewayRPCError("x", code=-32602))


CHILD = textwrap.dedent(
    """
    import json, sys, threading
    from agentguard import Guard, Signer
    from agentguard.ledger import Ledger
    from agentguard.x402 import X402Auth
    from tests.x402.conftest import ALLOWANCES
    from tests.x402.fakes import FakeServer

    args = json.loads(sys.argv[1])
    guard = Guard.connect(args["url"], policy_client=args["client"],
                          operators=args["operators"], api_key=args["api_key"],
                          policy_id=args["policy_id"])
    stuck = threading.Event()
    def commit(task_id, outcome):  # the commit is about to go out when the process dies
        sys.stdout.write(f"COMMITTING {task_id}\\n"); sys.stdout.flush()
        stuck.wait()
    guard.authorizer.commit = commit
    ledger = Ledger(args["ledger"])
    auth = X402Auth(signer=Signer.from_key(args["key"]), guard=guard, ledger=ledger,
                    allowances=ALLOWANCES)
    with auth.client(transport=FakeServer().transport()) as http:
        status = http.get("http://shop.test/paid").status_code
        sys.stdout.write(f"PAID {status}\\n"); sys.stdout.flush()
    stuck.wait()
    """
)


def test_a_process_killed_with_commits_pending(network: ReferenceNetwork, tmp_path: Path) -> None:
    """SIGKILL while the gateway commit is pending: the local ledger (a file) holds the exact
    committed payment, and the gateway keeps counting the reservation — also after the
    attestation expired and the expiry sweep ran (it never gives back an unreported task)."""
    client = capped_client(network, expire_after=2)
    args = {
        "url": network.url, "client": client, "operators": network.operator_addresses,
        "api_key": network.api_key, "policy_id": network.policy_clients[client],
        "ledger": str(tmp_path / "ledger.sqlite3"), "key": AGENT_KEY,
    }  # fmt: skip
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(args)],
        stdout=subprocess.PIPE,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        text=True,
    )
    assert child.stdout is not None
    lines: list[str] = []
    try:
        while not all(any(x.startswith(w) for x in lines) for w in ("PAID", "COMMITTING")):
            line = child.stdout.readline()
            assert line, f"child ended early: {lines}"
            lines.append(line)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert "PAID 200\n" in lines and any(line.startswith("COMMITTING") for line in lines)
    with Ledger(str(tmp_path / "ledger.sqlite3")) as ledger:
        assert committed(ledger) == [PRICE]
    time.sleep(4)  # past the attestation's expiry and at least two sweeps
    with connect(network, client) as guard, pytest.raises(PolicyDenied):
        pay(guard, Ledger())


async def test_async_guard_commits_in_the_background_and_aclose_drains(
    network: ReferenceNetwork,
) -> None:
    from .conftest import connect_async

    client = capped_client(network)
    guard = connect_async(network, client)
    seen: list[str] = []
    gate = asyncio.Event()
    real = guard.authorizer.commit

    async def commit(task_id: str, outcome: str) -> None:
        await gate.wait()
        await real(task_id, outcome)
        seen.append(task_id)

    guard.authorizer.commit = commit  # type: ignore[method-assign]
    auth = X402Auth(
        signer=Signer.from_key(AGENT_KEY), guard=guard, ledger=Ledger(), allowances=ALLOWANCES
    )
    async with auth.async_client(transport=FakeServer().async_transport()) as http:
        assert (await http.get(URL)).status_code == 200
    assert seen == []  # answered while the commit waits
    gate.set()
    await guard.aclose()
    assert len(seen) == 1
    with connect(network, client) as again, pytest.raises(PolicyDenied):
        pay(again, Ledger())


class _AsyncAuthorizer:
    """An async gateway client whose commit fails ``failures`` times, then succeeds."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls, self.delivered = failures, 0, 0

    async def commit(self, task_id: str, outcome: str) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise GatewayUnavailable("down (test)")
        self.delivered += 1


class _Holder:
    def __init__(self, authorizer: _AsyncAuthorizer) -> None:
        self.authorizer = authorizer


@pytest.mark.parametrize(("failures", "delivered"), [(0, 1), (2, 1), (99, 0)])
async def test_the_async_worker_retries_then_delivers_or_leaves_counted(
    failures: int, delivered: int
) -> None:
    from agentguard.pipeline import GatewayCommit
    from agentguard.pipeline._bookkeeping import async_bookkeeper

    holder = _Holder(_AsyncAuthorizer(failures))
    book = async_bookkeeper(holder)
    book.submit(GatewayCommit("0x" + "22" * 32, "landed"))
    book.submit(GatewayCommit("0x" + "22" * 32, "landed"))  # a duplicate: sent once
    assert await _bookkeeping.aflush(holder) == 0
    rounds = _bookkeeping.AsyncBookkeeper.rounds
    assert holder.authorizer.calls == min(failures + 1, rounds)
    assert holder.authorizer.delivered == delivered


def test_a_call_queued_on_a_loop_that_ended_is_sent_by_the_next_flush() -> None:
    """The asyncio worker dies with its loop (``asyncio.run`` returned while the gateway was
    down): the pending call is not lost, the next loop's flush sends it."""
    from agentguard.pipeline import GatewayCommit
    from agentguard.pipeline._bookkeeping import async_bookkeeper

    holder = _Holder(_AsyncAuthorizer(1))
    book = async_bookkeeper(holder)
    book.rounds = 2
    book.backoff = 30.0  # the retry would come long after this loop ends

    async def queue_and_leave() -> None:
        book.submit(GatewayCommit("0x" + "33" * 32, "landed"))
        await asyncio.sleep(0)  # the first round fails

    asyncio.run(queue_and_leave())
    assert book.pending == 1 and holder.authorizer.delivered == 0
    book.backoff = 0.01
    for job in book._queue.jobs:  # due now
        job.due = 0.0
    assert asyncio.run(_bookkeeping.aflush(holder, 5.0)) == 0
    assert holder.authorizer.delivered == 1


def test_a_queue_that_fails_never_turns_a_landed_payment_into_an_error(
    capped: Guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No thread to be had (or any other failure queueing the call): the payment still
    returns its answer, the local ledger is exact, and the gateway, never told, counts it."""

    def broken(self: object, call: object) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(_bookkeeping.Bookkeeper, "submit", broken)
    ledger = Ledger()
    assert pay(capped, ledger).status_code == 200
    assert committed(ledger) == [PRICE]
    with pytest.raises(PolicyDenied):
        pay(capped, ledger)


def test_a_commit_cancelled_with_its_event_loop_is_sent_by_the_next_flush() -> None:
    """``asyncio.run`` returned while the commit was on the wire (the worker task is
    cancelled): the call is queued again, not lost, and the next loop's flush sends it."""
    from agentguard.pipeline import GatewayCommit
    from agentguard.pipeline._bookkeeping import async_bookkeeper

    class Slow(_AsyncAuthorizer):
        async def commit(self, task_id: str, outcome: str) -> None:
            self.calls += 1
            if self.calls == 1:
                await asyncio.sleep(3600)  # cancelled when the loop ends
            self.delivered += 1

    holder = _Holder(Slow(0))
    book = async_bookkeeper(holder)

    async def queue_and_leave() -> None:
        book.submit(GatewayCommit("0x" + "44" * 32, "landed"))
        await asyncio.sleep(0.05)

    asyncio.run(queue_and_leave())
    assert book.pending == 1 and holder.authorizer.delivered == 0
    assert asyncio.run(_bookkeeping.aflush(holder, 5.0)) == 0
    assert holder.authorizer.calls == 2 and holder.authorizer.delivered == 1
