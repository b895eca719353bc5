"""Red team, session 13: operator hosts batched (``agentguard_evaluateBatchForKeys``, a host's
``LinkQueue`` with two messages in flight).

A task whose quorum was reached while its batch was in flight must not be evaluated and
signed again when that batch is lost (each task then goes again alone); ``close`` must
settle every waiter, those of a message not yet started too. A hostile gateway cannot get
one key to sign two intents under one task id by racing two batch messages to the host."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from agentguard.network._rpc import EVALUATE_BATCH_FOR_KEYS, INVALID_PARAMS
from agentguard.network.gateway._batching import LinkQueue
from agentguard.network.operator import Operator, create_app
from agentguard.network.registry import Registry
from tests.network.conftest import UNIT
from tests.network.test_host_batch import ALLOWED, ALONE, _checked, _host
from tests.network.test_operator import request
from tests.network.test_operator_batch import TOKEN, _code
from tests.network.test_operator_hosts import ADDRESSES, KEYS
from tests.network.test_operator_registration_hash import _bodies
from tests.task_ids import colliding


def test_a_task_answered_while_its_batch_is_in_flight_is_not_sent_again_when_it_is_lost() -> None:
    host, links = _host()
    answer = host.post

    async def post(body: bytes, timeout: float) -> tuple[int, bytes]:
        if json.loads(body)["method"] != EVALUATE_BATCH_FOR_KEYS:
            return await answer(body, timeout)
        host.sent.append((EVALUATE_BATCH_FOR_KEYS, len(json.loads(body)["params"]["tasks"])))
        await lost.wait()
        return 200, b"not json"  # lost whole: each task goes again alone

    host.post = post  # type: ignore[method-assign]
    tasks = [request(n * UNIT) for n in (3, 4, 5)]
    code = _code(tasks[0])

    lost = asyncio.Event()

    async def go() -> list[Any]:
        queue = LinkQueue(links[0], hosted=True)
        await queue.submit(code, _bodies(request(UNIT)), 5.0, links[:3])  # the host holds both
        host.sent.clear()
        host.gate = asyncio.Event()
        lead = [queue.submit(code, _bodies(request(n * UNIT)), 5.0, links[:3]) for n in (1, 2)]
        bodies = [_bodies(t) for t in tasks]
        calls = [queue.submit(code, b, 5.0, links[:3]) for b in bodies]
        await asyncio.sleep(0)
        host.gate.set()
        await asyncio.gather(*lead)  # the batch of the three goes meanwhile
        await asyncio.sleep(0)
        assert host.sent == [ALONE, ALONE, (EVALUATE_BATCH_FOR_KEYS, 3)]
        queue.forget(bodies[0])  # its quorum reached elsewhere (``FanOut``)
        lost.set()
        return list(await asyncio.gather(*calls, return_exceptions=True))

    outcomes = asyncio.run(go())
    assert host.sent[3:] == [ALONE, ALONE]  # the two still wanted, not the answered one
    assert isinstance(outcomes[0], asyncio.CancelledError)
    for task, outcome in zip(tasks[1:], outcomes[1:], strict=True):
        assert _checked(links[:3], task, outcome) == ALLOWED


def test_closing_a_host_queue_settles_the_waiters_of_a_message_not_yet_started() -> None:
    host, links = _host()

    async def go() -> list[Any]:
        queue = LinkQueue(links[0], hosted=True)
        code = _code(request(UNIT))
        await queue.submit(code, _bodies(request(UNIT)), 5.0, links[:3])
        host.gate = asyncio.Event()
        lead = [queue.submit(code, _bodies(request(n * UNIT)), 5.0, links[:3]) for n in (1, 2)]
        calls = [queue.submit(code, _bodies(request(n * UNIT)), 5.0, links[:3]) for n in (3, 4)]
        await asyncio.sleep(0)
        # a slot frees: the next message is made and, before it starts, the gateway stops
        lead[0].add_done_callback(lambda _: queue.close())  # runs after the queue's own
        lead[0].cancel()
        async with asyncio.timeout(2):  # left pending, a waiter would hang here
            return list(await asyncio.gather(*calls, return_exceptions=True))

    outcomes = asyncio.run(go())
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes), outcomes


def test_two_batch_messages_racing_one_task_id_for_two_intents_get_one_signature_per_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two messages in flight at once (a host queue's depth), the same task id for two
    intents, the same keys: each key signs one of them only, as ``evaluate_for`` alone.
    (Derived ids name one intent: the two reach the memory of signed ids by colliding.)"""
    handler = create_app(Operator(KEYS, Registry(":memory:")), token=TOKEN)
    first = request(UNIT)
    second = request(2 * UNIT, task_id=first["task_id"], request_id=first["request_id"])
    colliding(monkeypatch, first)

    def message(task: dict[str, Any]) -> bytes:
        tasks = [{**task, "operators": ADDRESSES}, {**request(UNIT), "operators": ADDRESSES}]
        return json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": EVALUATE_BATCH_FOR_KEYS,
                "params": {"tasks": tasks},
            }
        ).encode()

    async def go() -> list[Any]:
        auth = {"authorization": f"Bearer {TOKEN}"}
        return list(
            await asyncio.gather(
                *(handler("POST", "/rpc", auth, message(t)) for t in (first, second))
            )
        )

    replies = [json.loads(content)["result"]["answers"] for _, content in asyncio.run(go())]
    for i in range(len(ADDRESSES)):
        one, two = (reply[0]["result"]["answers"][i] for reply in replies)
        assert ("signature" in one) != ("signature" in two)  # exactly one of the two intents
        refusal = two if "signature" in one else one
        assert refusal["error"]["code"] == INVALID_PARAMS
        assert "different intent" in refusal["error"]["message"]
    for reply in replies:  # the other task of each message is untouched
        assert all("signature" in a for a in reply[1]["result"]["answers"])
