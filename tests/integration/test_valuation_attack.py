"""Issue 7, finding 1 (Critical), against anvil (chain id 8453), the reference network and a
funded ``AgentVault``: spend valued by the function name the agent supplies.

Before the fix, ``payb_9uByHa(address,uint256)`` (approve's selector ``0x095ea7b3``) carrying
``approve(THIEF, 2^256 - 1)`` was valued at its ETH value, 0: the caps-only policy below
allowed it, the vault (which only checks ``bytes4(keccak(signature)) == bytes4(data)``)
executed it, and the thief emptied the vault with ``transferFrom``. Now the name is refused
before anything is signed or attested, and the real ``approve(THIEF, max)`` reaches the
policy valued at 2^256 - 1 and is denied by the caps.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agentguard import IntentError, PolicyDenied, TransactionIntent
from agentguard._eip712 import keccak
from agentguard.testing import SigningSpy

from .redteam_vault import PAYEE, THIEF, VaultBench, vault_bench

U256_MAX = (1 << 256) - 1
VAULT_USDC = 100_000_000
COLLIDING = "payb_9uByHa(address,uint256)"


def caps_and_contracts(usdc: str) -> dict[str, Any]:
    """The attacker's policy of the issue: caps and a contract allowlist, nothing else."""
    return {
        "max_per_tx": {usdc: "5000000"},
        "window_caps": [{"asset": usdc, "window_seconds": 86400, "max_amount": "12000000"}],
        "allowed_contracts": [usdc],
    }


@pytest.fixture(scope="module")
def setup() -> Iterator[VaultBench]:
    with vault_bench(caps_and_contracts, usdc=VAULT_USDC) as bench:
        yield bench


def _allowance(s: VaultBench) -> int:
    return int(s.usdc.functions.allowance(s.vault.address, THIEF).call())


def test_the_colliding_name_is_refused_before_anything_is_signed(setup: VaultBench) -> None:
    assert keccak(COLLIDING.encode())[:4] == keccak(b"approve(address,uint256)")[:4]
    with SigningSpy() as spy, pytest.raises(IntentError, match="approve"):
        setup.wallet.call(setup.usdc.address, COLLIDING, [THIEF, U256_MAX])
    assert spy.calls == []
    assert _allowance(setup) == 0
    assert setup.usdc_of(setup.vault.address) == VAULT_USDC


def test_a_host_that_skips_the_sdk_gets_no_attestation_for_the_colliding_name(
    setup: VaultBench,
) -> None:
    """The gateway and every operator parse the wire intent with the same code."""
    data = keccak(b"approve(address,uint256)")[:4] + bytes.fromhex(
        "00" * 12 + THIEF[2:] + "ff" * 32
    )
    wire = {
        "from": setup.vault.address,
        "to": setup.usdc.address,
        "value": "0x0",
        "data": "0x" + data.hex(),
        "chain_id": "0x2105",
        "function_signature": "0x" + COLLIDING.encode().hex(),
    }
    answer = httpx.post(
        setup.network.rpc_url,
        headers={"Authorization": f"Bearer {setup.network.api_key}"},
        json={
            "jsonrpc": "2.0",
            "id": str(uuid.uuid4()),
            "method": "newt_createTask",
            "params": {"policy_client": setup.vault.address, "intent": wire, "timeout": 5},
        },
        timeout=10,
    ).json()
    assert "result" not in answer
    assert answer["error"]["code"] == -32602
    assert "approve(address,uint256)" in answer["error"]["message"]
    with pytest.raises(IntentError):  # the operators' parser
        TransactionIntent.from_wire(wire)


def test_the_real_unlimited_approve_is_valued_at_max_and_denied_by_the_caps(
    setup: VaultBench,
) -> None:
    with SigningSpy() as spy, pytest.raises(PolicyDenied) as denied:
        setup.wallet.call(setup.usdc.address, "approve(address,uint256)", [THIEF, U256_MAX])
    assert str(U256_MAX) in str(denied.value)
    assert spy.calls == []
    assert _allowance(setup) == 0
    assert setup.usdc_of(setup.vault.address) == VAULT_USDC


def test_an_unvalued_function_on_the_token_is_denied(setup: VaultBench) -> None:
    """``mint`` is outside the table: caps cannot see what it moves, so the policy refuses."""
    with SigningSpy() as spy, pytest.raises(PolicyDenied, match="not one agentguard can value"):
        setup.wallet.call(setup.usdc.address, "mint(address,uint256)", [THIEF, 10**12])
    assert spy.calls == []


def test_an_approval_within_the_caps_still_executes_from_the_vault(setup: VaultBench) -> None:
    """Control: the same path allows and executes what the caps allow."""
    setup.wallet.call(setup.usdc.address, "approve(address,uint256)", [PAYEE, 1_000_000])
    assert int(setup.usdc.functions.allowance(setup.vault.address, PAYEE).call()) == 1_000_000
