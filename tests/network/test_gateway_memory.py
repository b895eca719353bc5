"""The gateway's idempotency cache: compact encoded answers, bounded by bytes.

Before: it held every successful result as a Python dict (~6 KiB each), up to 50,000 of them
(~300 MiB). Now it holds the answer's JSON bytes as sent and counts them; these tests count
bytes, never time: the bound holds after each insert, the count is exact, and a retry gets
the very bytes the first call got. The last test runs a real gateway and a real operator (on
the lean server, in this process) through hundreds of authorizations.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
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


def _recount(cache: IdempotencyCache) -> int:
    """The bytes the entries hold, counted from scratch."""
    total = 0
    for (key_digest, rpc_id), entry in cache._entries.items():
        answer = entry[2] if isinstance(entry[2], bytes) else b""
        total += ENTRY_OVERHEAD + len(key_digest) + len(rpc_id) + len(answer)
    return total


def test_the_cache_bound_holds_by_bytes_after_every_insert() -> None:
    async def scenario() -> None:
        clock = Clock()
        cache = IdempotencyCache(max_bytes=64 * 1024, ttl=600, clock=clock)
        for i in range(5000):
            key = ("k" * 64, f"id-{i}")
            cache.begin(key, b"f" * 32)
            cache.keep(key, b"x" * (100 + (i * 37) % 3000))  # answers of varied sizes
            assert cache.bytes == _recount(cache)
            assert cache.bytes <= cache.max_bytes
            clock.now += 0.001
        assert 10 < len(cache) < 5000  # bounded by bytes: neither everything nor nothing kept

    asyncio.run(scenario())


def test_a_retry_gets_the_first_answers_bytes_and_a_different_request_is_refused() -> None:
    async def scenario() -> None:
        clock = Clock()
        cache = IdempotencyCache(max_bytes=1 << 20, ttl=600, clock=clock)
        key = ("digest", "id-1")
        future = cache.begin(key, b"one")
        assert cache.lookup(key, b"one") is future  # a concurrent retry waits on it
        cache.keep(key, b'{"status":"success"}')
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
        cache = IdempotencyCache(max_bytes=2 * ENTRY_OVERHEAD + 100, ttl=600, clock=Clock())
        first = ("d", "first")
        cache.begin(first, b"f")
        for i in range(3):
            cache.begin(("d", f"other-{i}"), b"f")
        assert cache.lookup(first, b"f") is None
        cache.keep(first, b"x" * 10_000)
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


def test_a_real_gateway_keeps_its_answers_as_bytes_within_the_bound(
    gateway: tuple[Gateway, asyncio.AbstractEventLoop],
) -> None:
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
    per_answer = len(answers["task-299"])
    assert len(gw.idempotency) < 300  # the bound, not the count, decided what stays
    assert len(gw.idempotency) * (per_answer + ENTRY_OVERHEAD) <= 100_000 + per_answer
    # a retry of a cached id: the very bytes; of a pushed-out one: the recorded task
    again = loop.run_until_complete(gw.dispatch(key, "task-299", "newt_createTask", _params(299)))
    assert again.data == answers["task-299"]
    early = loop.run_until_complete(gw.dispatch(key, "task-0", "newt_createTask", _params(0)))
    assert json.loads(early.data) == json.loads(answers["task-0"])
    totals = gw.state.totals(
        policy_client=CLIENT,
        agent="0x" + f"{0xBB0000:040x}",
        windows=(86400,),
        now=int(time.time()),
    )
    assert totals[86400].count == 1  # counted once: the retry re-ran nothing
