"""Red team: the usage check must read a token's ``authorizationState`` as the vault does.

The vault pays an x402 authorization only while the token answers its ``authorizationState``
query with one 32-byte word equal to zero, and reads any other word as "spent"
(``AgentVault._authorizationState``). The check decoded the answer strictly as an ABI bool:
a token that records a spent nonce as another nonzero word (a state enum, a block number)
failed to decode, read as "not an EIP-3009 token", so "unused", and the released, paid
amount was given back (spent twice)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from web3 import Web3

from agentguard.chain import Anvil
from agentguard.network.state import TaskRecord
from agentguard.network.usage import ChainUsageCheck

from .test_redteam_usage_lag import EXPIRY, TASK_ID, VAULT, _deploy_stand_in, _mine

TOKEN = "0x" + "71" * 20


@pytest.fixture
def node() -> Iterator[Anvil]:
    with Anvil() as started:
        yield started


def _token_answering(w3: Web3, runtime: str) -> None:
    w3.provider.make_request("anvil_setCode", [TOKEN, runtime])  # type: ignore[arg-type]
    _mine(w3)


def _word(value: int) -> str:
    """Runtime code answering every call with one 32-byte word ``value`` (< 256)."""
    return f"0x60{value:02x}60005260206000f3"


@pytest.mark.parametrize(
    ("runtime", "used"),
    [
        (_word(0), False),  # unused
        (_word(1), True),  # spent, as an ABI bool says it
        (_word(2), True),  # spent, said otherwise: the vault reads it as spent too
        ("0x60006000fd", False),  # reverts: the vault pays nothing in this token
        ("0x6001600052601f6000f3", False),  # 31 bytes: the vault pays nothing in this token
    ],
)
def test_the_token_answer_means_what_it_means_to_the_vault(
    node: Anvil, runtime: str, used: bool
) -> None:
    w3 = Web3(Web3.HTTPProvider(node.url))
    _mine(w3, EXPIRY - 100)
    _deploy_stand_in(w3)  # taskUsed: false
    _token_answering(w3, runtime)
    _mine(w3, EXPIRY + 1)
    task = TaskRecord(TASK_ID, VAULT, "0x" + "aa" * 20, TOKEN, 5, 0, EXPIRY, "releasing")
    assert ChainUsageCheck(node.url).was_used(task) is used
