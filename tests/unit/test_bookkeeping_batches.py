"""The gateway client's batched commits (``agentguard_commitTasks``) and the bookkeeping worker
that sends them.

Before the fix one -32601 from the gateway turned batching off for the client's lifetime (a
gateway upgraded later, or a proxy that answered once for it, got every commit one by one for
good); now the batch method is tried again after ``BATCH_REPROBE`` seconds. A commit queued
while the worker waits out a failed call's backoff goes within its linger, not after the
backoff, and the failed call is still retried, each task sent once per round."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from agentguard import AsyncNewtonGateway, NewtonGateway
from agentguard import _gateway as gateway_module
from agentguard._exceptions import GatewayRPCError, GatewayUnavailable
from agentguard.pipeline._bookkeeping import AsyncBookkeeper, Bookkeeper
from agentguard.pipeline._steps import GatewayCommit

MINE = "0x" + "5d" * 20
T1, T2, T3 = (f"0x{i:064x}" for i in (1, 2, 3))
LANDED = {
    "results": [{"task_id": T1, "status": "committed"}, {"task_id": T2, "status": "committed"}]
}


class _Upgraded:
    """A gateway that knows no ``agentguard_commitTasks`` for its first ``old`` answers."""

    def __init__(self, old: int) -> None:
        self.old, self.methods = old, []  # type: int, list[str]

    def __call__(self, method: str, params: Any) -> Any:
        self.methods.append(method)
        if method == "agentguard_commitTasks":
            if self.old > 0:
                self.old -= 1
                raise GatewayRPCError("unknown method", code=-32601)
            return LANDED
        return {"task_id": params["task_id"], "status": "committed"}


def _client(rpc: _Upgraded) -> NewtonGateway:
    gateway = NewtonGateway(
        "http://127.0.0.1:9/rpc", api_key="k", policy_client=MINE, bookkeeping=True
    )
    gateway._rpc = rpc  # type: ignore[method-assign]
    return gateway


ONE_BY_ONE = ["agentguard_commitTask"] * 2


@pytest.mark.parametrize("reprobe", [True, False])
def test_batches_are_tried_again_after_a_method_not_found(
    reprobe: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if reprobe:
        monkeypatch.setattr(gateway_module, "BATCH_REPROBE", -1.0)  # the interval is over
    rpc = _Upgraded(old=1)
    gateway = _client(rpc)
    try:
        for _ in range(2):
            assert gateway.commit_many([(T1, "x"), (T2, "y")]) == [None, None]
        again = ["agentguard_commitTasks"] if reprobe else ONE_BY_ONE
        assert rpc.methods == ["agentguard_commitTasks", *ONE_BY_ONE, *again]
    finally:
        gateway.close()


@pytest.mark.parametrize("reprobe", [True, False])
async def test_async_batches_are_tried_again_after_a_method_not_found(
    reprobe: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if reprobe:
        monkeypatch.setattr(gateway_module, "BATCH_REPROBE", -1.0)
    rpc = _Upgraded(old=1)
    gateway = AsyncNewtonGateway(
        "http://127.0.0.1:9/rpc", api_key="k", policy_client=MINE, bookkeeping=True
    )

    async def answer(method: str, params: Any) -> Any:
        return rpc(method, params)

    gateway._rpc = answer  # type: ignore[method-assign]
    try:
        for _ in range(2):
            assert await gateway.commit_many([(T1, "x"), (T2, "y")]) == [None, None]
        again = ["agentguard_commitTasks"] if reprobe else ONE_BY_ONE
        assert rpc.methods == ["agentguard_commitTasks", *ONE_BY_ONE, *again]
    finally:
        await gateway.aclose()


def test_another_error_to_the_batch_is_the_whole_calls_answer() -> None:
    gateway = _client(_Upgraded(old=0))

    def refuse(method: str, params: Any) -> Any:
        raise GatewayRPCError("too many", code=-32602)

    gateway._rpc = refuse  # type: ignore[method-assign]
    try:
        with pytest.raises(GatewayRPCError, match="too many"):
            gateway.commit_many([(T1, "x"), (T2, "y")])
        assert gateway._batches()  # still batching
    finally:
        gateway.close()


class _Down:
    """Commits of ``T1`` meet a gateway that is down; others land. Counts each call."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.landed = threading.Event()

    def commit(self, task_id: str, outcome: str) -> None:
        self.calls.append(task_id)
        if task_id == T1:
            raise GatewayUnavailable("down (test)")
        self.landed.set()


class _Holder:
    def __init__(self, authorizer: Any) -> None:
        self.authorizer = authorizer


def test_a_commit_queued_during_a_retry_backoff_goes_without_waiting_for_it() -> None:
    down = _Down()
    holder = _Holder(down)
    book = Bookkeeper(holder)
    book.backoff = 3600.0  # the failed call's next round is an hour away
    book.submit(GatewayCommit(T1, "x"))
    for _ in range(1000):
        if down.calls:
            break
        time.sleep(0.01)
    book.submit(GatewayCommit(T2, "y"))
    assert down.landed.wait(30)
    for _ in range(3000):  # the worker marks T2 done just after its call returned
        if book.pending == 1:
            break
        time.sleep(0.01)
    assert down.calls == [T1, T2]  # each sent once; T1 waits for its round
    assert book.pending == 1


async def test_an_async_commit_queued_during_a_retry_backoff_goes_without_waiting_for_it() -> None:
    down = _Down()
    holder = _Holder(down)
    book = AsyncBookkeeper(holder)
    book.backoff = 3600.0
    book.submit(GatewayCommit(T1, "x"))
    while not down.calls:
        await asyncio.sleep(0.01)
    book.submit(GatewayCommit(T2, "y"))
    assert await asyncio.to_thread(down.landed.wait, 30)
    for _ in range(3000):
        if book.pending == 1:
            break
        await asyncio.sleep(0.01)
    assert down.calls == [T1, T2]
    assert book.pending == 1
