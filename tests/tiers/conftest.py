"""A real chain (anvil, chain id 8453) and a real reference network (3 operators, 2-of-3) for
trust tiers. Each test registers its own policy client, so running totals never mix."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
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

OWNER = DEV_ACCOUNTS[0]
AGENT = DEV_ACCOUNTS[1]
PAYEE = DEV_ACCOUNTS[3].address
STRANGER = DEV_ACCOUNTS[5]
USDC = 10**6
_clients = itertools.count(1)


@dataclass
class Chain:
    anvil: Anvil
    w3: Web3
    token: Contract
    factory: Contract

    def balance(self, who: str) -> int:
        return int(self.token.functions.balanceOf(who).call())


@dataclass
class AuditList:
    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def append(self, kind: str, record: Any) -> None:
        self.records.append((kind, dict(record)))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [r for k, r in self.records if k == kind]


@pytest.fixture(scope="package")
def chain() -> Iterator[Chain]:
    with Anvil() as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        token = deploy(w3, "UsdCoin", sender=OWNER.address)
        factory = deploy(w3, "AgentVaultFactory", sender=OWNER.address)
        transact(w3, token.functions.mint(AGENT.address, 10_000 * USDC), sender=OWNER.address)
        yield Chain(anvil, w3, token, factory)


@pytest.fixture(scope="package")
def network() -> Iterator[ReferenceNetwork]:
    with ReferenceNetwork(operators=3, threshold_percentage=66, timeout=5.0) as net:
        yield net


def tier_params(token: str, tiers: dict[str, int] | None = None) -> dict[str, Any]:
    """agent_spend with a 1,000 USDC cap and, per tier name, the USDC amount above which an
    action needs it."""
    params: dict[str, Any] = {
        "max_per_tx": {token.lower(): str(1_000 * USDC)},
        "allowed_recipients": [PAYEE],
    }
    if tiers:
        params["tiers"] = {n: {token.lower(): str(a * USDC)} for n, a in tiers.items()}
    return params


STANDARD_TIERS = {"high": 5, "all": 10, "human": 20}


def new_client(
    network: ReferenceNetwork, chain: Chain, tiers: dict[str, int] | None = STANDARD_TIERS
) -> str:
    """An EOA policy client registered by the network's owner key (also the approver)."""
    client = "0x" + f"{0x7E0000 + next(_clients):040x}"
    network.register_policy_client(client, "agent_spend", tier_params(chain.token.address, tiers))
    return client


def connect(network: ReferenceNetwork, client: str, **options: Any) -> Guard:
    return Guard.connect(
        network.url,
        policy_client=client,
        operators=network.operator_addresses,
        api_key=network.api_key,
        policy_id=network.policy_clients[client],
        **options,
    )


def make_wallet(
    chain: Chain,
    network: ReferenceNetwork,
    client: str,
    *,
    guard: Guard | None = None,
    audit: Any = None,
    vault: str | None = None,
) -> GuardedWallet:
    wallet = GuardedWallet(
        signer=Signer.from_key(AGENT.private_key),
        guard=guard or connect(network, client),
        web3=chain.w3,
        ledger=Ledger(),
        limits=Limits(windows=[WindowCap(chain.token.address, 86400, 10_000 * USDC)]),
        vault=vault,
        audit=audit,
    )
    wallet._runner.approval_poll = 0.1  # tests need not wait half a second per poll
    return wallet


def create_vault(
    chain: Chain, network: ReferenceNetwork, *, salt: bytes, tiers: dict[str, int] | None
) -> Contract:
    """A vault owned by OWNER for AGENT (2-of-3 of the network's operators), its policy
    registered with the network and pinned onchain, holding 1,000 USDC."""
    receipt = transact(
        chain.w3,
        chain.factory.functions.createVault(
            OWNER.address, AGENT.address, network.operator_addresses, 2, b"\x01" * 32, salt
        ),
        sender=OWNER.address,
    )
    (event,) = chain.factory.events.VaultCreated().process_receipt(receipt, errors=DISCARD)
    vault = chain.w3.eth.contract(
        address=event["args"]["vault"], abi=load_artifact("AgentVault").abi
    )
    policy_id = network.register_policy_client(
        vault.address,
        "agent_spend",
        tier_params(chain.token.address, tiers),
        owner_key=OWNER.private_key,
    )
    transact(
        chain.w3, vault.functions.setPolicyId(bytes.fromhex(policy_id[2:])), sender=OWNER.address
    )
    transact(
        chain.w3, chain.token.functions.mint(vault.address, 1_000 * USDC), sender=OWNER.address
    )
    return vault
