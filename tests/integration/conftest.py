from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentguard import Signer, TransactionIntent
from agentguard.network.launcher import ReferenceNetwork
from agentguard.testing import SigningSpy

from .tamper import TamperingProxy

AGENT_KEY = "0x" + "a1" * 32
POLICY_CLIENT = "0x00000000000000000000000000000000000A9E17"
SHORT_LIVED_CLIENT = "0x00000000000000000000000000000000000a9E18"
TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"  # USDC on Base
PAYEE = "0x3333333333333333333333333333333333333333"
STRANGER = "0x4444444444444444444444444444444444444444"
CAP = 5_000_000
PARAMS = {"max_per_tx": {TOKEN.lower(): str(CAP)}, "allowed_recipients": [PAYEE]}


@pytest.fixture(scope="package")
def network() -> Iterator[ReferenceNetwork]:
    with ReferenceNetwork(operators=3, threshold_percentage=66, timeout=5.0) as net:
        net.register_policy_client(POLICY_CLIENT, "agent_spend", PARAMS)
        net.register_policy_client(SHORT_LIVED_CLIENT, "agent_spend", PARAMS, expire_after=1)
        yield net


@pytest.fixture(scope="package")
def proxy(network: ReferenceNetwork) -> Iterator[TamperingProxy]:
    with TamperingProxy(network.url) as p:
        yield p


@pytest.fixture
def signer() -> Signer:
    return Signer.from_key(AGENT_KEY)


def transfer(
    signer: Signer, amount: int = 1_000_000, recipient: str = PAYEE, chain_id: int = 8453
) -> TransactionIntent:
    return TransactionIntent.erc20_transfer(
        sender=signer.address, token=TOKEN, recipient=recipient, amount=amount, chain_id=chain_id
    )


@pytest.fixture
def signing_spy() -> Iterator[SigningSpy]:
    """Counts every signature made in this process (eth-account and the wallet's own)."""
    with SigningSpy() as spy:
        yield spy
