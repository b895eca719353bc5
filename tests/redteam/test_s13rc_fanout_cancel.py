"""Red team (session 13): a client request cancelled while the fan-out waits for operators
(its caller's timeout, a server shutting the request down). Nobody will read the answers:
the calls still queued for an operator must not be sent, the ones in flight are given up
(as at the task's own deadline), every link queue ends idle, and no call's failure is left
unread for asyncio to report ("exception was never retrieved", one error log per operator
per cancelled request)."""

from __future__ import annotations

import asyncio
import gc
import json
from pathlib import Path
from typing import Any

import pytest

from agentguard.network.gateway._batching import LinkQueue
from tests.redteam._s9_net import Net, _Direct, agent, params


class _Slow(_Direct):
    """An operator that answers after ``delay`` (or never: ``lost``), noting whose task it
    evaluated."""

    def __init__(self, net: Net, index: int, delay: float, lost: bool = False) -> None:
        super().__init__(net, index)
        self.delay, self.lost = delay, lost
        self.evaluated: list[str] = []

    async def post(self, body: bytes, timeout: float) -> tuple[int, bytes]:
        await asyncio.sleep(min(self.delay, timeout))
        if self.lost:
            raise TimeoutError
        request = json.loads(body)
        tasks = request["params"].get("tasks", [request["params"]])
        self.evaluated += [task["intent"]["from"].lower() for task in tasks]
        return await super().post(body, timeout)


@pytest.fixture
def net(tmp_path: Path) -> Any:
    net = Net(tmp_path)
    yield net
    net.close()


def _watch(net: Net) -> list[str]:
    reported: list[str] = []
    net.loop.set_exception_handler(lambda _, context: reported.append(context["message"]))
    return reported


def _idle(net: Net) -> bool:
    queues: list[LinkQueue] = list(net.gateway.operators._queues.values())
    return all(q._busy == 0 and not q._queue for q in queues)


@pytest.mark.parametrize("lost", [False, True])
def test_a_cancelled_request_sends_nothing_more_and_leaves_nothing_unread(
    net: Net, lost: bool
) -> None:
    slow = [_Slow(net, i, 0.2, lost) for i in range(3)]
    for link, http in zip(net.gateway.operators.links, slow, strict=True):
        link.http = http  # type: ignore[assignment]
    net.create("warm", params(9))  # each operator holds the policy: later tasks may queue
    reported = _watch(net)
    for http in slow:
        http.evaluated.clear()

    async def scenario() -> None:
        first = asyncio.ensure_future(net.ask("first", {**params(1), "timeout": 1}))
        await asyncio.sleep(0.01)  # a message in flight to every operator asked
        for n in range(2, 8):  # queued behind it, or sent at once, then given up by the client
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(net.ask(f"gone-{n}", {**params(n), "timeout": 1}), 0.02)
        await first
        await asyncio.sleep(1.2)  # every deadline has passed

    net.run(scenario())
    gc.collect()  # an unread failure is reported when its future is collected
    net.run(asyncio.sleep(0))
    gone = {agent(n).lower() for n in range(2, 8)}
    assert not [a for http in slow for a in http.evaluated if a in gone]
    assert reported == []
    assert _idle(net)
