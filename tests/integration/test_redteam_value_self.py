"""Red team: make the vault call itself, or its factory, so that its owner's powers or a
second ``execute`` move funds without a cap seeing them.

Every such function is an ``unknown_call``: a caps-only policy denies it. Even an owner who
lists them in ``allowed_functions`` (so the network attests them) loses nothing: the vault is
not its own owner or agent, so ``withdraw``/``setAgent``/``execute`` revert when it calls
itself, and a vault created by the vault holds nothing. (Fails closed; kept as coverage.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agentguard import PolicyDenied
from agentguard._exceptions import TransactionReverted

from .redteam_vault import AGENT, THIEF, VaultBench, vault_bench

EXECUTE = "execute(address,uint256,bytes,bytes,bytes32,bytes32,uint64,bytes[],uint8)"
SELF_CALLS = [
    ("withdraw(address,address,uint256)", lambda b: [b.usdc.address, THIEF, 10**6]),
    ("setAgent(address)", lambda b: [THIEF]),
    ("unpause()", lambda b: []),
    (EXECUTE, lambda b: [b.usdc.address, 0, b"", b"", b"\x01" * 32, b"\x02" * 32, 2**40, [], 0]),
]


def caps(usdc: str) -> dict[str, Any]:
    return {"max_per_tx": {"*": "5000000"}}


@pytest.fixture(scope="module")
def bench() -> Iterator[VaultBench]:
    with vault_bench(caps) as bench:
        yield bench


@pytest.mark.parametrize(("signature", "args"), SELF_CALLS)
def test_a_caps_only_policy_denies_calls_to_the_vault_itself(
    bench: VaultBench, signature: str, args: Any
) -> None:
    with pytest.raises(PolicyDenied, match="not one agentguard can value"):
        bench.wallet.call(bench.vault.address, signature, args(bench))


def test_listed_self_calls_are_attested_but_the_vault_refuses_them(bench: VaultBench) -> None:
    start = bench.usdc_of(bench.vault.address)
    listed = [signature for signature, _ in SELF_CALLS]
    bench.set_policy({"max_per_tx": {"*": "5000000"}, "allowed_functions": listed})
    try:
        for signature, args in SELF_CALLS:
            with pytest.raises(TransactionReverted):
                bench.wallet.call(bench.vault.address, signature, args(bench))
    finally:
        bench.set_policy(caps(""))
    assert bench.usdc_of(bench.vault.address) == start
    assert bench.usdc_of(THIEF) == 0
    assert bench.vault.functions.agent().call() == AGENT.address
