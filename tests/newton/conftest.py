"""One anvil chain (chain id 8453) with the stand-in operator table; each test in a snapshot."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from web3 import Web3

from agentguard.chain import Anvil
from tests.newton.newton_quorum import NewtonQuorum


@dataclass
class Chain:
    anvil: Anvil
    w3: Web3
    quorum: NewtonQuorum


@pytest.fixture(scope="session")
def chain_session() -> Iterator[Chain]:
    with Anvil() as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        yield Chain(anvil, w3, NewtonQuorum.deploy(w3, (100, 100, 100)))


@pytest.fixture
def chain(chain_session: Chain) -> Iterator[Chain]:
    snapshot = chain_session.anvil.snapshot()
    tables = dict(chain_session.quorum.tables)
    try:
        yield chain_session
    finally:
        chain_session.anvil.revert(snapshot)
        chain_session.quorum.tables = tables


@pytest.fixture
def task_id() -> bytes:
    """A fresh task id per test: tickets are process-wide and single use."""
    return os.urandom(32)
