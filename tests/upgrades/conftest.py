"""Real parts for safe upgrades: anvil (chain id 8453) with a token and the vault factory, and
the reference network whose gateway and operators read the chain (``usage_check_rpc``), so
they evaluate a vault under the registration whose policy id it pins.

The chain is shared and never reverted (the network's records would then disagree with it):
each test makes its own vaults, at fresh salts. Its clock starts two days behind the wall clock
(the gateway's), so tests can skip a vault's policy delay (``evm_increaseTime``) and still
execute attestations the gateway stamps with its own time.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError

from agentguard import Attestation, TransactionIntent
from agentguard.chain import DEV_ACCOUNTS, Anvil, deploy, transact
from agentguard.chain.owner import create_vault, set_policy_delay
from agentguard.chain.vault import execute_calldata
from agentguard.network.launcher import ReferenceNetwork
from agentguard.network.pins import PIN_TTL
from agentguard.policies import policy_id
from agentguard.wallet._revert import decode_revert, revert_data
from tests.network.conftest import NETCHECK, RPC, UNIT, params

OWNER, AGENT, NEW_OWNER = DEV_ACCOUNTS[0], DEV_ACCOUNTS[1], DEV_ACCOUNTS[2]
SHOP = "0x3333333333333333333333333333333333333333"
LOOSE = params(max_per_tx=5 * UNIT)
TIGHT = params(max_per_tx=1 * UNIT)
_salts = itertools.count(1)

__all__ = [
    "AGENT",
    "LOOSE",
    "NETCHECK",
    "NEW_OWNER",
    "OWNER",
    "SHOP",
    "TIGHT",
    "UNIT",
    "Chain",
    "ask",
    "execute",
    "new_vault",
    "pin_read_again",
]


@dataclass
class Chain:
    anvil: Anvil
    w3: Web3
    token: Contract
    factory: Contract


@pytest.fixture(scope="package")
def chain() -> Iterator[Chain]:
    with Anvil(args=["--timestamp", str(int(time.time()) - 2 * 86400)]) as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        token = deploy(w3, "UsdCoin", sender=OWNER.address)
        factory = deploy(w3, "AgentVaultFactory", sender=OWNER.address)
        yield Chain(anvil, w3, token, factory)


@pytest.fixture(scope="package")
def network(chain: Chain) -> Iterator[ReferenceNetwork]:
    """Gateway and operators with the chain RPC: they read each vault's ``policyId()``."""
    with ReferenceNetwork(
        operators=3, timeout=5.0, usage_check_rpc=chain.anvil.url, startup_timeout=180.0
    ) as net:
        yield net


def new_vault(
    chain: Chain,
    network: ReferenceNetwork,
    config: dict[str, Any] = LOOSE,
    *,
    delay: int = 0,
    register: bool = True,
    fund: bool = True,
) -> Contract:
    """A vault owned by OWNER for AGENT (2 of the network's 3 operators), pinning NETCHECK with
    ``config``, registered with the network by its owner, holding 100 units."""
    salt = next(_salts).to_bytes(32, "big")
    address = chain.factory.functions.predictVault(OWNER.address, salt).call()
    vault = create_vault(
        chain.w3,
        chain.factory,
        owner=OWNER.address,
        agent=AGENT.address,
        operators=network.operator_addresses,
        threshold=2,
        policy_id=policy_id(address, NETCHECK, config, 300),
        salt=salt,
        sender=OWNER.address,
    )
    if register:
        network.register_policy_client(vault.address, NETCHECK, config, owner_key=OWNER.private_key)
    if fund:
        transact(
            chain.w3, chain.token.functions.mint(vault.address, 100 * UNIT), sender=OWNER.address
        )
    if delay:
        set_policy_delay(chain.w3, vault, delay, sender=OWNER.address)
    return vault


def ask(
    chain: Chain, network: ReferenceNetwork, vault: Contract, amount: int
) -> tuple[TransactionIntent, dict[str, Any]]:
    """One task for a transfer of ``amount`` from the vault to SHOP (the gateway's answer)."""
    intent = TransactionIntent.erc20_transfer(
        sender=vault.address,
        token=chain.token.address,
        recipient=SHOP,
        amount=amount,
        chain_id=8453,
    )
    return intent, RPC(network, network.api_key).create(vault.address, intent)


def execute(
    chain: Chain, vault: Contract, intent: TransactionIntent, result: dict[str, Any]
) -> str:
    """The agent executes the attested transfer on the vault: ``"ok"`` or the vault's reason."""
    attestation = Attestation.model_validate(result["attestation"])
    tx = {
        "from": AGENT.address,
        "to": vault.address,
        "data": "0x" + execute_calldata(intent, attestation).hex(),
    }
    try:
        chain.w3.eth.call(tx)  # type: ignore[arg-type]
    except ContractLogicError as exc:
        return decode_revert(revert_data(exc))
    receipt = chain.w3.eth.wait_for_transaction_receipt(chain.w3.eth.send_transaction(tx))  # type: ignore[arg-type]
    assert receipt["status"] == 1
    return "ok"


def pin_read_again() -> None:
    """Wait out the network's cache of a vault's pin (``PIN_TTL``), so its next task reads
    the chain again."""
    time.sleep(PIN_TTL + 0.3)
