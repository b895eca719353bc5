"""Red team: the official x402 hook's leftover attestations (real reference network, the
official ``x402`` client and server peer on anvil 8453)."""

from __future__ import annotations

import time

import pytest
from x402.http.clients.httpx import x402HttpxClient

from agentguard import Signer
from agentguard._exceptions import AttestationReplayed
from agentguard._intent import PaymentIntent
from agentguard.x402._wire import Requirement
from agentguard.x402.exact import client as exact_client
from agentguard.x402.official_hook import authorization_hook
from tests.x402.conftest import AGENT_KEY, connect_async
from tests.x402.test_interop_official import (
    POLICY_CLIENT,
    Peer,
    chain_peer,
    official_client,
)

__all__ = ["chain_peer"]


async def test_the_hooks_attestation_cannot_sign_a_second_payment(
    chain_peer: Peer, network
) -> None:
    """The hook lets x402's own signer pay under an attestation, and keeps the verified
    attestation in ``hook.attestations``. Before: its signing ticket stayed unused, so the
    agentguard ``Signer`` holding the same key signed a second authorization for the same
    attested payment (another nonce: the payee could settle both, the ledger counted one).
    Now the hook uses the ticket up when it lets x402 sign."""
    async with connect_async(network, POLICY_CLIENT) as guard:
        hook = authorization_hook(guard, payer=chain_peer.agent)
        async with x402HttpxClient(official_client(chain_peer.token.address, hook)) as http:
            response = await http.get(chain_peer.url + "/paid")
    assert response.status_code == 200
    (verified,) = hook.attestations  # type: ignore[attr-defined]
    intent = verified.intent
    assert isinstance(intent, PaymentIntent)
    req = Requirement(
        x402_version=2, scheme="exact", network=intent.network, amount=intent.amount,
        asset=intent.asset, pay_to=intent.pay_to, max_timeout_seconds=60,
        extra={"name": "USD Coin", "version": "2"}, resource=intent.resource, raw={},
    )  # fmt: skip
    typed = exact_client.typed_data(
        req, intent.payer, now=int(time.time()), valid_before=verified.expires_at
    )
    with pytest.raises(AttestationReplayed):
        Signer.from_key(AGENT_KEY).sign_payment(verified, typed)
