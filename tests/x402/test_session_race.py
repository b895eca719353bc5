"""Racing first requests to one ``upto`` endpoint on one ``X402Auth``: one signature, one hold,
one session that every request rides and ``close()`` ends.

The server holds the first unpaid requests until all of them have arrived, so every racer gets
its 402 before any session exists: the race happens on every run, not by luck.
"""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from agentguard import Guard, PaymentSessionBusy, Signer
from agentguard._exceptions import PaymentOutcomeUnknown
from agentguard.audit import AuditLog
from agentguard.ledger import Ledger
from agentguard.testing import SigningSpy
from agentguard.x402 import X402Auth, receipt

from .conftest import ALLOWANCES
from .fakes import FakeServer, upto_requirement

pytestmark = pytest.mark.integration

URL = "http://shop.test/paid"
RACERS = 4
WINDOW = 86_400


@dataclass
class RaceServer(FakeServer):
    """A ``FakeServer`` whose first ``racers`` unpaid requests are answered together;
    ``modes`` scripts ``after_payment`` per payment (then ``ok``); ``hold`` (if given) keeps
    the first paid request waiting until it is set."""

    racers: int = RACERS
    modes: list[str] = field(default_factory=list)
    hold: threading.Event | None = None
    arrived: threading.Event = field(default_factory=threading.Event)
    opener: int | None = None  # the body's "n" of the first paid request
    _unpaid: int = 0

    def __post_init__(self) -> None:
        self._gate = threading.Barrier(self.racers, timeout=60)
        self._count = threading.Lock()

    def next_round(self, session: str) -> None:
        """Forget ``self.session`` (riders get a 402 again) and gate the next racers."""
        self.session, self._unpaid, self.opener = session, 0, None
        self._gate = threading.Barrier(self.racers, timeout=60)

    def _first_round(self, request: httpx.Request) -> bool:
        """Whether this request will be answered with a 402 and is one of the racers."""
        paying = request.headers.get("PAYMENT-SIGNATURE")
        riding = self.session is not None and request.headers.get("X-Upto-Session") == self.session
        with self._count:
            if paying or riding or self._unpaid >= self.racers:
                return False
            self._unpaid += 1
            return True

    def _held(self, request: httpx.Request) -> bool:
        """Whether this is the first paid request and the test holds it."""
        if not request.headers.get("PAYMENT-SIGNATURE"):
            return False
        with self._count:
            first = self.opener is None
            if first:
                self.opener = json.loads(request.content)["n"]
        if first:
            self.arrived.set()
        return first and self.hold is not None

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("PAYMENT-SIGNATURE"):
            with self._count:
                self.after_payment = self.modes.pop(0) if self.modes else "ok"
        return super().handle(request)

    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            if self._first_round(request):
                self._gate.wait()
            if self._held(request):
                assert self.hold is not None and self.hold.wait(60)
            return self.handle(request)

        return httpx.MockTransport(handle)

    def async_transport(self) -> httpx.MockTransport:
        gate = asyncio.Barrier(self.racers)

        async def handle(request: httpx.Request) -> httpx.Response:
            await request.aread()
            if self._first_round(request):
                await asyncio.wait_for(gate.wait(), 60)
            if self._held(request):
                assert self.hold is not None and await asyncio.to_thread(self.hold.wait, 60)
            return self.handle(request)

        return httpx.MockTransport(handle)


def _auth(signer: Signer, guard: Guard, ledger: Ledger, audit: AuditLog) -> X402Auth:
    return X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES, audit=audit)


def _kinds(audit: AuditLog, kind: str) -> int:
    return sum(1 for e in audit.entries() if e.kind == kind)


def _post_in_threads(http: httpx.Client) -> list[httpx.Response | Exception]:
    def post(i: int) -> httpx.Response | Exception:
        try:
            return http.post(URL, json={"n": i})
        except Exception as exc:  # kept: the test says which racer failed how
            return exc

    with ThreadPoolExecutor(RACERS) as pool:
        return list(pool.map(post, range(RACERS)))


def _assert_one_session(
    auth: X402Auth,
    ledger: Ledger,
    audit: AuditLog,
    server: RaceServer,
    responses: list[httpx.Response],
    spy: SigningSpy,
    agent: str,
) -> None:
    assert [r.status_code for r in responses] == [200] * RACERS
    assert spy.calls == ["sign_typed_data"]  # one Permit2 signature for all racers
    assert len(server.payments) == 1 and server.seen_sessions == ["s"] * (RACERS - 1)
    held = {r.reservation_id for r in map(receipt, responses) if r is not None}
    assert len(held) == 1 and ledger.usage(agent, WINDOW).count == 1  # one hold
    assert auth.sessions == {f"POST {URL}": ("s", RACERS * 7)}
    auth.close()
    assert auth.sessions == {}
    assert _kinds(audit, "signed") == 1 and _kinds(audit, "payment_session_closed") == 1


def test_threads_racing_the_first_request_sign_once_and_ride_one_session(
    tmp_path: Path, signer: Signer, guard: Guard, ledger: Ledger, signing_spy: SigningSpy
) -> None:
    """Before: each thread got its own 402 and signed its own Permit2 maximum (4 signatures,
    4 holds); ``Sessions.open`` kept only the last session, so ``close()`` never closed the
    other three and the audit log never saw them closed."""
    audit = AuditLog(tmp_path / "audit.jsonl")
    auth = _auth(signer, guard, ledger, audit)
    server = RaceServer(accepts=[upto_requirement()], session="s", charge=7)
    with auth.client(transport=server.transport(), timeout=60) as http:
        responses = _post_in_threads(http)
    assert all(isinstance(r, httpx.Response) for r in responses), responses
    _assert_one_session(auth, ledger, audit, server, responses, signing_spy, signer.address)  # type: ignore[arg-type]


async def test_gathered_first_requests_sign_once_and_ride_one_session(
    tmp_path: Path, signer: Signer, guard: Guard, ledger: Ledger, signing_spy: SigningSpy
) -> None:
    """Before: ``asyncio.gather`` of four first requests signed four maxima, and three
    sessions were lost from ``close()`` and the audit log."""
    audit = AuditLog(tmp_path / "audit.jsonl")
    auth = _auth(signer, guard, ledger, audit)
    server = RaceServer(accepts=[upto_requirement()], session="s", charge=7)
    async with auth.async_client(transport=server.async_transport(), timeout=60) as http:
        responses = await asyncio.gather(*(http.post(URL, json={"n": i}) for i in range(RACERS)))
    _assert_one_session(auth, ledger, audit, server, list(responses), signing_spy, signer.address)


@pytest.mark.parametrize("failure", ["fail500", "drop"])
def test_a_failed_first_payment_does_not_strand_the_others(
    failure: str,
    tmp_path: Path,
    signer: Signer,
    guard: Guard,
    ledger: Ledger,
    signing_spy: SigningSpy,
) -> None:
    """The request that pays first gets a 500 or loses its answer: the waiters are released,
    the next one pays once and opens the session, the rest ride it. Every session that opened
    is closed by ``close()``."""
    audit = AuditLog(tmp_path / "audit.jsonl")
    auth = _auth(signer, guard, ledger, audit)
    server = RaceServer(accepts=[upto_requirement()], session="s", charge=7, modes=[failure])
    with auth.client(transport=server.transport(), timeout=60) as http:
        answers = _post_in_threads(http)
    failed = [a for a in answers if not (isinstance(a, httpx.Response) and a.status_code == 200)]
    assert len(failed) == 1
    if failure == "drop":
        assert isinstance(failed[0], PaymentOutcomeUnknown)
        assert len(auth.unanswered) == 1  # its bytes are kept for a re-send, still counted
    else:
        assert isinstance(failed[0], httpx.Response) and failed[0].status_code == 500
    assert signing_spy.calls == ["sign_typed_data"] * 2  # the failed one, then the opener
    assert len(server.payments) == 2 and server.seen_sessions == ["s"] * (RACERS - 2)
    assert ledger.usage(signer.address, WINDOW).count == 2  # both maxima stay counted
    auth.close()
    assert auth.sessions == {} and _kinds(audit, "payment_session_closed") == 1


def test_riders_of_a_session_the_server_ended_open_one_new_session(
    tmp_path: Path, signer: Signer, guard: Guard, ledger: Ledger, signing_spy: SigningSpy
) -> None:
    """The server ends the session while four requests ride it: each gets a 402 at once.
    Before: each of them signed a new maximum. Now one pays, the others ride its session;
    both sessions are closed in the audit log."""
    audit = AuditLog(tmp_path / "audit.jsonl")
    auth = _auth(signer, guard, ledger, audit)
    server = RaceServer(accepts=[upto_requirement()], session="s", charge=7, racers=1)
    with auth.client(transport=server.transport(), timeout=60) as http:
        assert http.post(URL, json={"n": -1}).status_code == 200
        server.racers = RACERS
        server.next_round("s2")
        answers = _post_in_threads(http)
    assert [a.status_code for a in answers if isinstance(a, httpx.Response)] == [200] * RACERS
    assert signing_spy.calls == ["sign_typed_data"] * 2 and len(server.payments) == 2
    assert server.seen_sessions == ["s2"] * (RACERS - 1)
    assert auth.sessions == {f"POST {URL}": ("s2", RACERS * 7)}
    auth.close()
    closed = [e.record["session"] for e in audit.entries() if e.kind == "payment_session_closed"]
    assert closed == ["s", "s2"]


def test_a_re_sent_lost_payment_that_opens_a_second_session_ends_the_first(
    tmp_path: Path, signer: Signer, guard: Guard, ledger: Ledger, signing_spy: SigningSpy
) -> None:
    """The lost first payment is re-sent (same bytes, no new signature) while another
    racer's session is open, and the server opens a session for it too. Before:
    ``Sessions.open`` overwrote the open session, which ``close()`` and the audit log then
    never saw closed. Now the replaced session is ended and audited."""
    audit = AuditLog(tmp_path / "audit.jsonl")
    auth = _auth(signer, guard, ledger, audit)
    server = RaceServer(accepts=[upto_requirement()], session="s", charge=7, modes=["drop"])
    with auth.client(transport=server.transport(), timeout=60) as http:
        _post_in_threads(http)
        assert len(auth.unanswered) == 1 and len(auth.sessions) == 1
        again = http.post(URL, json={"n": server.opener})  # the lost request, sent again
    assert again.status_code == 200 and not auth.unanswered
    assert server.payments[-1] == server.payments[0]  # the same bytes, not a new signature
    assert signing_spy.calls == ["sign_typed_data"] * 2
    assert _kinds(audit, "payment_session_closed") == 1  # the replaced one
    auth.close()
    assert auth.sessions == {} and _kinds(audit, "payment_session_closed") == 2


def test_a_waiter_times_out_with_a_typed_error_and_nothing_signed(
    tmp_path: Path, signer: Signer, guard: Guard, ledger: Ledger, signing_spy: SigningSpy
) -> None:
    """A waiter never outlives its pool timeout: while the first payment is held by the
    server, the other racers give up with ``PaymentSessionBusy``, having signed nothing."""
    audit = AuditLog(tmp_path / "audit.jsonl")
    auth = _auth(signer, guard, ledger, audit)
    hold = threading.Event()
    server = RaceServer(accepts=[upto_requirement()], session="s", charge=7, hold=hold)
    timeout = httpx.Timeout(60, pool=0.5)
    with (
        auth.client(transport=server.transport(), timeout=timeout) as http,
        ThreadPoolExecutor(RACERS) as pool,
    ):
        futures = [pool.submit(http.post, URL, json={"n": i}) for i in range(RACERS)]
        finished = as_completed(futures, timeout=60)
        # the waiters give up while the first payment is still held by the server
        busy = [next(finished).exception() for _ in range(RACERS - 1)]
        hold.set()
        done = [next(finished).result()]
    assert len(busy) == RACERS - 1 and all(isinstance(e, PaymentSessionBusy) for e in busy)
    assert [r.status_code for r in done] == [200]
    assert signing_spy.calls == ["sign_typed_data"] and len(server.payments) == 1
    auth.close()
    assert _kinds(audit, "payment_session_closed") == 1


async def test_a_cancelled_waiter_leaves_the_others_riding(
    tmp_path: Path, signer: Signer, guard: Guard, ledger: Ledger, signing_spy: SigningSpy
) -> None:
    """A task cancelled while it waits for the opener goes away cleanly; the opener and the
    other waiters still finish on one session. The wait never blocks the event loop: the
    server, the opener and the waiters all run on it."""
    audit = AuditLog(tmp_path / "audit.jsonl")
    auth = _auth(signer, guard, ledger, audit)
    hold = threading.Event()
    server = RaceServer(accepts=[upto_requirement()], session="s", charge=7, hold=hold)
    async with auth.async_client(transport=server.async_transport(), timeout=60) as http:
        tasks = [asyncio.create_task(http.post(URL, json={"n": i})) for i in range(RACERS)]
        assert await asyncio.to_thread(server.arrived.wait, 60)  # the opener is paying
        victim = next(i for i in range(RACERS) if i != server.opener)
        tasks[victim].cancel()
        with pytest.raises(asyncio.CancelledError):
            await tasks[victim]
        hold.set()
        answered = await asyncio.gather(*(t for i, t in enumerate(tasks) if i != victim))
    assert [r.status_code for r in answered] == [200] * (RACERS - 1)
    assert signing_spy.calls == ["sign_typed_data"] and len(server.payments) == 1
    assert server.seen_sessions == ["s"] * (RACERS - 2)
    auth.close()
    assert _kinds(audit, "payment_session_closed") == 1


async def test_a_task_waits_for_a_thread_that_opens_the_session(
    tmp_path: Path, signer: Signer, guard: Guard, ledger: Ledger, signing_spy: SigningSpy
) -> None:
    """One ``X402Auth`` shared by a blocking client in a thread and an async client: the task
    waits on its event loop for the thread's opening, is woken from that thread, and rides."""
    audit = AuditLog(tmp_path / "audit.jsonl")
    auth = _auth(signer, guard, ledger, audit)
    hold = threading.Event()
    server = RaceServer(accepts=[upto_requirement()], session="s", charge=7, racers=1, hold=hold)
    with (
        auth.client(transport=server.transport(), timeout=60) as http,
        ThreadPoolExecutor(1) as pool,
    ):
        opener = pool.submit(http.post, URL, json={"n": 0})
        assert await asyncio.to_thread(server.arrived.wait, 60)  # the thread is paying
        async with auth.async_client(transport=server.async_transport(), timeout=60) as ahttp:
            task = asyncio.create_task(ahttp.post(URL, json={"n": 1}))
            (opening,) = auth._sessions._opening.values()
            while not opening._tasks and not task.done():  # wait until the task waits
                await asyncio.sleep(0)
            assert not task.done()
            hold.set()
            ridden = await task
        assert opener.result(60).status_code == 200 and ridden.status_code == 200
    assert signing_spy.calls == ["sign_typed_data"] and server.seen_sessions == ["s"]
    auth.close()
    assert _kinds(audit, "payment_session_closed") == 1
