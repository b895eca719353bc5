"""One real reference network for the whole x402 package, plus the pieces every test needs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from web3 import Web3

from agentguard import AsyncGuard, Guard, Signer
from agentguard.ledger import Ledger
from agentguard.network.launcher import ReferenceNetwork
from agentguard.testing import SigningSpy
from agentguard.x402 import Allowances, X402Auth

from .fakes import OTHER_TOKEN, PAYEE, TOKEN

AGENT_KEY = "0x" + "a7" * 32
POLICY_CLIENT = "0x00000000000000000000000000000000000A4020"
CAP = 5_000_000
PARAMS = {
    "max_per_tx": {TOKEN.lower(): str(CAP), OTHER_TOKEN.lower(): str(CAP)},
    "allowed_recipients": [PAYEE],
}


@pytest.fixture(scope="package")
def network() -> Iterator[ReferenceNetwork]:
    # A generous start-up timeout: on a loaded 2-core machine the processes start slowly.
    with ReferenceNetwork(
        operators=3, threshold_percentage=66, timeout=5.0, startup_timeout=120.0
    ) as net:
        net.register_policy_client(POLICY_CLIENT, "agent_spend", PARAMS)
        yield net


def connect(net: ReferenceNetwork, policy_client: str = POLICY_CLIENT) -> Guard:
    return Guard.connect(
        net.url,
        policy_client=policy_client,
        operators=net.operator_addresses,
        api_key=net.api_key,
        policy_id=net.policy_clients[policy_client],
    )


def connect_async(net: ReferenceNetwork, policy_client: str = POLICY_CLIENT) -> AsyncGuard:
    return AsyncGuard.connect(
        net.url,
        policy_client=policy_client,
        operators=net.operator_addresses,
        api_key=net.api_key,
        policy_id=net.policy_clients[policy_client],
    )


@pytest.fixture
def guard(network: ReferenceNetwork) -> Iterator[Guard]:
    with connect(network) as g:
        yield g


@pytest.fixture
def signer() -> Signer:
    return Signer.from_key(AGENT_KEY)


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    with Ledger() as led:
        yield led


ALLOWANCES = Allowances({TOKEN: 1_000_000, OTHER_TOKEN: 1_000_000})


@pytest.fixture
def auth(signer: Signer, guard: Guard, ledger: Ledger) -> X402Auth:
    return X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES)


@pytest.fixture
def signing_spy() -> Iterator[SigningSpy]:
    """Counts every signature made in this process (eth-account and the wallet's own)."""
    with SigningSpy() as spy:
        yield spy


@contextmanager
def chain_time_ahead(w3: Web3, seconds: int = 3600) -> Iterator[None]:
    """Inside: the chain's clock (a mined block) is ``seconds`` ahead; the chain is reverted
    afterwards. Recovery decides "can never land" only at a block the chain dates past the
    deadline, so moving only the agent's clock is not enough."""
    snap = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        yield
    finally:
        w3.provider.make_request("evm_revert", [snap])  # type: ignore[arg-type]
