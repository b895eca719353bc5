"""Red team, session 11: batched gateway commits (``agentguard_commitTasks``), the in-memory
ledger's slot-by-slot copies, X402Auth's owned intent and the x402 redirect fast path.

Attacks as a hostile gateway (lying answers, -32601 then lying one by one, a batch landed
whose answer is lost), a hostile key holder (another policy client's task inside a batch,
one task spelled many ways, a batch replayed, batch and single racing) and a hostile agent
host (a process ending with commits lingering, a fork during a flush, editing what was
handed over). What held is kept as a regression test; what broke was fixed with its test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from agentguard import AsyncNewtonGateway, NewtonGateway, Signer
from agentguard._exceptions import GatewayProtocolError, GatewayRPCError
from agentguard._gateway import _parse_commits
from agentguard._intent import PaymentIntent
from agentguard.ledger import Ledger, Limits
from agentguard.ledger._backend import ReserveRequest
from agentguard.ledger._memory import MemoryBackend
from agentguard.network._rpc import UNAUTHORIZED, RPCError
from agentguard.network.config import ApiKeyEntry
from agentguard.network.gateway import _settle
from agentguard.network.launcher import ReferenceNetwork
from agentguard.network.state import State, open_state
from agentguard.pipeline import GatewayCommit, _bookkeeping
from agentguard.pipeline._bookkeeping import bookkeeper
from agentguard.x402 import X402Auth
from agentguard.x402._answer import _redirected
from tests.x402.conftest import AGENT_KEY, ALLOWANCES, connect
from tests.x402.fakes import FakeServer

MINE = "0x" + "cc" * 20
THEIRS = "0x" + "dd" * 20
AGENT = "0x" + "aa" * 20
ASSET = "0x" + "11" * 20
NOW = 1_764_000_000
KEY = ApiKeyEntry(sha256="00" * 32, policy_clients=frozenset({MINE}))
T1, T2, T3 = ("0x" + c * 64 for c in "abc")


class _Guard:
    """What a bookkeeping queue needs of a guard (weakly referenced): its authorizer."""

    def __init__(self, authorizer: Any) -> None:
        self.authorizer = authorizer


# -- the gateway: each item judged as agentguard_commitTask would --------------------------------


def _state(tmp_path: Path, tasks: dict[str, str]) -> State:
    state = open_state(str(tmp_path / "gw.sqlite3"))
    for task_id, client in tasks.items():
        reservation = state.reserve(
            policy_client=client, agent=AGENT, windows=(60,), task_id=task_id, asset=ASSET,
            amount=5, now=NOW,
        )  # fmt: skip
        state.record(reservation, expires_at=NOW + 300, result={"id": task_id})
    return state


def _status(state: State, task_id: str) -> str | None:
    record = state.task(task_id)
    return record.status if record is not None else None


def test_another_clients_task_inside_a_batch_is_refused_alone_as_commit_would(
    tmp_path: Path,
) -> None:
    state = _state(tmp_path, {T1: MINE, T2: THEIRS, T3: MINE})
    with pytest.raises(RPCError) as single:
        _settle.commit(state, KEY, {"task_id": T2, "outcome": "x"})
    results = _settle.commit_many(
        state, KEY, {"commits": [{"task_id": t, "outcome": "x"} for t in (T1, T2, T3)]}
    )["results"]
    assert results[0] == {"task_id": T1, "status": "committed"}
    assert results[1] == {"task_id": T2, "error": single.value.to_json()}
    assert results[1]["error"]["code"] == UNAUTHORIZED
    assert results[2] == {"task_id": T3, "status": "committed"}
    assert [_status(state, t) for t in (T1, T2, T3)] == ["committed", "attested", "committed"]


def test_one_task_spelled_every_way_in_one_batch_lands_once(tmp_path: Path) -> None:
    state = _state(tmp_path, {T1: MINE})
    spellings = [T1.upper().replace("0X", "0x"), T1, "0x" + "Aa" * 32, "0X" + "a" * 64]
    results = _settle.commit_many(
        state, KEY, {"commits": [{"task_id": s, "outcome": s} for s in spellings]}
    )["results"]
    assert results[0] == {"task_id": T1, "status": "committed"}
    assert all("is committed" in r["error"]["message"] for r in results[1:3])
    assert results[3]["task_id"] is None and "64 hex digits" in results[3]["error"]["message"]
    assert _status(state, T1) == "committed"


def test_a_replayed_batch_and_single_after_it_count_nothing_twice(tmp_path: Path) -> None:
    """A batch landed, its answer lost: the retry (batch or single) is refused item by item,
    and the gateway's totals are what one commit left."""
    state = _state(tmp_path, {T1: MINE, T3: MINE})
    batch = {"commits": [{"task_id": T1, "outcome": "a"}, {"task_id": T3, "outcome": "b"}]}
    assert all("status" in r for r in _settle.commit_many(state, KEY, batch)["results"])
    totals = state.totals(policy_client=MINE, agent=AGENT, windows=(60,), now=NOW)
    again = _settle.commit_many(state, KEY, batch)["results"]
    assert all("is committed" in r["error"]["message"] for r in again)
    with pytest.raises(RPCError, match="is committed"):
        _settle.commit(state, KEY, {"task_id": T1, "outcome": "c"})
    assert state.totals(policy_client=MINE, agent=AGENT, windows=(60,), now=NOW) == totals


def test_a_single_commit_first_makes_the_batch_item_refused(tmp_path: Path) -> None:
    state = _state(tmp_path, {T1: MINE, T3: MINE})
    _settle.commit(state, KEY, {"task_id": T1, "outcome": "single"})
    results = _settle.commit_many(
        state, KEY, {"commits": [{"task_id": T1, "outcome": "b"}, {"task_id": T3}]}
    )["results"]
    assert "is committed" in results[0]["error"]["message"]
    assert results[1] == {"task_id": T3, "status": "committed"}


def test_extra_fields_in_an_item_change_nothing(tmp_path: Path) -> None:
    """An item cannot name its own policy client, status or key: only task_id and outcome
    are read, the ownership check is the key's."""
    state = _state(tmp_path, {T2: THEIRS})
    item = {"task_id": T2, "outcome": "x", "policy_client": MINE, "status": "attested",
            "api_key": "admin", "key": MINE}  # fmt: skip
    (result,) = _settle.commit_many(state, KEY, {"commits": [item]})["results"]
    assert result["error"]["code"] == UNAUTHORIZED
    assert _status(state, T2) == "attested"


@pytest.mark.parametrize(
    "commits", [[], None, {"0": {"task_id": T1}}, "x", [{"task_id": T1}] * 257]
)
def test_an_empty_oversized_or_non_list_batch_lands_nothing(tmp_path: Path, commits: Any) -> None:
    state = _state(tmp_path, {T1: MINE})
    with pytest.raises(RPCError, match="commits must be a list"):
        _settle.commit_many(state, KEY, {"commits": commits})
    assert _status(state, T1) == "attested"


# -- the client: landed only when the gateway says so, one by one as in a batch ----------------


LIES: list[Any] = [
    None,
    "committed",
    True,
    {},
    {"task_id": T1},
    {"task_id": T2, "status": "committed"},  # another task's
    {"task_id": T1, "status": "Committed"},
    {"task_id": T1, "status": "committed "},
    {"task_id": T1, "status": " committed"},
    {"task_id": T1, "status": True},
    {"task_id": T1, "status": ["committed"]},
    {"task_id": [T1], "status": "committed"},
]


@pytest.mark.parametrize("lie", LIES)
def test_a_status_variant_in_a_batch_is_never_landed(lie: Any) -> None:
    (answer,) = _parse_commits({"results": [lie]}, [(T1, "x")])
    assert isinstance(answer, GatewayProtocolError)


def test_a_full_batch_of_the_longest_hostile_outcomes_fits_the_gateways_body_limit() -> None:
    """A paid server names the settlement transaction (cut to 200 characters, each of which
    may be a 12-byte JSON escape): a whole batch of such commits must not outgrow the
    gateway's body limit, or one server's receipts would get every commit beside them
    refused whole (a whole-call refusal is final for each item)."""
    from agentguard._gateway import _Call, _commits_params
    from agentguard.network._rpc import MAX_BODY
    from agentguard.x402._wire import _short

    outcome = "settled " + _short("\U0001f600" * 10_000, 200)
    assert len(outcome) <= 1000  # the gateway's per-item limit, in characters
    commits = [(f"0x{i:064x}", outcome) for i in range(_bookkeeping.BATCH)]
    call = _Call("agentguard_commitTasks", _commits_params(commits), 5.0)
    assert len(call.body) < MAX_BODY


class _Lying:
    """A gateway that answers -32601 to the batch method, then ``lie`` to each single commit."""

    def __init__(self, lie: Any) -> None:
        self.lie, self.methods = lie, []  # type: list[str]

    def __call__(self, method: str, params: Any) -> Any:
        self.methods.append(method)
        if method == "agentguard_commitTasks":
            raise GatewayRPCError("unknown method", code=-32601)
        return self.lie


def _gateway(lie: Any) -> tuple[NewtonGateway, _Lying]:
    gateway = NewtonGateway(
        "http://127.0.0.1:9/rpc", api_key="k", policy_client=MINE, bookkeeping=True
    )
    rpc = _Lying(lie)
    gateway._rpc = rpc  # type: ignore[method-assign]
    return gateway, rpc


@pytest.mark.parametrize("lie", LIES)
def test_after_minus_32601_a_lying_single_answer_is_not_landed(lie: Any) -> None:
    gateway, rpc = _gateway(lie)
    try:
        answers = gateway.commit_many([(T1, "x"), (T3, "y")])
        assert all(isinstance(a, GatewayProtocolError) for a in answers)
        assert rpc.methods == ["agentguard_commitTasks"] + ["agentguard_commitTask"] * 2
        with pytest.raises(GatewayProtocolError):  # a lone commit goes by commit: the same
            gateway.commit(T1, "x")
    finally:
        gateway.close()


@pytest.mark.parametrize("lie", LIES[:7])
async def test_async_after_minus_32601_a_lying_single_answer_is_not_landed(lie: Any) -> None:
    gateway = AsyncNewtonGateway(
        "http://127.0.0.1:9/rpc", api_key="k", policy_client=MINE, bookkeeping=True
    )
    rpc = _Lying(lie)

    async def answer(method: str, params: Any) -> Any:
        return rpc(method, params)

    gateway._rpc = answer  # type: ignore[method-assign]
    try:
        answers = await gateway.commit_many([(T1, "x"), (T3, "y")])
        assert all(isinstance(a, GatewayProtocolError) for a in answers)
        with pytest.raises(GatewayProtocolError):
            await gateway.commit(T1, "x")
    finally:
        await gateway.aclose()


@pytest.mark.parametrize("named", [T1, T1.upper().replace("0X", "0x")])
def test_an_honest_single_answer_still_lands(named: str) -> None:
    gateway, _ = _gateway({"task_id": named, "status": "committed"})
    try:
        assert gateway.commit_many([(T1, "x")]) == [None]
        gateway.commit(T1, "x")
    finally:
        gateway.close()


def test_one_bad_item_in_a_real_batch_refuses_only_itself(
    network: ReferenceNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against the reference gateway: two paid tasks, an unknown task, a task spelled in upper
    case, a task twice. Each item's answer is its own, and the single method agrees after."""
    monkeypatch.setattr(_bookkeeping.Bookkeeper, "linger", 60.0)
    with connect(network) as guard:
        gateway = guard.authorizer
        held: list[tuple[str, str]] = []

        def hold(commits: list[tuple[str, str]]) -> list[None]:
            held.extend(commits)
            return [None] * len(commits)

        gateway.commit_many = hold  # type: ignore[method-assign]
        gateway.commit = lambda task, outcome: held.append((task, outcome))  # type: ignore[method-assign]
        auth = X402Auth(
            signer=Signer.from_key(AGENT_KEY), guard=guard, ledger=Ledger(), allowances=ALLOWANCES
        )
        with auth.client(transport=FakeServer().transport()) as http:
            for i in range(2):
                assert http.get(f"http://shop.test/paid?s11-{i}").status_code == 200
        assert guard.flush() == 0
        del gateway.commit_many, gateway.commit
        (t1, o1), (t2, o2) = held
        answers = gateway.commit_many(
            [(t1, o1), ("0x" + "ee" * 32, "x"), (t2.upper().replace("0X", "0x"), o2), (t1, "2")]
        )
        assert answers[0] is None and answers[2] is None
        assert isinstance(answers[1], GatewayRPCError) and "no attested task" in str(answers[1])
        assert isinstance(answers[3], GatewayRPCError) and "is committed" in str(answers[3])
        with pytest.raises(GatewayRPCError, match="is committed"):
            gateway.commit(t2, o2)


def test_a_batch_landed_whose_answer_was_lost_is_retried_and_counted_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real queue against the gateway's own judging: the first call lands every item and
    its answer is lost; the retry is refused item by item (final, not retried again), the
    gateway's totals are what one commit left, nothing stays pending."""
    from agentguard._exceptions import GatewayUnavailable

    monkeypatch.setattr(_bookkeeping.Bookkeeper, "backoff", 0.001)
    state = _state(tmp_path, {T1: MINE, T2: MINE, T3: MINE})
    totals = state.totals(policy_client=MINE, agent=AGENT, windows=(60,), now=NOW)
    answers: list[list[Exception | None]] = []

    class Gateway:
        def commit_many(self, commits: list[tuple[str, str]]) -> list[Exception | None]:
            params = {"commits": [{"task_id": t, "outcome": o} for t, o in commits]}
            result = _parse_commits(_settle.commit_many(state, KEY, params), commits)
            answers.append(result)
            if len(answers) == 1:
                raise GatewayUnavailable("the answer was lost")
            return result

        def commit(self, task_id: str, outcome: str) -> None:
            raise AssertionError("a batch of three goes as a batch")

    guard = _Guard(Gateway())
    book = bookkeeper(guard)
    for task in (T1, T2, T3):
        book.submit(GatewayCommit(task, "landed"))
    assert book.flush(30.0) == 0
    assert len(answers) == 2 and answers[0] == [None] * 3
    assert all(isinstance(a, GatewayRPCError) and "is committed" in str(a) for a in answers[1])
    assert [_status(state, t) for t in (T1, T2, T3)] == ["committed"] * 3
    assert state.totals(policy_client=MINE, agent=AGENT, windows=(60,), now=NOW) == totals


# -- the queue: a process ending, a fork during a flush ----------------------------------------


_EXITING = textwrap.dedent(
    """
    import sys
    from agentguard.pipeline import GatewayCommit
    from agentguard.pipeline._bookkeeping import bookkeeper

    class Authorizer:
        def commit_many(self, commits):
            with open(sys.argv[1], "a") as f:
                f.write(" ".join(t for t, _ in commits) + "\\n")
            return [None] * len(commits)
        def commit(self, task_id, outcome):
            self.commit_many([(task_id, outcome)])

    class Guard:
        authorizer = Authorizer()

    guard = Guard()
    book = bookkeeper(guard)
    book.linger = 30.0  # would linger far past the exit
    for task in ("t1", "t2", "t3"):
        book.submit(GatewayCommit(task, "landed"))
    """
)


def test_a_process_ending_without_close_sends_its_lingering_commits_once(
    tmp_path: Path,
) -> None:
    sent = tmp_path / "sent"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    subprocess.run([sys.executable, "-c", _EXITING, str(sent)], check=True, env=env, timeout=60)
    assert sent.read_text().split("\n") == ["t1 t2 t3", ""]


class _Blocking:
    def __init__(self) -> None:
        self.go, self.inside = threading.Event(), threading.Event()

    def commit(self, task_id: str, outcome: str) -> None:
        self.inside.set()
        self.go.wait(30)

    def release(self, task_id: str) -> None:
        pass


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_during_a_flush_leaves_the_childs_queue_unhurried() -> None:
    """A parent thread flushing at the fork must not leave the child's commits going one by
    one for ever (the child's queue counted that flush as its own)."""
    guard = _Guard(_Blocking())
    book = bookkeeper(guard)
    book.submit(GatewayCommit("in-flight", "landed"))
    flushing = threading.Thread(target=book.flush, args=(30.0,))
    flushing.start()
    try:
        assert guard.authorizer.inside.wait(10)
        while book._hurry == 0:  # the flush has begun
            threading.Event().wait(0.001)
        pid = os.fork()
        if pid == 0:
            os._exit(0 if bookkeeper(guard)._hurry == 0 else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        guard.authorizer.go.set()
        flushing.join(30)


# -- the memory ledger's copies ----------------------------------------------------------------


_IMMUTABLE = (str, int, float, bool, type(None))


def test_no_reservation_the_memory_ledger_holds_or_hands_out_shares_a_mutable_value() -> None:
    """Every stored record (edited in place) and every answer (``_out``): only immutable
    values, and editing an answer (``object.__setattr__``) leaves the ledger's record alone."""
    backend = MemoryBackend()
    request = ReserveRequest(
        key="k1", agent=AGENT, asset=ASSET, amount=7, recipient=THEIRS, expires_at=60.0
    )
    answers = [backend.reserve(request, Limits(), 1.0)]
    answers.append(backend.bind("k1", T1, 50.0, 2.0))
    answers.append(backend.mark_signed("k1", "0xref", 3.0))
    answers.append(backend.commit("k1", "landed", 5, 4.0))
    stored = backend._by_key["k1"].r
    for answer in answers:
        assert answer is not stored
        for field in dataclasses.fields(answer):
            assert type(getattr(answer, field.name)) in _IMMUTABLE, field.name
        object.__setattr__(answer, "amount", 0)
        object.__setattr__(answer, "state", "released")
    assert (stored.state, stored.amount) == ("committed", 5)
    assert backend.get("k1") == stored


# -- X402Auth's owned intent ---------------------------------------------------------------------


def test_the_fields_handed_to_from_fields_are_not_the_intents() -> None:
    """``owned=True`` skips the flow's copy: the intent must share nothing editable with what
    built it (the dict of fields, which X402Auth builds from the server's requirement)."""
    fields: dict[str, Any] = {
        "payer": AGENT, "scheme": "exact", "network": "eip155:8453", "asset": ASSET,
        "amount": 5, "pay_to": THEIRS, "resource": "http://shop.test/paid", "x402_version": 2,
    }  # fmt: skip
    for build in (dict, lambda f: {**f, "amount": "5"}, lambda f: {**f, "x402_version": 1.0}):
        given = build(fields)
        intent = PaymentIntent.from_fields(given)
        before = intent.intent_hash
        assert intent.__dict__ is not given
        given["amount"], given["pay_to"] = 10**30, AGENT
        assert intent.amount == 5 and intent.pay_to.lower() == THEIRS
        assert intent.intent_hash == before


# -- the redirect fast path ------------------------------------------------------------------


HEADER, VALUE = "PAYMENT-SIGNATURE", "eyJwYWlkIjp0cnVlfQ=="


def test_a_response_whose_request_was_swapped_to_another_origin_is_caught() -> None:
    """A transport or hook that hands back a response for another origin than the paid URL
    (same path, no redirect status, no ``location``): it carried the payment there."""
    paid = SimpleNamespace(
        url="http://shop.test/paid",
        sent_url=httpx.URL("http://shop.test/paid"),  # the URL object the payment went with
        payment=SimpleNamespace(header=HEADER, value=VALUE),
    )
    for elsewhere in ("http://evil.test/paid", "http://shop.test:81/paid", "https://shop.test/paid",
                      "http://shop.test/paid/", "http://shop.test/paid#x"):  # fmt: skip
        swapped = httpx.Request("GET", elsewhere, headers={HEADER: VALUE})
        response = httpx.Response(200, request=swapped)
        assert _redirected(response, paid), elsewhere
        honest = httpx.Response(200, request=httpx.Request("GET", paid.url))
        response.history = [honest]  # history tampered to look like a direct answer
        assert _redirected(response, paid), elsewhere
        final = httpx.Response(200, request=httpx.Request("GET", paid.url))
        final.history = [httpx.Response(200, request=swapped)]
        assert _redirected(final, paid), elsewhere


def test_event_loop_closed_with_a_lingering_commit_keeps_it_pending() -> None:
    """The async queue: a commit lingering when its loop ends is neither lost nor sent twice:
    it stays pending (counted) until the next flush on another loop sends it once."""
    from agentguard.pipeline._bookkeeping import AsyncBookkeeper

    sent: list[list[str]] = []

    class Authorizer:
        async def commit_many(self, commits: list[tuple[str, str]]) -> list[None]:
            sent.append([t for t, _ in commits])
            return [None] * len(commits)

        async def commit(self, task_id: str, outcome: str) -> None:
            sent.append([task_id])

    guard = _Guard(Authorizer())
    book = AsyncBookkeeper(guard)
    book.linger = 30.0

    async def pay() -> None:
        book.submit(GatewayCommit("t1", "landed"))
        book.submit(GatewayCommit("t2", "landed"))

    asyncio.run(pay())
    assert sent == [] and book.pending == 2
    assert asyncio.run(book.flush(10.0)) == 0
    assert sent == [["t1", "t2"]]
    assert asyncio.run(book.flush(1.0)) == 0 and sent == [["t1", "t2"]]
