"""Red team, ``AsyncGuard.authorize``: only a verifier known to be CPU-only runs on the loop.

``Verifier.blocking`` said False whenever the replay guard was the in-memory one, and a
subclass inherited that: a user's ``Verifier`` subclass whose ``verify`` also asks a remote
deny list (or any I/O) then ran on the event loop, stalling every other coroutine of the
agent for each round trip. Before the fix this test saw ``verify`` run on the loop's thread;
now only ``Verifier`` itself (with the in-memory replay guard) is verified inline, anything
else goes through a worker thread as before the fast path.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from agentguard import Signer, Verifier
from agentguard._intent import PaymentIntent
from agentguard.network import ReferenceNetwork
from tests.x402.conftest import AGENT_KEY, POLICY_CLIENT, connect_async
from tests.x402.fakes import PAYEE, TOKEN


class RemoteChecked(Verifier):
    """A user's verifier that also consults a remote deny list (the I/O is elided)."""

    threads: list[int]

    def verify(self, attestation: Any, intent: Any) -> Any:
        self.threads.append(threading.get_ident())
        return super().verify(attestation, intent)


def test_a_verifier_subclass_is_not_run_on_the_event_loop(network: ReferenceNetwork) -> None:
    payer = Signer.from_key(AGENT_KEY).address
    intent = PaymentIntent(
        payer=payer, scheme="exact", network="eip155:8453", asset=TOKEN, amount=1_000,
        pay_to=PAYEE, resource="http://shop.test/", x402_version=2,
    )  # fmt: skip

    async def run() -> tuple[int, RemoteChecked]:
        guard = connect_async(network)
        verifier = RemoteChecked(
            network.operator_addresses,
            policy_client=POLICY_CLIENT,
            policy_id=network.policy_clients[POLICY_CLIENT],
        )
        verifier.threads = []
        guard.verifier = verifier
        try:
            verified = await guard.authorize(intent)
            assert verified.intent.intent_hash == intent.intent_hash
        finally:
            await guard.aclose()
        return threading.get_ident(), verifier

    loop_thread, verifier = asyncio.run(run())
    assert len(verifier.threads) == 1
    assert verifier.threads[0] != loop_thread, "a subclass's verify ran on the event loop"


def test_the_plain_verifier_still_runs_inline() -> None:
    plain = Verifier([PAYEE], policy_client=POLICY_CLIENT)
    assert plain.blocking is False
    sub = RemoteChecked([PAYEE], policy_client=POLICY_CLIENT)
    assert sub.blocking is True
