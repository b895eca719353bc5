"""Shared pieces of the OpenGradient adapter tests: a chain with OPG, Permit2 and the upto
proxy at their canonical addresses, revert decoding, and a signing spy.

(This folder has no ``__init__.py`` so it cannot clash with the repository's ``tests``
package; test modules are named ``test_og_*`` for the same reason.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from agentguard_opengradient.localchain import deploy_opg, install_permit2
from eth_abi.abi import decode as abi_decode
from eth_utils.crypto import keccak
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError

from agentguard.chain import DEV_ACCOUNTS, Anvil, load_artifact, transact
from agentguard.testing import SigningSpy

OWNER = DEV_ACCOUNTS[0]
AGENT = DEV_ACCOUNTS[1]
STRANGER = DEV_ACCOUNTS[2]
PAYEE = DEV_ACCOUNTS[3]
FACILITATOR = DEV_ACCOUNTS[4]
OPG = 10**18
AGENT_OPG = 5 * OPG


@dataclass
class Chain:
    anvil: Anvil
    w3: Web3
    opg: Contract
    permit2: Contract
    proxy: Contract

    def balance(self, who: str) -> int:
        return int(self.opg.functions.balanceOf(who).call())


def start_chain() -> tuple[Anvil, Chain]:
    anvil = Anvil().start()
    w3 = Web3(Web3.HTTPProvider(anvil.url))
    permit2, proxy = install_permit2(w3, sender=OWNER.address)
    opg = deploy_opg(w3, sender=OWNER.address)
    transact(w3, opg.functions.mint(AGENT.address, AGENT_OPG), sender=OWNER.address)
    return anvil, Chain(anvil, w3, opg, permit2, proxy)


def _errors() -> dict[bytes, tuple[str, list[str]]]:
    table: dict[bytes, tuple[str, list[str]]] = {}
    for name in ("Permit2", "X402UptoPermit2Proxy", "OpgToken"):
        for item in load_artifact(name).abi:
            if item["type"] == "error":
                types = [i["type"] for i in item["inputs"]]
                table[keccak(f"{item['name']}({','.join(types)})".encode())[:4]] = (
                    item["name"],
                    types,
                )
    return table


ERRORS = _errors()


@contextmanager
def reverts(name: str) -> Iterator[list[Any]]:
    """Asserts the block reverts with this custom error; yields its decoded arguments."""
    decoded: list[Any] = []
    with pytest.raises(ContractCustomError) as info:
        yield decoded
    raw = bytes.fromhex(str(info.value.data).removeprefix("0x"))
    found, types = ERRORS[raw[:4]]
    assert found == name
    decoded.extend(abi_decode(types, raw[4:]))


@pytest.fixture
def signing_spy() -> Iterator[SigningSpy]:
    """Counts every signature made in this process (eth-account and the wallet's own)."""
    with SigningSpy() as spy:
        yield spy
