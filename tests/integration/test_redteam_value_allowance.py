"""Red team: pull more through allowances than the window cap lets the vault spend.

Each ``approve`` is counted when it is granted, at the allowance it grants, and a pull by the
spender is no vault action at all: so the spender can take at most what the caps already
counted. A thief approved twice for 5 USDC pulls 10 USDC; the third approval, which would let
the day's total reach 15 USDC, is denied; a revocation (``approve(THIEF, 0)``) counts 0 and
still passes. (This attack fails closed; kept as the end-to-end check that approvals and the
pulls they allow are counted once, not zero times.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agentguard import PolicyDenied
from agentguard.chain import transact

from .redteam_vault import THIEF, VaultBench, vault_bench

PER_TX = 5_000_000
PER_DAY = 12_000_000


def caps(usdc: str) -> dict[str, Any]:
    return {
        "max_per_tx": {usdc: str(PER_TX)},
        "window_caps": [{"asset": usdc, "window_seconds": 86400, "max_amount": str(PER_DAY)}],
        "allowed_contracts": [usdc],
    }


@pytest.fixture(scope="module")
def bench() -> Iterator[VaultBench]:
    with vault_bench(caps) as bench:
        yield bench


def _pull_all(bench: VaultBench) -> None:
    allowed = int(bench.usdc.functions.allowance(bench.vault.address, THIEF).call())
    pull = bench.usdc.functions.transferFrom(bench.vault.address, THIEF, allowed)
    transact(bench.w3, pull, sender=THIEF)


def test_pulls_through_approvals_stop_at_the_window_cap(bench: VaultBench) -> None:
    start = bench.usdc_of(bench.vault.address)
    for _ in range(2):
        bench.wallet.call(bench.usdc.address, "approve(address,uint256)", [THIEF, PER_TX])
        _pull_all(bench)
    with pytest.raises(PolicyDenied, match="window cap"):
        bench.wallet.call(bench.usdc.address, "approve(address,uint256)", [THIEF, PER_TX])
    bench.wallet.call(bench.usdc.address, "approve(address,uint256)", [THIEF, 0])
    assert bench.usdc_of(THIEF) == 2 * PER_TX <= PER_DAY
    assert bench.usdc_of(bench.vault.address) == start - 2 * PER_TX
