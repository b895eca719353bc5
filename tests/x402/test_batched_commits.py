"""Deferred gateway commits sent many per round trip (``agentguard_commitTasks``).

Each item is judged alone: an item the answer does not account for (missing, surplus,
misplaced, duplicated, unreadable) is never taken as landed, and is retried like a lost call;
a refused item is reported and not retried; a whole call that failed retries every item."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from agentguard import Signer
from agentguard._exceptions import (
    GatewayProtocolError,
    GatewayRPCError,
    GatewayUnavailable,
)
from agentguard._gateway import _parse_commits
from agentguard.ledger import Ledger
from agentguard.network.launcher import ReferenceNetwork
from agentguard.pipeline import _bookkeeping
from agentguard.pipeline._bookkeeping import AsyncBookkeeper, Bookkeeper
from agentguard.pipeline._steps import GatewayCommit, GatewayRelease
from agentguard.x402 import X402Auth

from .conftest import AGENT_KEY, ALLOWANCES, connect, connect_async
from .fakes import FakeServer

TASKS = [f"0x{i:064x}" for i in range(1, 200)]


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_bookkeeping.Bookkeeper, "backoff", 0.001)
    monkeypatch.setattr(_bookkeeping.AsyncBookkeeper, "backoff", 0.001)


# -- the answer, item by item ------------------------------------------------------------------


def _right(task: str) -> dict[str, Any]:
    return {"task_id": task, "status": "committed"}


def _landed(entry: Any, task: str) -> bool:
    """The one shape an entry must have for its item to count as landed."""
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("task_id"), str)
        and entry["task_id"].lower() == task.lower()
        and "error" not in entry
        and entry.get("status") == "committed"
    )


def _hostile_entry(rng: random.Random, task: str, tasks: list[str]) -> Any:
    return rng.choice(
        [
            _right(task),
            _right(task.upper().replace("0X", "0x")),
            _right(rng.choice(tasks)),  # another item's (misplaced or duplicated)
            {"task_id": task, "status": "attested"},
            {"task_id": task},
            {"task_id": task, "status": "committed", "error": {"code": -32602, "message": "no"}},
            {"task_id": task, "error": {"code": -32602, "message": "task is committed"}},
            {"task_id": task, "error": {"code": "x"}},
            {"status": "committed"},
            None,
            "committed",
            [task, "committed"],
        ]
    )


@pytest.mark.parametrize("seed", range(40))
def test_only_an_entry_at_its_place_naming_its_task_as_committed_counts(seed: int) -> None:
    rng = random.Random(seed)
    commits = [(task, "landed") for task in rng.sample(TASKS, rng.randint(1, 12))]
    tasks = [task for task, _ in commits]
    entries = [_hostile_entry(rng, task, tasks) for task in tasks]
    answers = _parse_commits({"results": entries}, commits)
    assert len(answers) == len(commits)
    for (task, _), entry, answer in zip(commits, entries, answers, strict=True):
        if _landed(entry, task):
            assert answer is None
        elif isinstance(entry, dict) and entry.get("task_id") == task and "error" in entry:
            code = entry["error"]["code"]
            wanted = GatewayRPCError if type(code) is int else GatewayProtocolError
            assert isinstance(answer, wanted)
        else:
            assert isinstance(answer, GatewayProtocolError)


@pytest.mark.parametrize(
    "result",
    [
        None,
        [],
        {"results": None},
        {"results": {"0x01": "committed"}},
        "committed",
        {"results": []},
    ],
)
def test_an_answer_without_a_results_list_lands_nothing(result: Any) -> None:
    commits = [(task, "landed") for task in TASKS[:3]]
    assert all(isinstance(a, GatewayProtocolError) for a in _parse_commits(result, commits))


@pytest.mark.parametrize("change", ["missing", "surplus", "duplicated"])
def test_a_missing_surplus_or_duplicated_entry_lands_nothing(change: str) -> None:
    commits = [(task, "landed") for task in TASKS[:4]]
    entries = [_right(task) for task, _ in commits]
    if change == "missing":
        del entries[2]
    elif change == "surplus":
        entries.append(_right(TASKS[9]))
    else:
        entries[3] = entries[2]
    answers = _parse_commits({"results": entries}, commits)
    if change == "duplicated":  # the positions still line up: only the duplicate is refused
        assert answers[:3] == [None, None, None]
        assert isinstance(answers[3], GatewayProtocolError)
    else:
        assert all(isinstance(a, GatewayProtocolError) for a in answers)


# -- the queue ---------------------------------------------------------------------------------


class Authorizer:
    """Records what reaches the gateway; ``answer(batch)`` says what ``commit_many`` returns."""

    def __init__(self, answer: Any = None) -> None:
        self.batches: list[list[str]] = []
        self.singles: list[str] = []
        self.answer = answer or (lambda batch: [None] * len(batch))

    def commit_many(self, commits: list[tuple[str, str]]) -> Any:
        self.batches.append([task for task, _ in commits])
        return self.answer(commits)

    def commit(self, task_id: str, outcome: str) -> None:
        self.singles.append(task_id)

    def release(self, task_id: str) -> None:
        self.singles.append(task_id)


class AsyncAuthorizer(Authorizer):
    async def commit_many(self, commits: list[tuple[str, str]]) -> Any:  # type: ignore[override]
        return super().commit_many(commits)

    async def commit(self, task_id: str, outcome: str) -> None:  # type: ignore[override]
        super().commit(task_id, outcome)

    async def release(self, task_id: str) -> None:  # type: ignore[override]
        super().release(task_id)


class Holder:
    def __init__(self, authorizer: Any) -> None:
        self.authorizer = authorizer


def test_a_stream_of_commits_goes_in_one_round_trip_and_a_flush_does_not_linger() -> None:
    holder = Holder(Authorizer())
    book = Bookkeeper(holder)
    book.linger = 60.0  # nothing would go on its own before the flush
    for task in TASKS[:10]:
        book.submit(GatewayCommit(task, "landed"))
    assert book.flush(10) == 0
    assert holder.authorizer.batches == [TASKS[:10]] and holder.authorizer.singles == []


def test_a_lone_commit_goes_after_its_linger_without_a_flush() -> None:
    holder = Holder(Authorizer())
    book = Bookkeeper(holder)
    book.submit(GatewayCommit(TASKS[0], "landed"))
    for _ in range(500):
        if holder.authorizer.singles:
            break
        time.sleep(0.01)
    assert holder.authorizer.singles == [TASKS[0]] and book.pending == 0


def test_batches_hold_at_most_the_limit_and_releases_go_alone() -> None:
    holder = Holder(Authorizer())
    book = Bookkeeper(holder)
    book.linger, book.batch = 60.0, 4
    book.submit(GatewayRelease(TASKS[50]))
    for task in TASKS[:10]:
        book.submit(GatewayCommit(task, "landed"))
    assert book.flush(10) == 0
    assert holder.authorizer.singles == [TASKS[50]]
    assert holder.authorizer.batches == [TASKS[0:4], TASKS[4:8], TASKS[8:10]]


def test_a_partly_refused_batch_retries_only_what_may_not_have_landed() -> None:
    refused = GatewayRPCError("task is committed", code=-32602)

    def answer(batch: list[tuple[str, str]]) -> list[Exception | None]:
        return [
            GatewayProtocolError("unreadable") if task == TASKS[2] else refused
            if task == TASKS[1] else None
            for task, _ in batch
        ]  # fmt: skip

    holder = Holder(Authorizer(answer))
    book = Bookkeeper(holder)
    book.linger = 60.0
    for task in TASKS[:4]:
        book.submit(GatewayCommit(task, "landed"))
    assert book.flush(10) == 0
    first, *rest = holder.authorizer.batches
    assert first == TASKS[:4]
    # only TASKS[2] again (alone: a lone call goes singly), and it landed then
    assert rest == [] and holder.authorizer.singles == [TASKS[2]]


@pytest.mark.parametrize(
    "answer",
    [
        lambda batch: [None] * (len(batch) - 1),  # one short
        lambda batch: [None] * (len(batch) + 1),
        lambda batch: None,
        lambda batch: ["committed"] * len(batch),
        lambda batch: (None,) * len(batch),
    ],
)
def test_an_authorizer_answering_another_shape_lands_nothing(answer: Any) -> None:
    holder = Holder(Authorizer(answer))
    book = Bookkeeper(holder)
    book.linger = 60.0
    for task in TASKS[:3]:
        book.submit(GatewayCommit(task, "landed"))
    assert book.flush(10) == 0
    assert holder.authorizer.batches[0] == TASKS[:3]
    # every item was retried: no item was believed landed after the first answer
    assert len(holder.authorizer.batches) == book.rounds


def test_a_batch_whose_call_failed_is_retried_whole() -> None:
    calls = []

    def answer(batch: list[tuple[str, str]]) -> list[Exception | None]:
        calls.append(batch)
        if len(calls) == 1:
            raise GatewayUnavailable("down (test)")
        return [None] * len(batch)

    holder = Holder(Authorizer(answer))
    book = Bookkeeper(holder)
    book.linger = 60.0
    for task in TASKS[:3]:
        book.submit(GatewayCommit(task, "landed"))
    assert book.flush(10) == 0
    assert holder.authorizer.batches == [TASKS[:3], TASKS[:3]]


def test_the_async_queue_batches_too() -> None:
    holder = Holder(AsyncAuthorizer())

    async def run() -> None:
        book = AsyncBookkeeper(holder)
        book.linger = 60.0
        for task in TASKS[:7]:
            book.submit(GatewayCommit(task, "landed"))
        assert await book.flush(10) == 0

    asyncio.run(run())
    assert holder.authorizer.batches == [TASKS[:7]]


def test_the_async_queue_sends_a_lone_commit_after_its_linger() -> None:
    holder = Holder(AsyncAuthorizer())

    async def run() -> None:
        book = AsyncBookkeeper(holder)
        book.submit(GatewayCommit(TASKS[0], "landed"))
        for _ in range(500):
            if holder.authorizer.singles:
                return
            await asyncio.sleep(0.01)

    asyncio.run(run())
    assert holder.authorizer.singles == [TASKS[0]]


# -- against the reference gateway -------------------------------------------------------------


class Recorder:
    """Wraps a gateway client's ``commit_many``: which tasks went, how many per call."""

    def __init__(self, authorizer: Any) -> None:
        self.real = authorizer.commit_many
        self.batches: list[list[str]] = []
        authorizer.commit_many = self

    def __call__(self, commits: list[tuple[str, str]]) -> Any:
        self.batches.append([task for task, _ in commits])
        return self.real(commits)


def test_payments_commit_in_one_batch_and_a_second_commit_of_each_is_refused(
    network: ReferenceNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_bookkeeping.Bookkeeper, "linger", 60.0)
    with connect(network) as guard:
        recorder = Recorder(guard.authorizer)
        auth = X402Auth(
            signer=Signer.from_key(AGENT_KEY), guard=guard, ledger=Ledger(), allowances=ALLOWANCES
        )
        with auth.client(transport=FakeServer().transport()) as http:
            for i in range(5):
                assert http.get(f"http://shop.test/paid?{i}").status_code == 200
        assert guard.flush() == 0
        assert len(recorder.batches) == 1 and len(recorder.batches[0]) == 5
        again = guard.authorizer.commit_many([(t, "again") for t in recorder.batches[0]])
        assert all(isinstance(a, GatewayRPCError) and "is committed" in str(a) for a in again)
        mixed = guard.authorizer.commit_many([("0x" + "ee" * 32, "never attested")])
        assert isinstance(mixed[0], GatewayRPCError) and "no attested task" in str(mixed[0])


async def test_async_payments_commit_in_batches(
    network: ReferenceNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_bookkeeping.AsyncBookkeeper, "linger", 60.0)
    async with connect_async(network) as guard:
        auth = X402Auth(
            signer=Signer.from_key(AGENT_KEY), guard=guard, ledger=Ledger(), allowances=ALLOWANCES
        )
        seen: list[list[str]] = []
        real = guard.authorizer.commit_many

        async def spy(commits: list[tuple[str, str]]) -> list[Exception | None]:
            seen.append([task for task, _ in commits])
            return await real(commits)

        guard.authorizer.commit_many = spy  # type: ignore[method-assign]
        async with auth.async_client(transport=FakeServer().async_transport()) as http:
            for i in range(4):
                assert (await http.get(f"http://shop.test/paid?{i}")).status_code == 200
        assert await guard.flush() == 0
        assert [len(batch) for batch in seen] == [4]
        again = await real([(t, "again") for t in seen[0]])
        assert all(isinstance(a, GatewayRPCError) and "is committed" in str(a) for a in again)


def test_a_gateway_without_the_batch_method_gets_the_commits_one_by_one(
    network: ReferenceNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    with connect(network) as guard:
        gateway = guard.authorizer
        real, methods = gateway._rpc, []

        def older(method: str, params: Any) -> Any:  # a gateway before agentguard_commitTasks
            methods.append(method)
            if method == "agentguard_commitTasks":
                raise GatewayRPCError("unknown method", code=-32601)
            return real(method, params)

        monkeypatch.setattr(gateway, "_rpc", older)
        tasks = [("0x" + "ee" * 32, "x"), ("0x" + "ef" * 32, "y")]
        for _ in range(2):
            answers = gateway.commit_many(tasks)
            assert all(isinstance(a, GatewayRPCError) and "no attested" in str(a) for a in answers)
        assert methods == ["agentguard_commitTasks"] + ["agentguard_commitTask"] * 4


def test_a_flush_sends_lingering_commits_past_a_retry_that_is_not_due() -> None:
    class Flaky(Authorizer):
        def commit(self, task_id: str, outcome: str) -> None:
            super().commit(task_id, outcome)
            if task_id == TASKS[0]:
                raise GatewayUnavailable("down (test)")

    holder = Holder(Flaky())
    book = Bookkeeper(holder)
    book.linger, book.backoff = 0.0, 60.0
    book.submit(GatewayCommit(TASKS[0], "landed"))
    for _ in range(500):
        if holder.authorizer.singles:
            break
        time.sleep(0.01)
    book.linger = 60.0
    book.submit(GatewayCommit(TASKS[1], "landed"))
    book.submit(GatewayCommit(TASKS[2], "landed"))
    assert book.flush(0.5) == 1  # the retry waits for its backoff, the others went
    assert holder.authorizer.singles == [TASKS[0]]
    assert holder.authorizer.batches == [TASKS[1:3]]


def test_commits_lingering_when_their_event_loop_ends_are_sent_by_the_next_flush() -> None:
    holder = Holder(AsyncAuthorizer())
    book = AsyncBookkeeper(holder)
    book.linger = 60.0

    async def queue_and_leave() -> None:
        for task in TASKS[:3]:
            book.submit(GatewayCommit(task, "landed"))
        await asyncio.sleep(0.05)

    asyncio.run(queue_and_leave())  # the worker is cancelled while they linger
    assert book.pending == 3 and holder.authorizer.batches == []

    async def drain() -> int:
        return await book.flush(5.0)

    assert asyncio.run(drain()) == 0
    assert holder.authorizer.batches == [TASKS[:3]]


def test_a_commit_replaced_on_the_instance_sees_every_commit() -> None:
    """A wrapper that logs or audits each commit (``authorizer.commit = wrapper``) must see
    each one, as before commits were batched: the queue does not go round it."""
    authorizer = Authorizer()
    seen: list[str] = []
    authorizer.commit = lambda task_id, outcome: seen.append(task_id)  # type: ignore[method-assign]
    holder = Holder(authorizer)
    book = Bookkeeper(holder)
    book.linger = 60.0
    for task in TASKS[:3]:
        book.submit(GatewayCommit(task, "landed"))
    assert book.flush(10) == 0
    assert seen == TASKS[:3] and authorizer.batches == []


def test_commit_many_sends_nothing_for_no_commits_and_refuses_more_than_a_call_takes(
    network: ReferenceNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentguard._exceptions import ConfigurationError
    from agentguard._gateway import MAX_COMMITS

    with connect(network) as guard:
        gateway = guard.authorizer
        real, methods = gateway._rpc, []

        def counted(method: str, params: Any) -> Any:
            methods.append(method)
            return real(method, params)

        monkeypatch.setattr(gateway, "_rpc", counted)
        assert gateway.commit_many([]) == []
        too_many = [("0x" + f"{i:064x}", "x") for i in range(MAX_COMMITS + 1)]
        with pytest.raises(ConfigurationError, match="at most 256"):
            gateway.commit_many(too_many)
        assert methods == []  # refused before anything was sent
        answers = gateway.commit_many(too_many[:MAX_COMMITS])  # the most one call takes
        assert len(answers) == MAX_COMMITS and methods == ["agentguard_commitTasks"]
