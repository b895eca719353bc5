"""Release-then-use against a real ``AgentVault`` on anvil (chain id 8453): a host that
releases each attestation at the gateway and still executes it on its vault gets nothing back,
with or without a chain RPC for the gateway."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from agentguard import Attestation, TransactionIntent
from agentguard._exceptions import GatewayRPCError
from agentguard.chain import DEV_ACCOUNTS, Anvil, deploy, load_artifact, transact
from agentguard.chain.vault import execute_calldata
from agentguard.network.launcher import ReferenceNetwork
from agentguard.network.usage import CODE_TTL, ChainUsageCheck

from .conftest import NETCHECK, RPC, UNIT, decision, params
from .test_hostile_gateway import attackers_registration, evaluate, hostile_task
from .test_tasks import task_status

OWNER, AGENT, STRANGER = DEV_ACCOUNTS[0], DEV_ACCOUNTS[1], DEV_ACCOUNTS[2]
SHOP = "0x3333333333333333333333333333333333333333"


@dataclass
class Chain:
    anvil: Anvil
    w3: Web3
    token: Contract
    factory: Contract


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    with Anvil() as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        token = deploy(w3, "UsdCoin", sender=OWNER.address)
        factory = deploy(w3, "AgentVaultFactory", sender=OWNER.address)
        yield Chain(anvil, w3, token, factory)


def deploy_vault(chain: Chain, network: ReferenceNetwork, salt: bytes) -> Contract:
    receipt = transact(
        chain.w3,
        chain.factory.functions.createVault(
            OWNER.address, AGENT.address, network.operator_addresses, 2, b"\x01" * 32, salt
        ),
        sender=OWNER.address,
    )
    (event,) = chain.factory.events.VaultCreated().process_receipt(receipt, errors=DISCARD)
    return chain.w3.eth.contract(
        address=event["args"]["vault"], abi=load_artifact("AgentVault").abi
    )


def create_vault(chain: Chain, network: ReferenceNetwork, salt: bytes) -> Contract:
    """A vault for AGENT, registered by its owner with a 12-unit daily cap, 2 s attestations."""
    vault = deploy_vault(chain, network, salt)
    config = params(max_per_tx=5 * UNIT, daily_cap=12 * UNIT)
    config["window_caps"][0]["asset"] = chain.token.address
    pid = network.register_policy_client(
        vault.address, NETCHECK, config, expire_after=2, owner_key=OWNER.private_key
    )
    transact(chain.w3, vault.functions.setPolicyId(bytes.fromhex(pid[2:])), sender=OWNER.address)
    transact(chain.w3, chain.token.functions.mint(vault.address, 100 * UNIT), sender=OWNER.address)
    return vault


def release_then_use(chain: Chain, network: ReferenceNetwork, vault: Contract) -> list[str]:
    """The attack: ask, release at once, execute on the vault anyway, wait for expiry."""
    rpc = RPC(network, network.api_key)
    outcomes = []
    for _ in range(4):
        intent = TransactionIntent.erc20_transfer(
            sender=vault.address,
            token=chain.token.address,
            recipient=SHOP,
            amount=5 * UNIT,
            chain_id=8453,
        )
        result: dict[str, Any] = rpc.create(vault.address, intent)
        outcomes.append(decision(result))
        if outcomes[-1] != "allow":
            continue
        rpc.call("agentguard_releaseTask", {"task_id": result["task_id"]})
        attestation = Attestation.model_validate(result["attestation"])
        chain.w3.eth.wait_for_transaction_receipt(
            chain.w3.eth.send_transaction(
                {
                    "from": AGENT.address,
                    "to": vault.address,
                    "data": "0x" + execute_calldata(intent, attestation).hex(),
                }
            )
        )
        task_status(network, result["task_id"], until="committed")  # expired and settled
    return outcomes


def test_without_a_chain_rpc_a_vaults_releases_stay_counted(
    chain: Chain, network: ReferenceNetwork
) -> None:
    """Before the fix, with default settings, each release came back at expiry: 15-25 USDC
    reached the shop under a 12 USDC daily cap."""
    vault = create_vault(chain, network, b"\x71" * 32)
    assert release_then_use(chain, network, vault) == ["allow", "allow", "deny", "deny"]
    assert chain.token.functions.balanceOf(SHOP).call() == 10 * UNIT


@pytest.fixture(scope="module")
def checked_network(chain: Chain) -> Iterator[ReferenceNetwork]:
    with ReferenceNetwork(
        operators=3, timeout=5.0, usage_check_rpc=chain.anvil.url, startup_timeout=180.0
    ) as net:
        yield net


def test_with_a_chain_rpc_the_vault_says_it_was_used(
    chain: Chain, checked_network: ReferenceNetwork
) -> None:
    before = chain.token.functions.balanceOf(SHOP).call()
    vault = create_vault(chain, checked_network, b"\x72" * 32)
    assert release_then_use(chain, checked_network, vault) == ["allow", "allow", "deny", "deny"]
    assert chain.token.functions.balanceOf(SHOP).call() - before == 10 * UNIT


def test_a_vault_is_registered_only_by_its_owner(
    chain: Chain, checked_network: ReferenceNetwork
) -> None:
    """With a chain RPC the gateway knows a contract client and asks it who its owner is."""
    vault = deploy_vault(chain, checked_network, b"\x73" * 32)
    with pytest.raises(GatewayRPCError, match=r"whose owner\(\) is 0xf39f"):
        checked_network.register_policy_client(
            vault.address, NETCHECK, params(), owner_key=STRANGER.private_key
        )
    checked_network.register_policy_client(
        vault.address, NETCHECK, params(), owner_key=OWNER.private_key
    )


def create_at_predicted(chain: Chain, salt: bytes) -> None:
    """A vault deployed at OWNER's predicted address for ``salt`` (one stranger operator)."""
    transact(
        chain.w3,
        chain.factory.functions.createVault(
            OWNER.address, AGENT.address, [STRANGER.address], 1, b"\x01" * 32, salt
        ),
        sender=OWNER.address,
    )


def test_no_code_is_never_cached(chain: Chain) -> None:
    """A vault can appear at its predicted address after the first look: before the fix the
    check remembered "no code" and treated the vault as an EOA from then on."""
    check = ChainUsageCheck(chain.anvil.url)
    salt = b"\x74" * 32
    predicted = chain.factory.functions.predictVault(OWNER.address, salt).call()
    assert not check.has_code(predicted)
    create_at_predicted(chain, salt)
    assert check.has_code(predicted)
    assert check.owner(predicted) == OWNER.address.lower()


def test_code_an_anvil_revert_took_away_is_seen_gone_once_stale(chain: Chain) -> None:
    """Before the fix "code" was remembered forever: after a revert (or a reorg) the vault's
    tasks failed their ``taskUsed`` call at every sweep, for good."""
    clock = [0.0]
    check = ChainUsageCheck(chain.anvil.url, clock=lambda: clock[0])
    salt = b"\x76" * 32
    predicted = chain.factory.functions.predictVault(OWNER.address, salt).call()
    snapshot = chain.w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    create_at_predicted(chain, salt)
    assert check.has_code(predicted)
    chain.w3.provider.make_request("evm_revert", [snapshot])  # type: ignore[arg-type]
    assert check.has_code(predicted)  # remembered, for a while
    clock[0] += CODE_TTL
    assert not check.has_code(predicted)


def test_an_operator_with_a_chain_refuses_a_strangers_registration_for_a_vault(
    chain: Chain, checked_network: ReferenceNetwork
) -> None:
    """Without chain access an operator holds the first owner-signed registration it sees for
    a client; with it, a hostile gateway cannot get one in for a deployed vault before its
    owner registers."""
    vault = deploy_vault(chain, checked_network, b"\x75" * 32)
    task, _ = hostile_task(vault.address, attackers_registration(vault.address))
    for op in checked_network.operators:
        error = evaluate(op, task)["error"]
        assert error["code"] == -32602 and "whose owner() is 0xf39f" in error["message"], error


def test_the_vaults_owner_takes_over_from_whoever_registered_its_address_first(
    chain: Chain, checked_network: ReferenceNetwork
) -> None:
    """Before its vault has code nobody can tell who owns an address: a stranger's
    registration gets in first (at the gateway and at the operators). Once the vault exists,
    the chain names its owner, whose registration replaces the stranger's everywhere."""
    salt = b"\x76" * 32
    predicted = chain.factory.functions.predictVault(OWNER.address, salt).call()
    checked_network.register_policy_client(
        predicted, NETCHECK, params(), owner_key=STRANGER.private_key
    )
    vault = create_vault(chain, checked_network, salt)  # registered by OWNER now
    assert vault.address == predicted
    intent = TransactionIntent.erc20_transfer(
        sender=vault.address, token=chain.token.address, recipient=SHOP, amount=UNIT, chain_id=8453
    )
    result = RPC(checked_network, checked_network.api_key).create(vault.address, intent)
    assert decision(result) == "allow"
    assert result["attestation"]["policy_id"] == checked_network.policy_clients[vault.address]
    with pytest.raises(GatewayRPCError, match="whose owner"):
        checked_network.register_policy_client(
            vault.address, NETCHECK, params(), owner_key=STRANGER.private_key
        )
