"""Red team: a vault on a chain the gateway's chain RPC does not serve.

The gateway serves several chain ids (1, 8453, 84532, …) but asks one chain RPC. Before the fix
its usage check asked that RPC about every policy client: for a vault on Ethereum (chain 1)
the Base node saw no code at the address, so the check said "cannot tell", the gateway trusted
the host's release (as it does when the check cannot tell, since no vault could have used it),
gave the amount back at expiry, and the host executed the attestation on its chain-1 vault:
release-then-use past the daily cap with the chain usage check on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from agentguard import Attestation, TransactionIntent
from agentguard.chain import Anvil, deploy, load_artifact, transact
from agentguard.chain.vault import execute_calldata
from agentguard.network.launcher import ReferenceNetwork

from .conftest import NETCHECK, RPC, UNIT, decision, params
from .test_tasks import task_status
from .test_vault_usage import AGENT, OWNER, SHOP, Chain


@pytest.fixture(scope="module")
def base() -> Iterator[Anvil]:
    with Anvil() as anvil:  # 8453: the chain the gateway can ask
        yield anvil


@pytest.fixture(scope="module")
def mainnet() -> Iterator[Chain]:
    with Anvil(chain_id=1) as anvil:  # a chain the gateway serves but cannot ask
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        token = deploy(w3, "UsdCoin", sender=OWNER.address)
        factory = deploy(w3, "AgentVaultFactory", sender=OWNER.address)
        yield Chain(anvil, w3, token, factory)


@pytest.fixture(scope="module")
def network(base: Anvil) -> Iterator[ReferenceNetwork]:
    with ReferenceNetwork(
        operators=3, timeout=5.0, usage_check_rpc=base.url, startup_timeout=180.0
    ) as net:
        yield net


def mainnet_vault(chain: Chain, network: ReferenceNetwork, salt: bytes) -> Contract:
    receipt = transact(
        chain.w3,
        chain.factory.functions.createVault(
            OWNER.address, AGENT.address, network.operator_addresses, 2, b"\x01" * 32, salt
        ),
        sender=OWNER.address,
    )
    (event,) = chain.factory.events.VaultCreated().process_receipt(receipt, errors=DISCARD)
    return chain.w3.eth.contract(
        address=event["args"]["vault"], abi=load_artifact("AgentVault").abi
    )


def test_a_release_on_a_chain_the_gateway_cannot_ask_stays_counted(
    base: Anvil, mainnet: Chain, network: ReferenceNetwork
) -> None:
    """Before the fix: 4 allows under a 12-unit daily cap, 20 units reached the shop."""
    chain = mainnet
    vault = mainnet_vault(chain, network, b"\xa1" * 32)
    config = params(max_per_tx=5 * UNIT, daily_cap=12 * UNIT)
    config["window_caps"][0]["asset"] = chain.token.address
    pid = network.register_policy_client(
        vault.address, NETCHECK, config, expire_after=2, chain_id=1, owner_key=OWNER.private_key
    )
    transact(chain.w3, vault.functions.setPolicyId(bytes.fromhex(pid[2:])), sender=OWNER.address)
    transact(chain.w3, chain.token.functions.mint(vault.address, 100 * UNIT), sender=OWNER.address)
    rpc = RPC(network, network.api_key)
    base_w3 = Web3(Web3.HTTPProvider(base.url))
    outcomes = []
    for _ in range(4):
        intent = TransactionIntent.erc20_transfer(
            sender=vault.address,
            token=chain.token.address,
            recipient=SHOP,
            amount=5 * UNIT,
            chain_id=1,
        )
        result: dict[str, Any] = rpc.create(vault.address, intent)
        outcomes.append(decision(result))
        if outcomes[-1] != "allow":
            continue
        rpc.call("agentguard_releaseTask", {"task_id": result["task_id"]})
        attestation = Attestation.model_validate(result["attestation"])
        chain.w3.eth.wait_for_transaction_receipt(
            chain.w3.eth.send_transaction(
                {
                    "from": AGENT.address,
                    "to": vault.address,
                    "data": "0x" + execute_calldata(intent, attestation).hex(),
                }
            )
        )
        while time.time() < attestation.expires_at + 0.5:
            time.sleep(0.1)
        base_w3.provider.make_request("evm_mine", [])  # Base moves on (it does every 2 s)
        _, outcome = task_status(network, result["task_id"], until="committed")
        assert "cannot be ruled out" in outcome
    assert outcomes == ["allow", "allow", "deny", "deny"]
    assert chain.token.functions.balanceOf(SHOP).call() == 10 * UNIT
