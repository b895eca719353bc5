"""The gateway's idempotency cache: compact encoded answers, bounded by bytes.

Before: it held every successful result as a Python dict (~6 KiB each), up to 50,000 of them
(~300 MiB). Now it holds the answer's JSON bytes as sent and counts them; these tests count
bytes, never time: the bound holds after each insert, the count is exact, and a retry gets
the very bytes the first call got. The last test runs a real gateway and a real operator (on
the lean server, in this process) through hundreds of authorizations.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard import TransactionIntent
from agentguard._attestation import operator_address
from agentguard.network import _server
from agentguard.network._keys import api_key_digest
from agentguard.network._rpc import RPCError
from agentguard.network.config import ApiKeyEntry, GatewaySettings, NetworkConfig, OperatorEntry
from agentguard.network.gateway import Gateway
from agentguard.network.gateway._idempotency import ENTRY_OVERHEAD, IdempotencyCache
from agentguard.network.operator import Operator, create_app
from agentguard.network.registration import Registration
from agentguard.network.registry import Registry
from agentguard.network.state import State
from agentguard.policies import load

API_KEY = "agk_memory_test_7a1b2c3d4e5f6a7b"
TOKEN = "optok_memory_9c8b7a6f5e4d3c2b"
OWNER = PrivateKey(b"\x17" * 32)
OPERATOR_KEY = PrivateKey(b"\x19" * 32)
CLIENT = operator_address(OWNER)
USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
SHOP = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
POLICY = load("agent_spend")
PARAMS = {
    "max_per_tx": {USDC.lower(): "5000000"},
    "allowed_recipients": [SHOP],
    "window_caps": [{"asset": USDC.lower(), "window_seconds": 86400, "max_amount": "12000000"}],
}
REGISTRATION = Registration.sign(
    OWNER,
    policy_client=CLIENT,
    policy=POLICY,
    params=PARAMS,
    expire_after=300,
    chain_id=8453,
    version=1,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


DENY: dict[str, Any] = {"status": "success", "attestation": {"decision": "deny"}}


def _nothing(task_id: str) -> None:
    return None


def _recount(cache: IdempotencyCache) -> int:
    """The bytes the entries hold, counted from scratch."""
    total = 0
    for (key_digest, rpc_id), entry in cache._entries.items():
        value = entry[2] if isinstance(entry[2], (bytes, str)) else b""
        total += ENTRY_OVERHEAD + len(key_digest) + len(rpc_id) + len(value)
    return total


def test_the_cache_bound_holds_by_bytes_after_every_insert() -> None:
    async def scenario() -> None:
        clock = Clock()
        cache = IdempotencyCache(max_bytes=64 * 1024, ttl=600, clock=clock, recorded=_nothing)
        for i in range(5000):
            key = ("k" * 64, f"id-{i}")
            cache.begin(key, b"f" * 32)
            cache.keep(key, b"x" * (100 + (i * 37) % 3000), DENY)  # answers of varied sizes
            assert cache.bytes == _recount(cache)
            assert cache.bytes <= cache.max_bytes
            clock.now += 0.001
        assert 10 < len(cache) < 5000  # bounded by bytes: neither everything nor nothing kept

    asyncio.run(scenario())


def test_a_retry_gets_the_first_answers_bytes_and_a_different_request_is_refused() -> None:
    async def scenario() -> None:
        clock = Clock()
        cache = IdempotencyCache(max_bytes=1 << 20, ttl=600, clock=clock, recorded=_nothing)
        key = ("digest", "id-1")
        future = cache.begin(key, b"one")
        assert cache.lookup(key, b"one") is future  # a concurrent retry waits on it
        cache.keep(key, b'{"status":"success"}', DENY)
        assert cache.lookup(key, b"one") == b'{"status":"success"}'
        with pytest.raises(RPCError, match="already used for a different request"):
            cache.lookup(key, b"two")
        clock.now += 601
        assert cache.lookup(key, b"one") is None  # expired
        cache.drop(key)
        assert cache.bytes == 0 and len(cache) == 0

    asyncio.run(scenario())


def test_an_entry_pushed_out_while_in_flight_is_not_counted_when_it_finishes() -> None:
    """The answer of a pushed-out in-flight entry must not be added to the count (the bytes
    would be counted but held by nobody, or held uncounted)."""

    async def scenario() -> None:
        cache = IdempotencyCache(
            max_bytes=2 * ENTRY_OVERHEAD + 100, ttl=600, clock=Clock(), recorded=_nothing
        )
        first = ("d", "first")
        cache.begin(first, b"f")
        for i in range(3):
            cache.begin(("d", f"other-{i}"), b"f")
        assert cache.lookup(first, b"f") is None
        cache.keep(first, b"x" * 10_000, DENY)
        assert cache.bytes == _recount(cache) <= cache.max_bytes

    asyncio.run(scenario())


@pytest.fixture
def gateway() -> Iterator[tuple[Gateway, asyncio.AbstractEventLoop]]:
    with tempfile.TemporaryDirectory() as tmp:
        token_file = Path(tmp) / "operator.token"
        token_file.write_text(TOKEN)
        loop = asyncio.new_event_loop()
        operator = Operator(OPERATOR_KEY, Registry(":memory:"))
        ports: list[int] = []
        server = loop.create_task(
            _server.serve(create_app(operator, token=TOKEN), "127.0.0.1", 0, ready=ports.append)
        )
        loop.run_until_complete(asyncio.sleep(0.05))
        assert ports and not server.done()
        config = NetworkConfig(
            gateway=GatewaySettings(timeout=10.0, threshold_percentage=100),
            operators=(
                OperatorEntry(
                    address=operator_address(OPERATOR_KEY),
                    url=f"http://127.0.0.1:{ports[0]}/rpc",
                    token_file=str(token_file),
                ),
            ),
            api_keys=(ApiKeyEntry(sha256=api_key_digest(API_KEY), admin=True),),
        )
        state = State(Path(tmp) / "state.sqlite3")
        gw = Gateway(config, state, idempotency_bytes=100_000)
        gw.register({"registration": REGISTRATION.to_json(), "policy": "agent_spend"})
        yield gw, loop
        server.cancel()
        loop.run_until_complete(gw.close())
        loop.run_until_complete(asyncio.gather(server, return_exceptions=True))
        loop.close()
        state.close()


def _params(agent_index: int) -> dict[str, Any]:
    intent = TransactionIntent.erc20_transfer(
        sender="0x" + f"{0xBB0000 + agent_index:040x}",
        token=USDC,
        recipient=SHOP,
        amount=1_000_000,
        chain_id=8453,
    )
    return {"policy_client": CLIENT, "intent": intent.wire(), "timeout": 10}


def test_a_real_gateway_keeps_allows_by_task_id_and_retries_get_the_first_bytes(
    gateway: tuple[Gateway, asyncio.AbstractEventLoop],
) -> None:
    """Every retry, whether its entry is still cached (answer rebuilt from the durable record)
    or pushed out (the durable record found by ``_create_task``), gets the byte-identical
    first answer; a reused id with a different request is refused while it is cached."""
    gw, loop = gateway
    key = gw.authenticate(f"Bearer {API_KEY}")
    answers: dict[str, bytes] = {}

    async def authorize(i: int) -> None:
        answer = await gw.dispatch(key, f"task-{i}", "newt_createTask", _params(i))
        answers[f"task-{i}"] = answer.data
        assert json.loads(answer.data)["attestation"]["decision"] == "allow"
        assert gw.idempotency.bytes == _recount(gw.idempotency) <= 100_000

    for i in range(300):
        loop.run_until_complete(authorize(i))
    cached = [k for k in answers if (key.sha256, k) in gw.idempotency._entries]
    assert 20 < len(cached) < 300  # the bound, not the count, decided what stays
    assert all(isinstance(gw.idempotency._entries[key.sha256, k][2], str) for k in cached)
    for i in range(300):  # cached ones and pushed-out ones alike
        again = loop.run_until_complete(
            gw.dispatch(key, f"task-{i}", "newt_createTask", _params(i))
        )
        assert again.data == answers[f"task-{i}"]
    with pytest.raises(RPCError, match="already used for a different request"):
        loop.run_until_complete(gw.dispatch(key, cached[-1], "newt_createTask", _params(7)))
    totals = gw.state.totals(
        policy_client=CLIENT,
        agent="0x" + f"{0xBB0000:040x}",
        windows=(86400,),
        now=int(time.time()),
    )
    assert totals[86400].count == 1  # counted once: the retries re-ran nothing


def test_concurrent_retries_wait_on_the_first_and_get_its_bytes(
    gateway: tuple[Gateway, asyncio.AbstractEventLoop],
) -> None:
    gw, loop = gateway
    key = gw.authenticate(f"Bearer {API_KEY}")

    async def burst() -> list[bytes]:
        calls = [gw.dispatch(key, "same-id", "newt_createTask", _params(5)) for _ in range(8)]
        return [a.data for a in await asyncio.gather(*calls)]

    answers = loop.run_until_complete(burst())
    assert len(set(answers)) == 1
    assert json.loads(answers[0])["attestation"]["decision"] == "allow"
    totals = gw.state.totals(
        policy_client=CLIENT,
        agent="0x" + f"{0xBB0000 + 5:040x}",
        windows=(86400,),
        now=int(time.time()),
    )
    assert totals[86400].count == 1


def test_a_deny_is_kept_as_its_bytes_and_a_retry_gets_them(
    gateway: tuple[Gateway, asyncio.AbstractEventLoop],
) -> None:
    """The state holds no ``deny``: its answer stays in the cache as bytes."""
    gw, loop = gateway
    key = gw.authenticate(f"Bearer {API_KEY}")
    params = _params(9)
    params["intent"] = dict(params["intent"])
    too_much = TransactionIntent.erc20_transfer(
        sender="0x" + f"{0xBB0000 + 9:040x}",
        token=USDC,
        recipient=SHOP,
        amount=9_000_000,
        chain_id=8453,
    )
    params["intent"] = too_much.wire()
    first = loop.run_until_complete(gw.dispatch(key, "deny-1", "newt_createTask", params))
    assert json.loads(first.data)["attestation"]["decision"] == "deny"
    assert gw.idempotency._entries[key.sha256, "deny-1"][2] == first.data
    again = loop.run_until_complete(gw.dispatch(key, "deny-1", "newt_createTask", params))
    assert again.data == first.data


def test_what_the_cache_counts_covers_what_it_holds() -> None:
    """``ENTRY_OVERHEAD`` is honest: the memory ``tracemalloc`` sees the cache allocate for
    its entries (as the gateway fills it: fresh key strings, a fingerprint, a task id) is no
    more than the bytes it counts them at."""

    async def scenario() -> tuple[int, int]:
        cache = IdempotencyCache(max_bytes=1 << 30, ttl=600, clock=Clock(), recorded=_nothing)
        digest = "d" * 64
        allow = {"attestation": {"decision": "allow"}}
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(5000):
            key = (digest, str(uuid.UUID(int=i)))
            cache.begin(key, hashlib.sha256(key[1].encode()).digest())
            cache.keep(key, b"", allow | {"task_id": "0x" + f"{i:064x}"})
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        return used, cache.bytes

    used, counted = asyncio.run(scenario())
    assert used <= counted


def test_a_real_records_chain_is_its_intents(
    gateway: tuple[Gateway, asyncio.AbstractEventLoop],
) -> None:
    """The sweep judges a released task on the chain ``State.task_chain`` reads from the
    record the gateway really writes (compact, its intent in the task's own part)."""
    gw, loop = gateway
    key = gw.authenticate(f"Bearer {API_KEY}")
    answer = loop.run_until_complete(gw.dispatch(key, "chain", "newt_createTask", _params(9)))
    task_id = json.loads(answer.data)["task_id"]
    stored = gw.state._stored(task_id)
    assert stored is not None and stored[1] is not None  # the compact form
    assert gw.state.task_chain(task_id) == 8453
