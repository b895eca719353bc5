"""Several tasks in one message to an operator host (``agentguard_evaluateBatchForKeys``), in
process.

The host answers each task of a batch exactly as ``evaluate_for`` answers it alone
(``test_operator_batch``'s differential); the gateway's host queue sends a lone task at
once and the tasks queued behind a call in flight together, and the same tasks through a
batching and a non-batching queue come out the same. A lying host's batch counts for none
unless it answers every task sent once and, in each, every key asked once; an answer moved to
another task or key fails its own signature check; a batch lost whole goes again one task a
message; a host without the method gets each task alone."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from agentguard._eip712 import keccak
from agentguard.network._http import HTTPError
from agentguard.network._rpc import (
    EVALUATE_BATCH_FOR_KEYS,
    EVALUATE_FOR_KEYS,
    INVALID_PARAMS,
    MAX_BATCH,
    MAX_HOST_KEYS,
    RPCError,
    encode,
)
from agentguard.network.gateway._batching import LinkQueue
from agentguard.network.gateway._operators import OperatorFailure
from agentguard.network.operator import Operator
from agentguard.network.registry import Registry

from ..task_ids import bind
from .conftest import UNIT, params
from .test_operator import request
from .test_operator_batch import _DEEP, _code, _Link, _nested, _own, _vote
from .test_operator_batch import _run as run
from .test_operator_hosts import ADDRESSES, KEYS, STRANGER, hostile
from .test_operator_registration_hash import _bodies

ALONE = (EVALUATE_FOR_KEYS, 1)


def _host() -> tuple[_Link, list[Any]]:
    """A host's HTTP (its ``Operator`` of ``KEYS``) and one link per key (a stranger's last),
    sharing it as the gateway's links of one host do."""
    host = _Link(Operator(KEYS, Registry(":memory:")), KEYS)
    links = [
        SimpleNamespace(
            address=address,
            address_bytes=bytes.fromhex(address[2:]),
            has_code=host.has_code,
            has_registration=host.has_registration,
            http=host,
            hosted=True,
        )
        for address in [*ADDRESSES, STRANGER]
    ]
    return host, links


def _run(
    host: _Link,
    links: list[Any],
    tasks: list[dict[str, Any]],
    asked: list[list[Any]] | None = None,
    batching: bool = True,
    queue: LinkQueue | None = None,
) -> list[Any]:
    """Each task's outcome (one result or ``OperatorFailure`` per key asked, or the task's
    ``OperatorFailure``) through a host queue (a new one unless given), once the host holds
    the policy and the registration: the first while nothing else is in flight, the others
    while it is. A host queue keeps two messages in flight: one more task goes first (a
    ``lead``, checked and left out of ``host.sent`` and of the outcomes)."""
    queue = LinkQueue(links[0], hosted=True) if queue is None else queue
    queue.batching = batching
    lead = [request(UNIT) for _ in range(queue._depth - 1)]
    keys = [links[:3]] * len(lead) + (asked or [links[:3]] * len(tasks))
    outcomes = run(host, lead + tasks, queue, keys, prime=True)
    assert host.sent[: len(lead)] == [ALONE] * len(lead)
    del host.sent[: len(lead)]
    for task, outcome in zip(lead, outcomes, strict=False):
        assert _checked(links[:3], task, outcome) == ALLOWED
    return outcomes[len(lead) :]


def _checked(links: list[Any], task: dict[str, Any], outcome: Any) -> list[Any]:
    """Each key's vote as the gateway counts it: (decision, tier), or the failure's code."""
    if isinstance(outcome, BaseException):
        raise outcome
    out: list[Any] = []
    for link, reply in zip(links, outcome, strict=True):
        try:
            if isinstance(reply, OperatorFailure):
                raise reply
            out.append(_vote(link, task, reply))
        except OperatorFailure as exc:
            out.append(exc.code)
    return out


ALLOWED = [("allow", 0)] * 3


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        (None, "tasks must be a list"),
        ([{}] * (MAX_BATCH + 1), "tasks must be a list"),
        ([{"task_id": "0x" + "ab" * 32}, {"task_id": "0x" + "AB" * 32}], "task id twice"),
        (
            [
                {
                    "task_id": "0x" + f"{i:02x}" * 32,
                    "operators": [STRANGER] * (MAX_HOST_KEYS // 2 + 1),
                }
                for i in range(2)
            ],
            f"more than {MAX_HOST_KEYS} operators",
        ),
    ],
)
def test_a_malformed_host_batch_is_refused_whole(tasks: Any, message: str) -> None:
    with pytest.raises(RPCError) as refused:
        Operator(KEYS, Registry(":memory:")).evaluate_batch({"tasks": tasks}, for_keys=True)
    assert refused.value.code == INVALID_PARAMS and message in refused.value.message


def test_a_lone_task_goes_to_the_host_at_once_and_the_queued_ones_together() -> None:
    host, links = _host()
    tasks = [request(n * UNIT) for n in (1, 2, 3, 4, 5)]
    asked = [links[:3], links[:2], links[1:3], links[2:3], [links[0], links[3]]]
    outcomes = _run(host, links, tasks, asked)
    assert host.sent == [ALONE, (EVALUATE_BATCH_FOR_KEYS, 4)]
    for task, keys, outcome in zip(tasks[:4], asked, outcomes, strict=False):
        assert _checked(keys, task, outcome) == [("allow", 0)] * len(keys)
    assert _checked(asked[4], tasks[4], outcomes[4]) == [("allow", 0), "rpc_-32602"]


def test_one_bad_task_in_a_host_batch_fails_alone() -> None:
    host, links = _host()
    tasks = [request(UNIT), request(2 * UNIT), request(3 * UNIT, params=params(max_per_tx=7))]
    tasks.append(request(4 * UNIT))
    outcomes = _run(host, links, tasks)
    assert host.sent == [ALONE, (EVALUATE_BATCH_FOR_KEYS, 3)]
    refused = outcomes[2]
    assert isinstance(refused, OperatorFailure) and refused.rpc_code == INVALID_PARAMS
    for i in (0, 1, 3):
        assert _checked(links[:3], tasks[i], outcomes[i]) == ALLOWED


# -- a lying host ----------------------------------------------------------------------------

_OTHER = Operator(KEYS, Registry(":memory:"))  # signs validly what the host was not asked


def _answers(answer: dict[str, Any]) -> list[Any]:
    result: list[Any] = answer["result"]["answers"]
    return result


def _key_not_asked(tasks: list[dict[str, Any]]) -> Callable[[list[Any]], list[Any]]:
    """The third key's answer, validly signed for its task, in a batch that asked two."""
    by_id = {t["task_id"]: t for t in tasks}

    def spoil(answers: list[Any]) -> list[Any]:
        task = {**by_id[answers[1]["task_id"]], "operators": [ADDRESSES[2]]}
        _answers(answers[1]).append(_OTHER.evaluate_for(task)["answers"][0])
        return answers

    return spoil


def _key_twice(answers: list[Any]) -> list[Any]:
    keys = _answers(answers[1])
    keys[1] = keys[0]
    return answers


def _key_missing(answers: list[Any]) -> list[Any]:
    _answers(answers[0]).pop()
    return answers


def _task_not_sent(answers: list[Any]) -> list[Any]:
    answers[-1]["task_id"] = "0x" + keccak(b"not sent").hex()
    return answers


def _result_not_an_object(answers: list[Any]) -> list[Any]:
    answers[1]["result"] = _answers(answers[1])
    return answers


@pytest.mark.parametrize(
    "spoil",
    [
        _key_not_asked,
        lambda _: _key_twice,
        lambda _: _key_missing,
        lambda _: _task_not_sent,
        lambda _: lambda a: [a[0], *a[:-1]],
        lambda _: lambda a: a[:-1],
        lambda _: lambda a: [*a, a[0]],
        lambda _: _result_not_an_object,
    ],
    ids=[
        "key not asked",
        "key twice",
        "key missing",
        "task not sent",
        "task twice",
        "task missing",
        "one answer too many",
        "result not an object",
    ],
)
def test_a_host_batch_not_answering_each_task_and_key_once_counts_for_none(
    spoil: Callable[[list[dict[str, Any]]], Callable[[list[Any]], list[Any]]],
) -> None:
    host, links = _host()
    tasks = [request(n * UNIT) for n in (1, 2, 3, 4)]
    host.spoil = spoil(tasks)
    outcomes = _run(host, links, tasks, [links[:2]] * 4)
    assert host.sent == [ALONE, (EVALUATE_BATCH_FOR_KEYS, 3)]
    assert _checked(links[:2], tasks[0], outcomes[0]) == [("allow", 0)] * 2
    for outcome in outcomes[1:]:  # every task of the batch, the honestly answered ones too
        assert isinstance(outcome, OperatorFailure) and outcome.code == "invalid_response"


def _swap_task_ids(answers: list[Any]) -> list[Any]:
    answers[0]["task_id"], answers[1]["task_id"] = answers[1]["task_id"], answers[0]["task_id"]
    return answers


def _one_key_across_tasks(answers: list[Any]) -> list[Any]:
    first, second = _answers(answers[0])[0], _answers(answers[1])[0]
    first["signature"], second["signature"] = second["signature"], first["signature"]
    return answers


def _across_keys(answers: list[Any]) -> list[Any]:
    keys = _answers(answers[0])
    keys[0]["signature"], keys[1]["signature"] = keys[1]["signature"], keys[0]["signature"]
    return answers


@pytest.mark.parametrize(
    ("spoil", "amounts", "expected"),
    [
        (_swap_task_ids, (1, 2, 3, 4), [["mismatch"] * 3] * 2),
        (_swap_task_ids, (1, 1, 1, 1), [["bad_signature"] * 3] * 2),
        (_one_key_across_tasks, (1, 1, 1, 1), [["bad_signature", *ALLOWED[:2]]] * 2),
        (_across_keys, (1, 2, 3, 4), [["bad_signature"] * 2 + ALLOWED[:1], ALLOWED]),
    ],
    ids=[
        "task ids swapped",
        "task ids swapped, same intent",
        "one key's signature under another task",
        "under another key",
    ],
)
def test_a_host_answer_moved_to_another_task_or_key_fails_its_own_signature_check(
    spoil: Callable[[list[Any]], list[Any]], amounts: tuple[int, ...], expected: list[Any]
) -> None:
    """Same intent, other task ids: only the signature (its digest covers the task id) tells
    the answers apart, and it does."""
    host, links = _host()
    host.spoil = spoil
    tasks = [request(n * UNIT) for n in amounts]
    outcomes = _run(host, links, tasks)
    assert host.sent == [ALONE, (EVALUATE_BATCH_FOR_KEYS, 3)]
    votes = [_checked(links[:3], t, o) for t, o in zip(tasks, outcomes, strict=True)]
    assert votes == [ALLOWED, *expected, ALLOWED]


# -- lost, unsupported, restarted, given up, too deep ---------------------------------------


@pytest.mark.parametrize(
    ("reply", "again"),
    [
        ((503, b"busy"), False),
        ((200, b"not json"), True),
        ((200, encode({"jsonrpc": "2.0", "id": 1, "error": {"code": INVALID_PARAMS}})), True),
        (HTTPError("response without an acceptable Content-Length"), True),
    ],
    ids=["http status", "not JSON", "refused whole", "answer too long"],
)
def test_a_host_batch_lost_whole_goes_again_alone_unless_no_task_can_be_why(
    reply: Any, again: bool
) -> None:
    class Whole(_Link):
        async def post(self, body: bytes, timeout: float) -> tuple[int, bytes]:
            answered = await super().post(body, timeout)
            if json.loads(body)["method"] != EVALUATE_BATCH_FOR_KEYS:
                return answered
            if isinstance(reply, Exception):
                raise reply
            return reply  # type: ignore[no-any-return]

    host = Whole(Operator(KEYS, Registry(":memory:")), KEYS)
    _, links = _host()
    for link in links:
        link.http, link.has_code, link.has_registration = host, host.has_code, host.has_registration
    tasks = [request(n * UNIT) for n in (1, 2, 3)]
    outcomes = _run(host, links, tasks)
    assert host.sent == [ALONE, (EVALUATE_BATCH_FOR_KEYS, 2)] + [ALONE] * 2 * again
    assert _checked(links[:3], tasks[0], outcomes[0]) == ALLOWED
    for task, outcome in zip(tasks[1:], outcomes[1:], strict=True):
        if again:
            assert _checked(links[:3], task, outcome) == ALLOWED
        else:
            assert isinstance(outcome, OperatorFailure) and outcome.code == "http_503"


def test_a_host_without_batches_gets_each_task_alone_from_then_on() -> None:
    host, links = _host()
    host.unsupported = True
    tasks = [request(n * UNIT) for n in (1, 2, 3)]
    queue = LinkQueue(links[0], hosted=True)
    outcomes = _run(host, links, tasks, queue=queue)
    assert host.sent == [ALONE, (EVALUATE_BATCH_FOR_KEYS, 2), ALONE, ALONE]
    assert not queue.batching
    for task, outcome in zip(tasks, outcomes, strict=True):
        assert _checked(links[:3], task, outcome) == ALLOWED
    _run(host, links, [request(n * UNIT) for n in (6, 7, 8)], queue=queue, batching=False)
    assert host.sent == [ALONE] * 3  # remembered: no batch again


def test_a_host_that_restarted_gets_each_batched_task_again_alone_in_full() -> None:
    host, links = _host()
    host.restart = True  # just before the batch: it holds neither the code nor the registration
    tasks = [request(n * UNIT) for n in (1, 2, 3)]
    outcomes = _run(host, links, tasks)
    assert host.sent == [ALONE, (EVALUATE_BATCH_FOR_KEYS, 2), ALONE, ALONE]
    resent = host.bodies[-2]
    assert "registration" in resent and "policy" in resent
    for task, outcome in zip(tasks, outcomes, strict=True):
        assert _checked(links[:3], task, outcome) == ALLOWED


def test_a_host_task_given_up_or_forgotten_is_not_sent() -> None:
    """A slow host: while one call is in flight, one waiter gives up (its timeout) and one
    task's quorum is reached elsewhere (``forget``); neither is sent when the host answers."""
    host, links = _host()
    tasks = [request(n * UNIT) for n in (1, 2, 3, 4)]

    async def go() -> list[Any]:
        queue = LinkQueue(links[0], hosted=True)
        await queue.submit(_code(tasks[0]), _bodies(request(UNIT)), 5.0, links[:3])
        host.sent.clear()
        host.gate = asyncio.Event()
        bodies = [_bodies(t) for t in tasks]
        lead = [  # every message in flight but one
            queue.submit(_code(tasks[0]), b, 5.0, links[:3])
            for b in [_bodies(request(UNIT)) for _ in range(queue._depth - 1)]
        ]
        calls = [
            queue.submit(_code(t), b, 5.0, links[:3]) for t, b in zip(tasks, bodies, strict=True)
        ]
        await asyncio.sleep(0)
        calls[1].cancel()
        queue.forget(bodies[2])
        await asyncio.sleep(0.05)  # slow
        host.gate.set()
        await asyncio.gather(*lead)
        return list(await asyncio.gather(*calls, return_exceptions=True))

    outcomes = asyncio.run(go())
    assert host.sent[1:] == [ALONE, ALONE]  # the first, then the last alone: nothing else left
    assert isinstance(outcomes[1], asyncio.CancelledError)
    assert isinstance(outcomes[2], asyncio.CancelledError)
    for i in (0, 3):
        assert _checked(links[:3], tasks[i], outcomes[i]) == ALLOWED


def test_a_host_batch_never_names_more_keys_than_one_host_call() -> None:
    """Each task names 100 keys (ones the host does not hold: each answered as refused): at
    most two such tasks go in one message, ``MAX_HOST_KEYS`` named in all."""
    host, links = _host()
    many = [
        SimpleNamespace(**{**vars(links[0]), "address": "0x" + keccak(bytes([i])).hex()[:40]})
        for i in range(100)
    ]
    assert 2 * len(many) <= MAX_HOST_KEYS < 3 * len(many)
    tasks = [request(n * UNIT) for n in range(1, 6)]
    outcomes = _run(host, links, tasks, [many] * 5)
    assert host.sent == [ALONE, (EVALUATE_BATCH_FOR_KEYS, 2), (EVALUATE_BATCH_FOR_KEYS, 2)]
    for outcome in outcomes:
        assert [o.rpc_code for o in outcome] == [INVALID_PARAMS] * 100
        assert all("does not hold the key" in o.message for o in outcome)


def test_host_tasks_that_nest_too_deep_for_a_batch_go_alone() -> None:
    """As for an operator (``test_operator_batch``): one too deep for a batch's envelope
    cannot make the host refuse the whole batch, every other task in it."""
    host, links = _host()
    queue = LinkQueue(links[0], hosted=True)
    held = _own(_DEEP, _nested(61), "0x" + "dd" * 20, host, queue, links[:3])
    own = held["task"]
    assert _checked(links[:3], own, held["alone"]) == ALLOWED  # the host signs it alone
    tasks = [request(n * UNIT) for n in (1, 2, 3, 4)]
    tasks.insert(2, bind(dict(own), request_id="deep"))
    outcomes = _run(host, links, tasks)
    assert host.sent == [ALONE, ALONE, (EVALUATE_BATCH_FOR_KEYS, 3)]
    for task, outcome in zip(tasks, outcomes, strict=True):
        assert _checked(links[:3], task, outcome) == ALLOWED


# -- differential: batched and unbatched hosts ------------------------------------------------


def _plain(outcome: Any) -> Any:
    """An outcome comparable across runs: a failure as its code, message and JSON-RPC code."""
    if isinstance(outcome, OperatorFailure):
        return ("failure", outcome.code, outcome.message, outcome.rpc_code)
    if isinstance(outcome, list):
        return [_plain(o) for o in outcome]
    assert isinstance(outcome, dict), outcome
    return outcome


def test_the_same_tasks_through_batched_and_unbatched_hosts_come_out_the_same() -> None:
    rng = random.Random(20261204)
    kinds = {"signed": 0, "refused by a key": 0, "refused whole": 0, "batches": 0}
    for _ in range(12):
        used: list[str] = []
        tasks = []
        for _ in range(rng.randint(2, 8)):
            task = hostile(rng, request(rng.choice((1, 5, 9, 11, 40)) * UNIT), used)
            used.append(task["task_id"])
            tasks.append(task)
        asked = [rng.sample(range(4), rng.randint(1, 4)) for _ in tasks]  # a stranger at times
        outcomes = []
        for batching in (True, False):
            host, links = _host()
            keys = [[links[i] for i in a] for a in asked]
            outcomes.append([_plain(o) for o in _run(host, links, tasks, keys, batching)])
            methods = [m for m, _ in host.sent]
            if batching:
                kinds["batches"] += methods.count(EVALUATE_BATCH_FOR_KEYS)
            else:
                assert set(methods) == {EVALUATE_FOR_KEYS}
        fast, slow = outcomes
        assert fast == slow
        for outcome in fast:
            if isinstance(outcome, tuple):
                kinds["refused whole"] += 1
                continue
            signed = sum(isinstance(o, dict) for o in outcome)
            kinds["signed"] += signed
            kinds["refused by a key"] += len(outcome) - signed
    assert all(kinds.values()), kinds
