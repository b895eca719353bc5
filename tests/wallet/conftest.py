"""A real chain (anvil, chain id 8453) and a real authorization network for wallet tests.

Each test runs inside an anvil snapshot and with fresh ledger/replay state, so tests do not see
each other's spending; the network's own running totals are per policy client, and each test
that exercises them registers its own client.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from agentguard import Guard, Signer
from agentguard.chain import DEV_ACCOUNTS, Anvil, deploy, load_artifact, transact
from agentguard.ledger import Ledger, Limits, WindowCap
from agentguard.network.launcher import ReferenceNetwork
from agentguard.wallet import GuardedWallet
from tests.keys import numbered_key

OWNER = DEV_ACCOUNTS[0]
AGENT = DEV_ACCOUNTS[1]
PAYEE = DEV_ACCOUNTS[3].address
STRANGER = DEV_ACCOUNTS[5].address
PER_TX_CAP = 5_000_000  # 5 USDC
DAILY_CAP = 12_000_000  # 12 USDC per 24 h at the network
_client_ids = itertools.count(1)


@dataclass
class Chain:
    anvil: Anvil
    w3: Web3
    token: Contract
    factory: Contract


@dataclass
class AuditList:
    """Collects what the wallet reports, in order."""

    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def append(self, kind: str, record: Any) -> None:
        self.records.append((kind, dict(record)))

    @property
    def kinds(self) -> list[str]:
        return [k for k, _ in self.records]


@pytest.fixture(scope="package")
def chain() -> Iterator[Chain]:
    with Anvil() as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        token = deploy(w3, "UsdCoin", sender=OWNER.address)
        factory = deploy(w3, "AgentVaultFactory", sender=OWNER.address)
        transact(w3, token.functions.mint(AGENT.address, 1_000_000_000), sender=OWNER.address)
        yield Chain(anvil, w3, token, factory)


@pytest.fixture
def snapshot(chain: Chain) -> Iterator[Chain]:
    snap = chain.anvil.snapshot()
    try:
        yield chain
    finally:
        chain.anvil.revert(snap)


@pytest.fixture(scope="package")
def network() -> Iterator[ReferenceNetwork]:
    with ReferenceNetwork(operators=3, threshold_percentage=66, timeout=5.0) as net:
        yield net


def policy_params(token: str) -> dict[str, Any]:
    return {
        "max_per_tx": {
            token.lower(): str(PER_TX_CAP),
            "0x0000000000000000000000000000000000000000": "10000000000000000",
        },
        "allowed_recipients": [PAYEE],
        "window_caps": [
            {"asset": token.lower(), "window_seconds": 86400, "max_amount": str(DAILY_CAP)}
        ],
    }


def new_policy_client(
    network: ReferenceNetwork,
    token: str,
    *,
    client: str | None = None,
    expire_after: int = 300,
    owner_key: str | None = None,
) -> tuple[str, str]:
    if client is None:  # an EOA policy client: its own key signs its registration
        owner_key = numbered_key(next(_client_ids), "wallet client")
        client = Signer.from_key(owner_key).address
    address = client
    policy_id = network.register_policy_client(
        address, "agent_spend", policy_params(token), expire_after=expire_after, owner_key=owner_key
    )
    return address, policy_id


def make_wallet(
    chain: Chain,
    network: ReferenceNetwork,
    *,
    policy_client: str,
    ledger: Ledger | None = None,
    limits: Limits | None = None,
    vault: str | None = None,
    audit: Any = None,
) -> GuardedWallet:
    guard = Guard.connect(
        network.url,
        policy_client=policy_client,
        operators=network.operator_addresses,
        api_key=network.api_key,
        policy_id=network.policy_clients[policy_client],
    )
    return GuardedWallet(
        signer=Signer.from_key(AGENT.private_key),
        guard=guard,
        web3=chain.w3,
        ledger=ledger or Ledger(),
        limits=limits or Limits(windows=[WindowCap(chain.token.address, 86400, 10**15)]),
        vault=vault,
        audit=audit,
    )


def create_vault(
    chain: Chain, network: ReferenceNetwork, *, salt: bytes, expire_after: int = 300
) -> tuple[Contract, str]:
    """A vault owned by OWNER for AGENT, guarded by the network's operators (2-of-3)."""
    placeholder = b"\x01" * 32
    receipt = transact(
        chain.w3,
        chain.factory.functions.createVault(
            OWNER.address, AGENT.address, network.operator_addresses, 2, placeholder, salt
        ),
        sender=OWNER.address,
    )
    (event,) = chain.factory.events.VaultCreated().process_receipt(receipt, errors=DISCARD)
    vault = chain.w3.eth.contract(
        address=event["args"]["vault"], abi=load_artifact("AgentVault").abi
    )
    _, policy_id = new_policy_client(
        network,
        chain.token.address,
        client=vault.address,
        expire_after=expire_after,
        owner_key=OWNER.private_key,
    )
    transact(
        chain.w3, vault.functions.setPolicyId(bytes.fromhex(policy_id[2:])), sender=OWNER.address
    )
    transact(chain.w3, chain.token.functions.mint(vault.address, 100_000_000), sender=OWNER.address)
    return vault, policy_id


REPO = Path(__file__).resolve().parents[2]
