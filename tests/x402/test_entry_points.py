"""Every x402 entry point that can lead to a signature goes through the one pipeline:
``X402Auth`` (blocking and async clients, ``AsyncGuard``, exact v2/v1, upto, vault) and the
hook for x402's own client (sync and async). See ``tests/integration/test_entry_points.py``."""

from __future__ import annotations

from typing import Any

import pytest

from agentguard import Signer
from agentguard.ledger import Ledger
from agentguard.network.launcher import ReferenceNetwork
from agentguard.x402 import Allowances, receipt
from tests.integration.pipeline_trace import PipelineTrace

from .conftest import AGENT_KEY, ALLOWANCES, connect, connect_async
from .fakes import FakeServer, upto_requirement
from .test_interop_official import POLICY_CLIENT, Peer, chain_peer, official_client  # noqa: F401
from .test_vault_payments import AGENT, Shop, shop  # noqa: F401

URL = "http://shop.test/paid"
TYPED = frozenset({"sign_typed_data"})  # the payee's facilitator (same process) signs txs

SERVERS = {
    "exact v2": lambda: FakeServer(),
    "exact v1": lambda: FakeServer(version=1),
    "upto": lambda: FakeServer(accepts=[upto_requirement()], session="s", charge=5),
}


@pytest.mark.parametrize("kind", sorted(SERVERS))
def test_x402auth_blocking(kind: str, network: ReferenceNetwork) -> None:
    server = SERVERS[kind]()
    auth = connect(network).x402(
        signer=Signer.from_key(AGENT_KEY), ledger=Ledger(), allowances=ALLOWANCES
    )
    with PipelineTrace() as trace, auth.client(transport=server.transport()) as http:
        assert http.get(URL).status_code == 200
        if kind == "upto":  # the session's next request signs nothing
            assert http.get(URL).status_code == 200
    trace.assert_signed_by_pipeline(1)


@pytest.mark.parametrize("kind", sorted(SERVERS))
@pytest.mark.parametrize("guard_kind", ["Guard", "AsyncGuard"])
async def test_x402auth_async(kind: str, guard_kind: str, network: ReferenceNetwork) -> None:
    server = SERVERS[kind]()
    guard: Any = connect(network) if guard_kind == "Guard" else connect_async(network)
    auth = guard.x402(signer=Signer.from_key(AGENT_KEY), ledger=Ledger(), allowances=ALLOWANCES)
    with PipelineTrace() as trace:
        async with auth.async_client(transport=server.async_transport()) as http:
            assert (await http.get(URL)).status_code == 200
    trace.assert_signed_by_pipeline(1)


def test_x402auth_vault(shop: Shop, network: ReferenceNetwork) -> None:  # noqa: F811
    auth = connect(network, shop.vault.address).x402(
        signer=Signer.from_key(AGENT.private_key), ledger=Ledger(),
        allowances=Allowances({shop.token.address: 1_000_000}), vault=shop.vault.address,
    )  # fmt: skip
    with PipelineTrace(TYPED) as trace, auth.client() as http:
        response = http.get(shop.url + "/paid")
    assert response.status_code == 200 and receipt(response) is not None
    trace.assert_signed_by_pipeline(1)


async def test_official_hook_async(chain_peer: Peer, network: ReferenceNetwork) -> None:  # noqa: F811
    from x402.http.clients.httpx import x402HttpxClient

    from agentguard.x402.official_hook import authorization_hook

    ledger = Ledger()
    with PipelineTrace(TYPED) as trace:
        async with connect_async(network, POLICY_CLIENT) as guard:
            hook = authorization_hook(guard, payer=chain_peer.agent, ledger=ledger)
            async with x402HttpxClient(official_client(chain_peer.token.address, hook)) as http:
                assert (await http.get(chain_peer.url + "/paid")).status_code == 200
    trace.assert_gated_by_pipeline(1)
    assert ledger.usage(chain_peer.agent, 3600).count == 1  # the delegated payment counts


def test_official_hook_sync(chain_peer: Peer, network: ReferenceNetwork) -> None:  # noqa: F811
    from eth_account import Account
    from x402 import x402ClientSync
    from x402.http.clients.requests import x402_requests
    from x402.mechanisms.evm import EthAccountSigner
    from x402.mechanisms.evm.exact import register_exact_evm_client

    from agentguard.x402.official_hook import authorization_hook

    with PipelineTrace(TYPED) as trace, connect(network, POLICY_CLIENT) as guard:
        client = x402ClientSync()
        register_exact_evm_client(client, EthAccountSigner(Account.from_key(AGENT_KEY)))
        client.set_spend_controls({"allowed_assets": True})
        client.on_before_payment_creation(authorization_hook(guard, payer=chain_peer.agent))
        with x402_requests(client) as http:
            assert http.get(chain_peer.url + "/paid", timeout=30).status_code == 200
    trace.assert_gated_by_pipeline(1)
