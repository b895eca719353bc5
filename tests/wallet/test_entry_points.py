"""Every wallet entry point that can lead to a signature goes through the one pipeline.

(The complete list, and the static proof that only the pipeline's ports call the signer, is in
``tests/integration/test_entry_points.py``.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agentguard import AsyncGuard, Guard, Signer, TransactionIntent
from agentguard.ledger import Ledger, Limits
from agentguard.wallet import AsyncGuardedWallet, GuardedWallet
from tests.integration.pipeline_trace import PipelineTrace

from .conftest import AGENT, PAYEE, create_vault, new_policy_client


def _parts(chain: Any, network: Any, client: str) -> dict[str, Any]:
    return {
        "signer": Signer.from_key(AGENT.private_key),
        "web3": chain.w3,
        "ledger": Ledger(),
        "limits": Limits(),
    }


def _connect(cls: Any, network: Any, client: str) -> Any:
    return cls.connect(
        network.url, policy_client=client, operators=network.operator_addresses,
        api_key=network.api_key, policy_id=network.policy_clients[client],
    )  # fmt: skip


def _intent(wallet: Any, chain: Any) -> TransactionIntent:
    return TransactionIntent.erc20_transfer(
        sender=wallet.account, token=chain.token.address, recipient=PAYEE, amount=3, chain_id=8453
    )


SYNC: dict[str, Callable[[GuardedWallet, Any], Any]] = {
    "transfer ERC-20": lambda w, c: w.transfer(PAYEE, 1, asset=c.token.address),
    "transfer ETH": lambda w, c: w.transfer(PAYEE, 10**12),
    "call": lambda w, c: w.call(c.token.address, "transfer(address,uint256)", [PAYEE, 2]),
    "send": lambda w, c: w.send(_intent(w, c)),
}


@pytest.mark.parametrize("path", sorted(SYNC))
@pytest.mark.parametrize("mode", ["eoa", "vault"])
def test_guarded_wallet(snapshot, network, path: str, mode: str) -> None:
    chain = snapshot
    if mode == "vault":
        vault, _ = create_vault(chain, network, salt=bytes([len(path)]) * 32)
        client, options = vault.address, {"vault": vault.address}
        chain.w3.eth.send_transaction({"from": AGENT.address, "to": vault.address, "value": 10**15})
    else:
        client, options = new_policy_client(network, chain.token.address)[0], {}
    wallet = _connect(Guard, network, client).wallet(**_parts(chain, network, client), **options)
    with PipelineTrace() as trace:
        SYNC[path](wallet, chain)
    trace.assert_signed_by_pipeline(1)


ASYNC: dict[str, Callable[[AsyncGuardedWallet, Any], Any]] = {
    "transfer": lambda w, c: w.transfer(PAYEE, 1, asset=c.token.address),
    "call": lambda w, c: w.call(c.token.address, "transfer(address,uint256)", [PAYEE, 2]),
    "send": lambda w, c: w.send(_intent(w, c)),
}


@pytest.mark.parametrize("path", sorted(ASYNC))
@pytest.mark.parametrize("built", ["AsyncGuardedWallet(wallet)", "AsyncGuard.wallet"])
async def test_async_guarded_wallet(snapshot, network, path: str, built: str) -> None:
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    if built == "AsyncGuard.wallet":
        wallet = _connect(AsyncGuard, network, client).wallet(**_parts(chain, network, client))
    else:
        sync = GuardedWallet(
            guard=_connect(Guard, network, client), **_parts(chain, network, client)
        )
        wallet = AsyncGuardedWallet(sync)
    with PipelineTrace() as trace:
        await ASYNC[path](wallet, chain)
    trace.assert_signed_by_pipeline(1)
