"""Several tasks in one operator message (``agentguard_evaluateBatch``), in process.

The operator answers each task of a batch exactly as it answers that task alone (differential,
seeded random and hostile tasks); the gateway's link queue sends a lone task at once and the
tasks queued behind a call in flight together, binds every answer to its task by id, refuses
a batch answer that is reordered into another task's place, missing, duplicated or carries
another task's signature, and falls back to one task a message for an operator that does not
know the method."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard._attestation import attestation_digest, operator_address
from agentguard._eip712 import keccak
from agentguard.network._http import MAX_RESPONSE, HTTPError
from agentguard.network._rpc import (
    EVALUATE_BATCH,
    EVALUATE_BATCH_FOR_KEYS,
    EVALUATE_FOR_KEYS,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    MAX_BATCH,
    METHOD_NOT_FOUND,
    RPCError,
    encode,
    parse_request,
)
from agentguard.network.gateway._batching import LinkQueue
from agentguard.network.gateway._fanout import FanOut, vote
from agentguard.network.gateway._operators import OperatorFailure
from agentguard.network.operator import Operator, create_app
from agentguard.network.registration import Registration
from agentguard.network.registry import Registry
from agentguard.network.state import policy_material
from agentguard.policies import Policy

from ..task_ids import bind
from .conftest import UNIT, params
from .test_operator import registration, request
from .test_operator_hosts import ADDRESSES as HOST_ADDRESSES
from .test_operator_hosts import KEYS as HOST_KEYS
from .test_operator_hosts import STRANGER, hostile
from .test_operator_registration_hash import _bodies

KEY = PrivateKey(b"\x0c" * 32)
ADDRESS = operator_address(KEY)
TOKEN = "t" * 32


def alone(operator: Operator, task: dict[str, Any], now: float, for_keys: bool = False) -> Any:
    try:
        one = operator.evaluate_for if for_keys else operator.evaluate_and_sign
        return {"result": one(task, now)}
    except RPCError as exc:
        return {"error": {"code": exc.code, "message": exc.message}}


def _wanted(rng: random.Random) -> list[str]:
    """The keys a host task names: some of the host's, at times a stranger's or one twice."""
    wanted = rng.sample(HOST_ADDRESSES, rng.randint(1, 3))
    if rng.random() < 0.2:
        wanted.insert(rng.randrange(len(wanted) + 1), STRANGER)
    if rng.random() < 0.05:
        wanted.append(wanted[0])  # refused, that task alone
    return wanted


@pytest.mark.parametrize("for_keys", [False, True], ids=["operator", "host"])
def test_a_batch_answers_each_task_exactly_as_it_would_be_answered_alone(for_keys: bool) -> None:
    """An operator's batch against ``evaluate_and_sign``, a host's (``for_keys``) against
    ``evaluate_for``: task by task, key by key, the same answers."""
    rng = random.Random(20261202)
    keys = HOST_KEYS if for_keys else KEY
    single = Operator(keys, Registry(":memory:"))
    batched = Operator(keys, Registry(":memory:"))
    used: list[str] = []
    seen = {"signed": 0, "refused": 0} | ({"refused by a key": 0} if for_keys else {})
    for _ in range(30):
        tasks = []
        for _ in range(rng.randint(1, 6)):
            task = hostile(rng, request(rng.choice((1, 5, 9, 11, 40)) * UNIT), used)
            if task["task_id"] in {t["task_id"] for t in tasks}:
                continue  # one task id once per batch (refused whole: below)
            used.append(task["task_id"])
            tasks.append({**task, "operators": _wanted(rng)} if for_keys else task)
        now = time.time()
        expected = [{"task_id": t["task_id"], **alone(single, t, now, for_keys)} for t in tasks]
        got = batched.evaluate_batch({"tasks": tasks}, now, for_keys=for_keys)["answers"]
        assert got == expected
        for answer in got:
            seen["signed" if "result" in answer else "refused"] += 1
            if for_keys and "result" in answer:
                seen["refused by a key"] += any("error" in a for a in answer["result"]["answers"])
    assert all(seen.values()), seen


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        (None, "tasks must be a list"),
        ([], "tasks must be a list"),
        (["x"], "tasks must be a list"),
        ([{}] * (MAX_BATCH + 1), "tasks must be a list"),
        ([{"task_id": "0x12"}], "task_id must be"),
        ([{"task_id": "0x" + "ab" * 32}, {"task_id": "0x" + "AB" * 32}], "task id twice"),
    ],
)
def test_a_malformed_batch_is_refused_whole(tasks: Any, message: str) -> None:
    operator = Operator(KEY, Registry(":memory:"))
    with pytest.raises(RPCError) as refused:
        operator.evaluate_batch({"tasks": tasks})
    assert refused.value.code == INVALID_PARAMS and message in refused.value.message


def test_a_task_that_breaks_the_operator_fails_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    operator = Operator(KEY, Registry(":memory:"))
    tasks = [request(UNIT), request(2 * UNIT), request(3 * UNIT)]
    real = operator.evaluate_and_sign

    def flaky(task: Any, now: float | None = None) -> dict[str, Any]:
        if task is tasks[1]:
            raise KeyError("a bug")
        return real(task, now)

    monkeypatch.setattr(operator, "evaluate_and_sign", flaky)
    answers = operator.evaluate_batch({"tasks": tasks})["answers"]
    assert [a["task_id"] for a in answers] == [t["task_id"] for t in tasks]
    assert answers[1]["error"] == {"code": INTERNAL_ERROR, "message": "internal operator error"}
    assert answers[0]["result"]["decision"] == answers[2]["result"]["decision"] == "allow"


_BATCHES = (EVALUATE_BATCH, EVALUATE_BATCH_FOR_KEYS)


class _Link:
    """An operator link answered in process by ``operator``'s own JSON-RPC handler; while
    ``gate`` is set, a call waits for it (a call in flight); ``spoil`` rewrites a batch's
    answers as a hostile operator would. ``keys``: the operator's (an operator host's), for
    ``restart``; a host's keys' links share this one as their ``http``."""

    def __init__(self, operator: Operator, keys: PrivateKey | list[PrivateKey] = KEY) -> None:
        self.keys = keys
        self.address = ADDRESS
        self.address_bytes = bytes.fromhex(ADDRESS[2:])
        self.has_code: set[bytes] = set()
        self.has_registration: set[bytes] = set()
        self.http = self
        self.handler = create_app(operator, token=TOKEN)
        self.sent: list[tuple[str, int]] = []  # (method, tasks)
        self.gate: asyncio.Event | None = None
        self.spoil: Callable[[list[Any]], list[Any]] | None = None
        self.unsupported = False
        self.restart = False
        self.bodies: list[dict[str, Any]] = []  # the params of each task sent alone

    async def post(self, body: bytes, timeout: float) -> tuple[int, bytes]:
        message = json.loads(body)
        method = message["method"]
        batch = method in _BATCHES
        self.sent.append((method, len(message["params"].get("tasks", [None]))))
        if not batch:
            self.bodies.append(message["params"])
        if self.gate is not None:
            await self.gate.wait()
        if batch and self.restart:
            self.handler = create_app(Operator(self.keys, Registry(":memory:")), token=TOKEN)
            self.restart = False
        if batch and self.unsupported:
            return 200, encode({"jsonrpc": "2.0", "id": 1, "error": {"code": METHOD_NOT_FOUND}})
        status, content = await self.handler(
            "POST", "/rpc", {"authorization": f"Bearer {TOKEN}"}, body
        )
        if batch and self.spoil is not None:
            reply = json.loads(content)
            reply["result"]["answers"] = self.spoil(reply["result"]["answers"])
            content = encode(reply)
        return status, content


def _code(task: dict[str, Any]) -> bytes:
    return bytes.fromhex(task["policy_code_hash"][2:])


def _vote(link: _Link, task: dict[str, Any], reply: Any) -> tuple[str, int]:
    """The gateway's own check of one answer against the task it was sent for."""

    class Digests(dict[tuple[bool, int], bytes]):
        def __missing__(self, key: tuple[bool, int]) -> bytes:
            return attestation_digest(
                chain_id=task["chain_id"],
                policy_client=bytes.fromhex(task["policy_client"][2:]),
                task_id=bytes.fromhex(task["task_id"][2:]),
                policy_id=bytes.fromhex(reply["policy_id"][2:]),
                intent_hash=bytes.fromhex(task["wasm"]["intent_hash"][2:]),
                allow=key[0],
                expires_at=task["expires_at"],
                tier=key[1],
            )

    decision, _ = vote(
        link,  # type: ignore[arg-type]
        reply,
        intent_hash_hex=task["wasm"]["intent_hash"],
        policy_id_hex=reply["policy_id"],
        digests=Digests(),
    )
    return decision


async def _alone(queue: LinkQueue, code: bytes, task: dict[str, Any]) -> Any:
    return await queue.submit(code, _bodies(task), 5.0)


def _run(
    link: _Link,
    tasks: list[dict[str, Any]],
    queue: LinkQueue | None = None,
    asked: list[Any] | None = None,
    prime: bool | None = None,
) -> list[Any]:
    """Each task's outcome (its result or its ``OperatorFailure``) through a link queue (a
    new one unless given): the first while nothing is in flight, the others while it is.
    ``asked``: per task, the keys of a host's queue; ``prime`` (by default, with a new queue):
    the operator holds the policy code and the registration first."""
    warm = queue is None if prime is None else prime
    held = LinkQueue(link) if queue is None else queue  # type: ignore[arg-type]
    keys = [None] * len(tasks) if asked is None else asked

    async def go() -> list[Any]:
        queue = held
        if warm:
            await queue.submit(_code(tasks[0]), _bodies(request(UNIT)), 5.0, keys[0])
            link.sent.clear()
        link.gate = asyncio.Event()
        calls = [
            queue.submit(_code(t), _bodies(t), 5.0, k) for t, k in zip(tasks, keys, strict=True)
        ]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        link.gate.set()
        async with asyncio.timeout(30):  # a waiter left hanging fails, not hangs, the test
            return list(await asyncio.gather(*calls, return_exceptions=True))

    return asyncio.run(go())


def test_a_lone_task_goes_at_once_and_the_queued_ones_together() -> None:
    link = _Link(Operator(KEY, Registry(":memory:")))
    tasks = [request(n * UNIT) for n in (1, 2, 3, 4, 5)]
    outcomes = _run(link, tasks)
    assert link.sent == [("newt_evaluateAndSign", 1), (EVALUATE_BATCH, 4)]
    for task, outcome in zip(tasks, outcomes, strict=True):
        assert outcome["intent_hash"] == task["wasm"]["intent_hash"]
        assert _vote(link, task, outcome) == ("allow", 0)


def test_one_bad_task_in_a_batch_fails_alone() -> None:
    link = _Link(Operator(KEY, Registry(":memory:")))
    tasks = [request(UNIT), request(2 * UNIT), request(3 * UNIT, params=params(max_per_tx=7))]
    tasks.append(request(4 * UNIT))
    outcomes = _run(link, tasks)
    assert link.sent == [("newt_evaluateAndSign", 1), (EVALUATE_BATCH, 3)]
    refused = outcomes[2]
    assert isinstance(refused, OperatorFailure) and refused.rpc_code == INVALID_PARAMS
    for i in (0, 1, 3):
        assert _vote(link, tasks[i], outcomes[i]) == ("allow", 0)


def test_a_reordered_batch_answer_still_reaches_each_task() -> None:
    link = _Link(Operator(KEY, Registry(":memory:")))
    link.spoil = lambda answers: answers[::-1]
    tasks = [request(n * UNIT) for n in (1, 2, 3, 4)]
    outcomes = _run(link, tasks)
    assert link.sent[-1] == (EVALUATE_BATCH, 3)
    for task, outcome in zip(tasks, outcomes, strict=True):
        assert _vote(link, task, outcome) == ("allow", 0)


def _swap_signatures(answers: list[Any]) -> list[Any]:
    first, second = answers[0]["result"], answers[1]["result"]
    first["signature"], second["signature"] = second["signature"], first["signature"]
    return answers


def _other_task_ids(answers: list[Any]) -> list[Any]:
    answers[0]["task_id"], answers[1]["task_id"] = answers[1]["task_id"], answers[0]["task_id"]
    return answers


def test_an_answer_under_another_task_is_refused_by_its_signature() -> None:
    for spoil in (_swap_signatures, _other_task_ids):
        link = _Link(Operator(KEY, Registry(":memory:")))
        link.spoil = spoil
        tasks = [request(n * UNIT) for n in (1, 2, 3, 4)]
        outcomes = _run(link, tasks)
        assert _vote(link, tasks[0], outcomes[0]) == ("allow", 0)  # went alone
        for i in (1, 2):  # each got the other's answer, or its signature: never counted
            with pytest.raises(OperatorFailure) as refused:
                _vote(link, tasks[i], outcomes[i])
            assert refused.value.code in ("bad_signature", "mismatch")
        assert _vote(link, tasks[3], outcomes[3]) == ("allow", 0)


def _duplicated(answers: list[Any]) -> list[Any]:
    return [answers[0], *answers[:-1]]


def _stranger(answers: list[Any]) -> list[Any]:
    answers[-1]["task_id"] = "0x" + keccak(b"not sent").hex()
    return answers


@pytest.mark.parametrize(
    "spoil",
    [lambda a: a[:-1], _duplicated, _stranger, lambda a: [*a, a[0]], lambda a: {"x": a}],
    ids=["missing", "duplicated", "not sent", "one too many", "not a list"],
)
def test_a_batch_answer_that_does_not_answer_each_task_once_counts_for_none(
    spoil: Callable[[list[Any]], Any],
) -> None:
    link = _Link(Operator(KEY, Registry(":memory:")))
    link.spoil = spoil
    tasks = [request(n * UNIT) for n in (1, 2, 3, 4)]
    outcomes = _run(link, tasks)
    assert link.sent == [("newt_evaluateAndSign", 1), (EVALUATE_BATCH, 3)]
    assert _vote(link, tasks[0], outcomes[0]) == ("allow", 0)
    for outcome in outcomes[1:]:
        assert isinstance(outcome, OperatorFailure) and outcome.code == "invalid_response"


def test_an_operator_without_batches_gets_each_task_alone() -> None:
    link = _Link(Operator(KEY, Registry(":memory:")))
    link.unsupported = True
    queue = LinkQueue(link)  # type: ignore[arg-type]
    tasks = [request(n * UNIT) for n in (1, 2, 3)]
    asyncio.run(_alone(queue, _code(tasks[0]), request(UNIT)))
    link.sent.clear()
    outcomes = _run(link, tasks, queue)
    alone = [("newt_evaluateAndSign", 1)]
    assert link.sent == [*alone, (EVALUATE_BATCH, 2), *alone, *alone]
    for task, outcome in zip(tasks, outcomes, strict=True):
        assert _vote(link, task, outcome) == ("allow", 0)
    link.sent.clear()
    _run(link, [request(n * UNIT) for n in (6, 7, 8)], queue)  # remembered: no batch again
    assert link.sent == alone * 3


def test_an_operator_that_restarted_gets_each_batched_task_again_alone_in_full() -> None:
    link = _Link(Operator(KEY, Registry(":memory:")))
    link.restart = True  # just before the batch: it holds neither the code nor the registration
    tasks = [request(n * UNIT) for n in (1, 2, 3)]
    outcomes = _run(link, tasks)
    assert (
        link.sent
        == [("newt_evaluateAndSign", 1), (EVALUATE_BATCH, 2)] + [("newt_evaluateAndSign", 1)] * 2
    )
    resent = link.bodies[-2]  # in full; the next may go lean: the operator holds them again
    assert "registration" in resent and "policy" in resent
    for task, outcome in zip(tasks, outcomes, strict=True):
        assert _vote(link, task, outcome) == ("allow", 0)


def test_a_task_whose_waiter_gave_up_is_not_sent() -> None:
    link = _Link(Operator(KEY, Registry(":memory:")))

    async def go() -> None:
        queue = LinkQueue(link)  # type: ignore[arg-type]
        await queue.submit(_code(request()), _bodies(request(UNIT)), 5.0)
        link.sent.clear()
        link.gate = asyncio.Event()
        tasks = [request(n * UNIT) for n in (1, 2, 3)]
        calls = [queue.submit(_code(t), _bodies(t), 5.0) for t in tasks]
        await asyncio.sleep(0)
        calls[1].cancel()
        link.gate.set()
        await asyncio.gather(*calls, return_exceptions=True)
        assert calls[2].result()["intent_hash"] == tasks[2]["wasm"]["intent_hash"]

    asyncio.run(go())
    assert link.sent == [("newt_evaluateAndSign", 1), ("newt_evaluateAndSign", 1)]


def test_one_task_id_goes_once_per_batch() -> None:
    link = _Link(Operator(KEY, Registry(":memory:")))
    first = request(UNIT)
    tasks = [request(2 * UNIT), first, dict(first), request(3 * UNIT)]
    outcomes = _run(link, tasks)
    assert link.sent == [
        ("newt_evaluateAndSign", 1),
        (EVALUATE_BATCH, 2),
        ("newt_evaluateAndSign", 1),
    ]
    for task, outcome in zip(tasks, outcomes, strict=True):
        assert _vote(link, task, outcome) == ("allow", 0)


def test_a_bug_while_sending_a_batch_reaches_every_waiter() -> None:
    link = _Link(Operator(KEY, Registry(":memory:")))

    def broken(answers: list[Any]) -> list[Any]:
        raise RuntimeError("a bug")

    link.spoil = broken
    tasks = [request(n * UNIT) for n in (1, 2, 3)]
    outcomes = _run(link, tasks)  # no waiter is left hanging (this returns)
    assert outcomes[0]["decision"] == "allow"
    assert all(isinstance(o, RuntimeError) for o in outcomes[1:])


def _own(
    policy: Policy,
    config: dict[str, Any],
    client: str,
    link: Any,
    queue: LinkQueue | None = None,
    asked: list[Any] | None = None,
) -> dict[str, Any]:
    """A task of a policy client under its own policy and params, once sent alone through
    ``link`` (the operator holds its code and registration from then on), and that answer;
    through ``queue`` if given (a host's: ``asked``, its keys wanted)."""
    task = request(
        UNIT,
        policy_client=client,
        policy_code_hash="0x" + policy.code_hash.hex(),
        policy=policy_material(policy),
        params=config,
        registration=registration(policy=policy, config=config, client=client),
    )
    queue = LinkQueue(link) if queue is None else queue

    async def alone() -> Any:
        return await queue.submit(_code(task), _bodies(task), 5.0, asked)

    answer = asyncio.run(alone())
    return {"task": task, "alone": answer}


# A policy client's own policy (no params schema) whose params nest as deep as the gateway
# lets a registration's params nest: 61 levels, under {"params": {"registration": {...}}}.
_DEEP = Policy(
    name="deep",
    entrypoint="deep.allow",
    modules={"deep.rego": "package deep\nimport rego.v1\nallow if { true }\n"},
)


def _nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize("levels", [60, 61])
def test_a_client_whose_params_nest_deep_cannot_fail_the_other_tasks_of_a_batch(
    levels: int,
) -> None:
    """Before: at 61 levels its lean task nests 63 alone (the operator's limit is 64) but 65
    inside a batch's ``{"params": {"tasks": [...]}}``, so the operator refused the whole batch
    as too deep, and every other client's task in it failed with it. Now such a task goes
    alone; one a level less still goes in the batch."""
    deep = _nested(levels)
    register = {"registration": {"params": _nested(61)}}  # the gateway takes it
    parse_request(encode({"jsonrpc": "2.0", "id": 1, "method": "m", "params": register}))
    link = _Link(Operator(KEY, Registry(":memory:")))
    own = _own(_DEEP, deep, "0x" + "dd" * 20, link)
    hostile_task = own["task"]
    assert own["alone"]["decision"] == "allow"  # the operator signs it alone
    tasks = [request(n * UNIT) for n in (1, 2, 3, 4)]
    tasks.insert(2, bind(dict(hostile_task), request_id="deep"))
    outcomes = _run(link, tasks)
    single = ("newt_evaluateAndSign", 1)
    assert link.sent == (
        [single, (EVALUATE_BATCH, 4)] if levels == 60 else [single, single, (EVALUATE_BATCH, 3)]
    )
    for task, outcome in zip(tasks, outcomes, strict=True):
        assert _vote(link, task, outcome) == ("allow", 0)


@pytest.mark.parametrize("host", [False, True], ids=["operator", "host"])
def test_a_task_queued_for_an_operator_is_not_sent_once_its_quorum_is_reached(
    monkeypatch: pytest.MonkeyPatch, host: bool
) -> None:
    """Hedged to a third operator that is busy, the task waits in that operator's queue; the
    other two reach the quorum: it is dropped there, never sent (the operator would evaluate
    and sign a task nobody waits for, under the load that made the quorum slow). ``host``:
    the third is an operator host of two keys (2 of 4 is the quorum), its queue the host's."""
    monkeypatch.setattr(FanOut, "hedge_delay", lambda self: 0.0)  # hedge at once
    keys = [PrivateKey(bytes([0x21 + i]) * 32) for i in range(4 if host else 3)]
    links = [_Link(Operator(key, Registry(":memory:"))) for key in keys[:2]]
    links.append(_Link(Operator(keys[2:], Registry(":memory:")), keys[2:]))
    for link, key in zip(links, keys, strict=False):
        link.address = operator_address(key)
        link.address_bytes = bytes.fromhex(link.address[2:])
        link.hosted = False  # type: ignore[attr-defined]
    third: list[Any] = links[2:]
    if host:  # the host's keys' links, sharing its HTTP and what it holds
        third = [
            SimpleNamespace(
                address=operator_address(key),
                address_bytes=bytes.fromhex(operator_address(key)[2:]),
                has_code=links[2].has_code,
                has_registration=links[2].has_registration,
                http=links[2],
                hosted=True,
            )
            for key in keys[2:]
        ]
    asked = third if host else None
    body = request(UNIT)
    held = _bodies(body)
    client: Any = SimpleNamespace(
        code_hash=_code(body),
        address=body["policy_client"],
        policy_id=Registration.from_json(body["registration"]).policy_id,
        request_lean=held._client.request_lean,
        request_reference=held._client.request_reference,
        request_registration=held._client.request_registration,
        request_policy=held._client.request_policy,
        registration_hash=held.registration_hash,
    )
    task: Any = SimpleNamespace(
        client=client,
        intent=SimpleNamespace(chain_id=body["chain_id"]),
        percentage=50,
        timeout=5.0,
    )
    intent_hash = bytes.fromhex(body["wasm"]["intent_hash"][2:])
    task_id = bytes.fromhex(bind(body, request_id="hedged")["task_id"][2:])

    async def go() -> Any:
        fanout = FanOut([*links[:2], *third], time.time)
        queues = [fanout._queues[id(link)] for link in [*links[:2], third[0]]]
        for i, (queue, link) in enumerate(zip(queues, links, strict=True)):  # each holds both
            await queue.submit(
                client.code_hash, _bodies(request(UNIT)), 5.0, asked if i == 2 else None
            )
            link.sent.clear()
        for link in links:  # the first two are slow, the third busy with another task
            link.gate = asyncio.Event()
        blockers = [  # every message the third may have in flight
            queues[2].submit(client.code_hash, _bodies(body), 5.0, asked)
            for _ in range(queues[2]._depth)
        ]
        await asyncio.sleep(0)
        asking = asyncio.ensure_future(
            fanout.ask(
                task,
                task_id,
                body["request_id"],
                encode(body["wasm"]),
                body["expires_at"],
                intent_hash,
                None,
                json.dumps(body["intent"], separators=(",", ":")),
            )
        )
        for _ in range(10):
            await asyncio.sleep(0)
        assert len(queues[2]._queue) == 1  # hedged to the third, it waits there
        links[0].gate.set()
        links[1].gate.set()
        outcome = await asking
        links[2].gate.set()
        await asyncio.gather(*blockers)
        for _ in range(10):
            await asyncio.sleep(0)
        for queue in queues:
            queue.close()
        return outcome

    outcome = asyncio.run(go())
    assert outcome.decision == "allow" and len(outcome.votes) == 2
    third_sent = [(EVALUATE_FOR_KEYS, 1)] * 2 if host else [("newt_evaluateAndSign", 1)]
    sent = [[("newt_evaluateAndSign", 1)]] * 2 + [third_sent]
    assert [link.sent for link in links] == sent


# A policy client's own policy whose reasons are as long as it likes (here 15 copies of a
# param): each answer alone is far below the gateway's ``MAX_RESPONSE``, two of them are not.
_FAT = Policy(
    name="fat",
    entrypoint="fat.allow",
    modules={
        "fat.rego": "package fat\nimport rego.v1\nallow if { true }\n"
        'reasons contains concat("", [data.params.s | some i in numbers.range(1, 15)])\n'
    },
)


class _CappedLink(_Link):
    """A link whose transport refuses a response longer than ``MAX_RESPONSE``, as the
    gateway's ``KeepAliveClient`` does."""

    async def post(self, body: bytes, timeout: float) -> tuple[int, bytes]:
        status, content = await super().post(body, timeout)
        if len(content) > MAX_RESPONSE:
            raise HTTPError("response without an acceptable Content-Length")
        return status, content


def test_answers_too_long_together_do_not_fail_the_other_tasks_of_a_batch() -> None:
    """Before: two tasks of a client whose policy writes ~600 KB of reasons went in one batch
    with other clients' tasks; the batch's answer passed the gateway's 1 MiB cap, the whole
    batch failed (``unreachable``), and every task in it with it. A batch that fails whole
    (but by time) is now sent again one task a message."""
    fat = {"s": "x" * 40_000}
    link = _CappedLink(Operator(KEY, Registry(":memory:")))
    own = _own(_FAT, fat, "0x" + "fa" * 20, link)
    first, alone = own["task"], own["alone"]
    assert alone["decision"] == "allow" and len(alone["reasons"][0]) == 600_000
    tasks = [request(n * UNIT) for n in (1, 2, 3)]
    for name in (b"fat 1", b"fat 2"):
        tasks.insert(2, bind(dict(first), request_id=name.decode()))
    outcomes = _run(link, tasks)
    single = ("newt_evaluateAndSign", 1)
    assert link.sent == [single, (EVALUATE_BATCH, 4), single, single, single, single]
    for task, outcome in zip(tasks, outcomes, strict=True):
        assert _vote(link, task, outcome) == ("allow", 0)


@pytest.mark.parametrize(
    ("reply", "again"),
    [
        ((503, b"busy"), False),  # the operator's HTTP: no task is why, a retry adds load
        ((200, b"not json"), True),
        ((200, encode({"jsonrpc": "2.0", "id": 1, "error": {"code": INVALID_PARAMS}})), True),
    ],
    ids=["http status", "not JSON", "refused whole"],
)
def test_a_batch_lost_whole_goes_again_alone_unless_no_task_can_be_why(
    reply: tuple[int, bytes], again: bool
) -> None:
    class Whole(_Link):
        async def post(self, body: bytes, timeout: float) -> tuple[int, bytes]:
            answered = await super().post(body, timeout)
            return reply if json.loads(body)["method"] == EVALUATE_BATCH else answered

    link = Whole(Operator(KEY, Registry(":memory:")))
    tasks = [request(n * UNIT) for n in (1, 2, 3)]
    outcomes = _run(link, tasks)
    single = ("newt_evaluateAndSign", 1)
    assert link.sent == [single, (EVALUATE_BATCH, 2)] + [single] * 2 * again
    assert _vote(link, tasks[0], outcomes[0]) == ("allow", 0)
    for task, outcome in zip(tasks[1:], outcomes[1:], strict=True):
        if again:
            assert _vote(link, task, outcome) == ("allow", 0)
        else:
            assert isinstance(outcome, OperatorFailure) and outcome.code == "http_503"
