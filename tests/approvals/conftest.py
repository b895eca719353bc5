"""A real chain (anvil, chain id 8453), a real network and a wallet whose policy asks a person
above 5 USDC. Each test registers its own policy client (running totals and approval requests
are per client)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from web3 import Web3
from web3.contract import Contract

from agentguard import AsyncGuard, Guard, Signer, Token
from agentguard.chain import DEV_ACCOUNTS, Anvil, deploy, transact
from agentguard.ledger import Ledger, Limits, WindowCap
from agentguard.network.launcher import ReferenceNetwork
from agentguard.wallet import AsyncGuardedWallet, GuardedWallet

OWNER = DEV_ACCOUNTS[0]
AGENT = DEV_ACCOUNTS[1]
PAYEE = DEV_ACCOUNTS[3].address
USDC = 10**6
_clients = itertools.count(1)


@dataclass
class Chain:
    anvil: Anvil
    w3: Web3
    token: Contract

    @property
    def usdc(self) -> Token:
        return Token("USDC", self.token.address, 6, 8453)


@dataclass
class AuditList:
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
        transact(w3, token.functions.mint(AGENT.address, 1_000 * USDC), sender=OWNER.address)
        yield Chain(anvil, w3, token)


@pytest.fixture(scope="package")
def network() -> Iterator[ReferenceNetwork]:
    with ReferenceNetwork(operators=3, threshold_percentage=66, timeout=5.0) as net:
        yield net


def approval_params(token: str, **extra: Any) -> dict[str, Any]:
    return {
        "max_per_tx": {token.lower(): str(100 * USDC)},
        "allowed_recipients": [PAYEE],
        "approval_above": {token.lower(): str(5 * USDC)},
        **extra,
    }


def new_client(network: ReferenceNetwork, chain: Chain, **extra: Any) -> str:
    """A policy client registered by the network's owner key (its default approver)."""
    client = "0x" + f"{0xAB0000 + next(_clients):040x}"
    network.register_policy_client(
        client, "agent_spend", approval_params(chain.token.address, **extra)
    )
    return client


def connect(network: ReferenceNetwork, client: str, cls: type[Any] = Guard) -> Any:
    return cls.connect(
        network.url,
        policy_client=client,
        operators=network.operator_addresses,
        api_key=network.api_key,
        policy_id=network.policy_clients[client],
    )


def make_wallet(
    chain: Chain,
    network: ReferenceNetwork,
    client: str,
    *,
    guard: Guard | None = None,
    audit: Any = None,
    ledger: Ledger | None = None,
) -> GuardedWallet:
    wallet = GuardedWallet(
        signer=Signer.from_key(AGENT.private_key),
        guard=guard or connect(network, client),
        web3=chain.w3,
        ledger=ledger or Ledger(),
        limits=Limits(windows=[WindowCap(chain.token.address, 86400, 1_000 * USDC)]),
        audit=audit,
    )
    wallet._runner.approval_poll = 0.1  # tests need not wait half a second per poll
    return wallet


def make_async_wallet(
    chain: Chain, network: ReferenceNetwork, client: str, *, audit: Any = None
) -> AsyncGuardedWallet:
    wallet = AsyncGuard.wallet(
        connect(network, client, AsyncGuard),
        signer=Signer.from_key(AGENT.private_key),
        web3=chain.w3,
        ledger=Ledger(),
        limits=Limits(windows=[WindowCap(chain.token.address, 86400, 1_000 * USDC)]),
        audit=audit,
    )
    wallet._runner.approval_poll = 0.1
    return wallet


def balance(chain: Chain, who: str) -> int:
    return int(chain.token.functions.balanceOf(who).call())
