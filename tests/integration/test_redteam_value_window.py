"""Red team: window caps that name one asset let every other asset leave without limit.

A caps-only policy of "12 USDC a day, and only the USDC contract may be called"
(``window_caps`` + ``allowed_contracts``, no ``max_per_tx``) judged only the asset a window
cap names. Native ETH is no contract call, so ``allowed_contracts`` does not see it either:
before the fix the vault sent its whole 10 ETH to the thief, two attested transfers of 5 ETH.
``tx_cap`` already denies an asset it has no entry for; ``window_cap`` now does the same when
no ``max_per_tx`` is configured to judge that asset, so every asset that moves is capped by
something.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agentguard import PolicyDenied
from agentguard.testing import SigningSpy

from .redteam_vault import THIEF, VaultBench, vault_bench

PER_DAY = 12_000_000
VAULT_ETH = 10 * 10**18


def usdc_window_only(usdc: str) -> dict[str, Any]:
    return {
        "window_caps": [{"asset": usdc, "window_seconds": 86400, "max_amount": str(PER_DAY)}],
        "allowed_contracts": [usdc],
    }


@pytest.fixture(scope="module")
def bench() -> Iterator[VaultBench]:
    with vault_bench(usdc_window_only, eth=VAULT_ETH) as bench:
        yield bench


def test_eth_without_a_window_cap_cannot_leave(bench: VaultBench) -> None:
    before = bench.eth_of(THIEF)
    for _ in range(2):
        with SigningSpy() as spy, pytest.raises(PolicyDenied, match="no entry in window_caps"):
            bench.wallet.transfer(THIEF, VAULT_ETH // 2)
        assert spy.calls == []
    assert bench.eth_of(THIEF) == before
    assert bench.eth_of(bench.vault.address) == VAULT_ETH


def test_control_usdc_still_moves_within_its_window(bench: VaultBench) -> None:
    bench.wallet.transfer(THIEF, 10_000_000, asset=bench.usdc.address)
    with pytest.raises(PolicyDenied, match="window cap"):
        bench.wallet.transfer(THIEF, 5_000_000, asset=bench.usdc.address)
    assert bench.usdc_of(THIEF) == 10_000_000
