"""Red team: AsyncGuard with NewtonVerifier against a slow or hostile RPC node."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import pytest
from web3 import Web3
from web3.providers.base import BaseProvider

from agentguard import AsyncGuard
from agentguard._attestation import Attestation
from agentguard._exceptions import AgentGuardError
from agentguard.newton import NewtonVerifier
from agentguard.newton._certificate import BN254Certificate
from tests.newton.newton_quorum import attestation_for, newton_result
from tests.newton.test_newton_verifier import CLIENT, INTENT, POLICY_ID

WAIT = 2.0  # seconds the stalled RPC waits for the event loop to run another coroutine


class StalledRpc(BaseProvider):
    """An RPC that answers only after the agent's event loop has run another coroutine (or
    gives up after ``WAIT`` seconds): what a slow or hostile node looks like to the loop."""

    def __init__(self) -> None:
        super().__init__()
        self.called = threading.Event()
        self.loop_ran = threading.Event()
        self.loop_was_free = False

    def make_request(self, method: Any, params: Any) -> Any:
        self.called.set()
        self.loop_was_free = self.loop_ran.wait(WAIT)
        raise ConnectionError("node gave up")

    def is_connected(self, show_traceback: bool = False) -> bool:
        return True


class Authorizer:
    def __init__(self, attestation: Attestation) -> None:
        self.attestation = attestation

    async def authorize(self, intent: Any, *, wasm_args: Any = None) -> Attestation:
        return self.attestation


def _attestation() -> Attestation:
    result = newton_result(
        INTENT,
        policy_client=CLIENT,
        policy_id=POLICY_ID,
        task_id=os.urandom(32),
        expiration=10**6,
        task_created_block=1,
    )
    cert = BN254Certificate(1, b"\x00" * 32, (1, 2), ((0, 0), (0, 0)), ())
    return attestation_for({**result, "signature_data": "0x" + cert.encode().hex()}, INTENT)


def test_newton_async_guard_does_not_block_the_event_loop_on_the_rpc() -> None:
    """Attack (slow or hostile RPC): the node takes its time answering ``eth_chainId``,
    ``eth_getBlockByNumber`` and the ``eth_call``s. ``AsyncGuard.authorize`` awaits the
    gateway, then calls the synchronous verifier inline: the event loop is frozen for every
    round trip (web3's default HTTP timeout is tens of seconds), so an async agent's other
    tasks (heartbeats, other payments, the x402 server it serves) stop. Expected: the
    verification runs off the loop (``asyncio.to_thread``), like the blocking ports do.
    Before the fix this attack froze the loop (the test was a strict xfail)."""
    rpc = StalledRpc()
    verifier = NewtonVerifier(
        policy_client=CLIENT,
        web3=Web3(rpc),
        policy_id="0x" + POLICY_ID.hex(),
        certificate_verifier="0x" + "11" * 20,
        source_avs="0x" + "22" * 20,
    )
    guard = AsyncGuard(Authorizer(_attestation()), verifier)

    async def heartbeat() -> None:
        while not rpc.called.is_set():
            await asyncio.sleep(0.01)
        rpc.loop_ran.set()

    async def main() -> None:
        beat = asyncio.create_task(heartbeat())
        with pytest.raises(AgentGuardError):
            await guard.authorize(INTENT)
        await beat

    asyncio.run(main())
    assert rpc.loop_was_free, "the event loop was blocked while the RPC was asked"
