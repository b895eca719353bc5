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
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from agentguard import Guard, IntentError, PolicyDenied, Signer, TransactionIntent
from agentguard._eip712 import keccak
from agentguard.chain import DEV_ACCOUNTS, Anvil, deploy, load_artifact, transact
from agentguard.ledger import Ledger, Limits, WindowCap
from agentguard.network.launcher import ReferenceNetwork
from agentguard.testing import SigningSpy
from agentguard.wallet import GuardedWallet

OWNER = DEV_ACCOUNTS[0]
AGENT = DEV_ACCOUNTS[1]
THIEF = DEV_ACCOUNTS[6].address
PAYEE = DEV_ACCOUNTS[3].address
U256_MAX = (1 << 256) - 1
VAULT_USDC = 100_000_000
COLLIDING = "payb_9uByHa(address,uint256)"


@dataclass
class Setup:
    w3: Web3
    token: Contract
    vault: Contract
    wallet: GuardedWallet
    network: ReferenceNetwork


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    with Anvil() as anvil, ReferenceNetwork(operators=3, threshold_percentage=66) as network:
        assert anvil.chain_id == 8453
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        token = deploy(w3, "UsdCoin", sender=OWNER.address)
        factory = deploy(w3, "AgentVaultFactory", sender=OWNER.address)
        receipt = transact(
            w3,
            factory.functions.createVault(
                OWNER.address,
                AGENT.address,
                network.operator_addresses,
                2,
                b"\x01" * 32,
                b"\x07" * 32,
            ),
            sender=OWNER.address,
        )
        (event,) = factory.events.VaultCreated().process_receipt(receipt, errors=DISCARD)
        vault = w3.eth.contract(address=event["args"]["vault"], abi=load_artifact("AgentVault").abi)
        # The attacker's policy of the issue: caps and a contract allowlist, nothing else.
        params: dict[str, Any] = {
            "max_per_tx": {token.address.lower(): "5000000"},
            "window_caps": [
                {"asset": token.address.lower(), "window_seconds": 86400, "max_amount": "12000000"}
            ],
            "allowed_contracts": [token.address],
        }
        policy_id = network.register_policy_client(vault.address, "agent_spend", params)
        transact(
            w3, vault.functions.setPolicyId(bytes.fromhex(policy_id[2:])), sender=OWNER.address
        )
        transact(w3, token.functions.mint(vault.address, VAULT_USDC), sender=OWNER.address)
        guard = Guard.connect(
            network.url,
            policy_client=vault.address,
            operators=network.operator_addresses,
            api_key=network.api_key,
            policy_id=network.policy_clients[vault.address],
        )
        wallet = GuardedWallet(
            signer=Signer.from_key(AGENT.private_key),
            guard=guard,
            web3=w3,
            ledger=Ledger(),
            # Local limits wide open: the point here is what the operators value and deny.
            limits=Limits(windows=[WindowCap(token.address, 86400, (1 << 256) - 1)]),
            vault=vault.address,
        )
        yield Setup(w3, token, vault, wallet, network)


def _balance(s: Setup, who: str) -> int:
    return int(s.token.functions.balanceOf(who).call())


def _allowance(s: Setup) -> int:
    return int(s.token.functions.allowance(s.vault.address, THIEF).call())


def test_the_colliding_name_is_refused_before_anything_is_signed(setup: Setup) -> None:
    assert keccak(COLLIDING.encode())[:4] == keccak(b"approve(address,uint256)")[:4]
    with SigningSpy() as spy, pytest.raises(IntentError, match="approve"):
        setup.wallet.call(setup.token.address, COLLIDING, [THIEF, U256_MAX])
    assert spy.calls == []
    assert _allowance(setup) == 0
    assert _balance(setup, setup.vault.address) == VAULT_USDC


def test_a_host_that_skips_the_sdk_gets_no_attestation_for_the_colliding_name(
    setup: Setup,
) -> None:
    """The gateway and every operator parse the wire intent with the same code."""
    data = keccak(b"approve(address,uint256)")[:4] + bytes.fromhex(
        "00" * 12 + THIEF[2:] + "ff" * 32
    )
    wire = {
        "from": setup.vault.address,
        "to": setup.token.address,
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


def test_the_real_unlimited_approve_is_valued_at_max_and_denied_by_the_caps(setup: Setup) -> None:
    with SigningSpy() as spy, pytest.raises(PolicyDenied) as denied:
        setup.wallet.call(setup.token.address, "approve(address,uint256)", [THIEF, U256_MAX])
    assert str(U256_MAX) in str(denied.value)
    assert spy.calls == []
    assert _allowance(setup) == 0
    assert _balance(setup, setup.vault.address) == VAULT_USDC


def test_an_unvalued_function_on_the_token_is_denied(setup: Setup) -> None:
    """``mint`` is outside the table: caps cannot see what it moves, so the policy refuses."""
    with SigningSpy() as spy, pytest.raises(PolicyDenied, match="not one agentguard can value"):
        setup.wallet.call(setup.token.address, "mint(address,uint256)", [THIEF, 10**12])
    assert spy.calls == []


def test_an_approval_within_the_caps_still_executes_from_the_vault(setup: Setup) -> None:
    """Control: the same path allows and executes what the caps allow."""
    setup.wallet.call(setup.token.address, "approve(address,uint256)", [PAYEE, 1_000_000])
    assert int(setup.token.functions.allowance(setup.vault.address, PAYEE).call()) == 1_000_000
