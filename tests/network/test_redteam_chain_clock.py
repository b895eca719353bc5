"""Red team: a chain whose clock lags the gateway's.

The vault accepts an attestation while ``block.timestamp < expiresAt``; the gateway's sweep
settles a released attestation once *its own* clock passes ``expiresAt``. On a chain whose
blocks are stamped behind the gateway's clock (a lagging sequencer, a gateway clock running
ahead, here anvil set 120 s back), the sweep used to read ``taskUsed == false`` at gateway
expiry, give the amount back, and the host then executed the attestation on its vault anyway:
release-then-use past the daily cap, with the chain usage check on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from web3 import Web3

from agentguard import Attestation, TransactionIntent
from agentguard.chain import Anvil, deploy, transact
from agentguard.chain.vault import execute_calldata
from agentguard.network.launcher import ReferenceNetwork

from .conftest import RPC, UNIT, decision
from .test_tasks import task_status
from .test_vault_usage import AGENT, OWNER, SHOP, Chain, create_vault

LAG = 120


@pytest.fixture(scope="module")
def lagging_chain() -> Iterator[Chain]:
    with Anvil() as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        w3.provider.make_request("evm_setTime", [int(time.time()) - LAG])  # type: ignore[arg-type]
        token = deploy(w3, "UsdCoin", sender=OWNER.address)
        factory = deploy(w3, "AgentVaultFactory", sender=OWNER.address)
        yield Chain(anvil, w3, token, factory)


@pytest.fixture(scope="module")
def network(lagging_chain: Chain) -> Iterator[ReferenceNetwork]:
    with ReferenceNetwork(
        operators=3, timeout=5.0, usage_check_rpc=lagging_chain.anvil.url, startup_timeout=180.0
    ) as net:
        yield net


def _status(network: ReferenceNetwork, task_id: str) -> str:
    import sqlite3

    db = sqlite3.connect(network.state_dir / "state.sqlite3")
    try:
        row = db.execute("SELECT status FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return str(row[0])
    finally:
        db.close()


def test_a_release_is_not_given_back_while_the_chain_still_accepts_it(
    lagging_chain: Chain, network: ReferenceNetwork
) -> None:
    """Before the fix: 4 allows under a 12-unit daily cap (5 per task), each released, given
    back by the sweep at gateway expiry and then executed on the vault: 20 units moved."""
    chain = lagging_chain
    vault = create_vault(chain, network, b"\x91" * 32)  # 12/day, 5/tx, 2 s attestations
    rpc = RPC(network, network.api_key)
    outcomes, tasks = [], []
    for _ in range(4):
        intent = TransactionIntent.erc20_transfer(
            sender=vault.address,
            token=chain.token.address,
            recipient=SHOP,
            amount=5 * UNIT,
            chain_id=8453,
        )
        result: dict[str, Any] = rpc.create(vault.address, intent)
        outcomes.append(decision(result))
        if outcomes[-1] != "allow":
            continue
        tasks.append(result["task_id"])
        rpc.call("agentguard_releaseTask", {"task_id": result["task_id"]})
        attestation = Attestation.model_validate(result["attestation"])
        # past expiry by the gateway's clock, with several sweeps in between
        while time.time() < attestation.expires_at + 3:
            time.sleep(0.2)
        assert _status(network, result["task_id"]) == "releasing"
        receipt = chain.w3.eth.wait_for_transaction_receipt(
            chain.w3.eth.send_transaction(
                {
                    "from": AGENT.address,
                    "to": vault.address,
                    "data": "0x" + execute_calldata(intent, attestation).hex(),
                }
            )
        )
        assert receipt["status"] == 1  # the lagging chain still accepts it
    assert outcomes == ["allow", "allow", "deny", "deny"]
    assert chain.token.functions.balanceOf(SHOP).call() == 10 * UNIT
    # once the chain's clock passes the expiry, the usage check settles: used, counted
    chain.w3.provider.make_request("evm_setTime", [int(time.time()) + 5])  # type: ignore[arg-type]
    transact(chain.w3, chain.token.functions.mint(OWNER.address, 1), sender=OWNER.address)
    for task_id in tasks:
        assert task_status(network, task_id, until="committed")[1] == "used (usage check)"
