"""Migrating a vault: all its funds and its pinned policy move to a new vault in one owner
transaction (``migrateTo``), and the old vault ends paused.

The new vault must already exist (made by the factory, so initialized in its creation
transaction) with the same owner, agent, operators and threshold, and pin the same policy: the
policy ids differ (an id binds its vault's address), so the owner gives the id's preimage and
the old vault checks it against both ids onchain.
"""

from __future__ import annotations

from typing import Any

import pytest
from web3.contract import Contract

from agentguard._eip712 import keccak
from agentguard._exceptions import ConfigurationError
from agentguard._intent import TransactionIntent
from agentguard.chain import transact
from agentguard.chain.owner import (
    PolicyPreimage,
    create_vault,
    grant_guardian,
    migrate_vault,
    switch_policy,
)
from tests.chain.helpers import (
    AGENT,
    CHAIN_ID,
    OPERATORS,
    OUTSIDER,
    OWNER,
    PAYEE,
    VAULT_ETH,
    VAULT_USDC,
    DeployTest,
    Env,
    attested_execute,
    events,
    reverts,
)

ZERO = "0x" + "00" * 20
PREIMAGE = PolicyPreimage(keccak(b"policy code"), keccak(b"params"), 300)
OTHER_PARAMS = PolicyPreimage(PREIMAGE.code_hash, keccak(b"looser params"), 300)


def new_vault(env: Env, salt: bytes = b"\x55" * 32, **overrides: Any) -> Contract:
    """A vault from the factory like the session's, pinning ``preimage`` for its address."""
    preimage: PolicyPreimage = overrides.pop("preimage", PREIMAGE)
    address = env.factory.functions.predictVault(OWNER, salt).call()
    settings: dict[str, Any] = {
        "owner": OWNER,
        "agent": AGENT,
        "operators": OPERATORS,
        "threshold": 2,
        "policy_id": preimage.policy_id(address),
    }
    settings.update(overrides)
    return create_vault(env.w3, env.factory, salt=salt, sender=OWNER, **settings)


@pytest.fixture
def pinned(env: Env) -> Env:
    """The session's vault pinning ``PREIMAGE`` (it was created with an id from no preimage)."""
    switch_policy(env.w3, env.vault, PREIMAGE.policy_id(env.vault.address), sender=OWNER)
    return env


def migrate(env: Env, target: str, preimage: PolicyPreimage = PREIMAGE) -> Any:
    return env.vault.functions.migrateTo(
        target, [env.token.address], preimage.code_hash, preimage.params_hash, 300
    )


def untouched(env: Env) -> None:
    assert env.usdc(env.vault.address) == VAULT_USDC
    assert env.w3.eth.get_balance(env.vault.address) == VAULT_ETH
    assert env.vault.functions.paused().call() is False


def test_funds_and_policy_move_in_one_transaction(pinned: Env) -> None:
    env = pinned
    new = new_vault(env)
    grant_guardian(env.w3, env.vault, OUTSIDER, sender=OWNER)
    transact(env.w3, env.vault.functions.pause(), sender=OUTSIDER)  # works while paused
    old_call = attested_execute(
        env, env.transfer_intent(), policy_id=PREIMAGE.policy_id(env.vault.address)
    )
    receipt = transact(env.w3, migrate(env, new.address), sender=OWNER)
    assert events(env.vault, "Migrated", receipt) == [{"newVault": new.address}]
    assert events(env.vault, "Withdrawn", receipt) == [
        {"token": env.token.address, "to": new.address, "amount": VAULT_USDC},
        {"token": ZERO, "to": new.address, "amount": VAULT_ETH},
    ]
    assert (env.usdc(new.address), env.w3.eth.get_balance(new.address)) == (VAULT_USDC, VAULT_ETH)
    assert (env.usdc(env.vault.address), env.w3.eth.get_balance(env.vault.address)) == (0, 0)
    assert env.vault.functions.paused().call() is True
    with reverts("VaultPaused"):
        old_call.transact({"from": AGENT})
    # the agent goes on from the new vault, under the same policy's id for it
    intent = TransactionIntent.erc20_transfer(
        sender=new.address, token=env.token.address, recipient=PAYEE, amount=5_000_000,
        chain_id=CHAIN_ID,
    )  # fmt: skip
    call = attested_execute(env, intent, vault=new, policy_id=PREIMAGE.policy_id(new.address))
    transact(env.w3, call, sender=AGENT)
    assert env.usdc(PAYEE) == 5_000_000


def test_python_helper_migrates_and_reports_what_moved(pinned: Env) -> None:
    env = pinned
    new = new_vault(env)
    moved = migrate_vault(
        env.w3, env.vault, new, tokens=[env.token.address], preimage=PREIMAGE, sender=OWNER
    )
    assert moved == {env.token.address: VAULT_USDC, ZERO: VAULT_ETH}
    assert env.vault.functions.paused().call() is True


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"owner": OUTSIDER}, "owner"),
        ({"agent": OUTSIDER}, "agent"),
        ({"preimage": OTHER_PARAMS}, "policy"),
        ({"operators": list(reversed(OPERATORS))}, "operators"),
        ({"operators": [*OPERATORS, PAYEE]}, "operators"),
        ({"threshold": 3}, "threshold"),
    ],
)
def test_a_vault_set_up_differently_is_refused(
    pinned: Env, overrides: dict[str, Any], field: str
) -> None:
    """The attack: the owner is talked into migrating to a vault someone else created for
    them (anyone can create one naming the victim as owner): with the attacker's agent or
    operators, a looser policy, or a lower threshold, the funds would move under rules the
    owner never chose. Each difference is refused and nothing moves."""
    env = pinned
    target = new_vault(env, **overrides)
    with reverts("MigrationMismatch", field):
        migrate(env, target.address).transact({"from": OWNER})
    untouched(env)


def test_a_preimage_that_is_not_the_old_vaults_policy_is_refused(pinned: Env) -> None:
    """A new vault pinning looser params, and the preimage of those: it matches the new
    vault's id but not the old one's, so "same policy" fails onchain."""
    env = pinned
    target = new_vault(env, preimage=OTHER_PARAMS)
    with reverts("MigrationMismatch", "policy"):
        migrate(env, target.address, OTHER_PARAMS).transact({"from": OWNER})
    untouched(env)


def test_migrating_to_itself_or_to_an_account_without_code_is_refused(pinned: Env) -> None:
    env = pinned
    for target in (env.vault.address, OUTSIDER):
        with reverts("MigrationMismatch", "vault"):
            migrate(env, target).transact({"from": OWNER})
    untouched(env)


def test_newton_vaults_neither_migrate_nor_receive(pinned: Env) -> None:
    """Mode is part of "set up the same": an ECDSA vault's funds do not move to a Newton-mode
    vault (other rules), and a Newton-mode vault does not migrate through ``migrateTo``."""
    env = pinned
    salt = b"\x56" * 32
    address = env.factory.functions.predictVault(OWNER, salt).call()
    transact(
        env.w3,
        env.factory.functions.createNewtonVault(
            OWNER, AGENT, env.token.address, PREIMAGE.policy_id(address), salt
        ),
        sender=OWNER,
    )
    newton = env.w3.eth.contract(address=address, abi=env.vault.abi)
    with reverts("MigrationMismatch", "validator"):
        migrate(env, address).transact({"from": OWNER})
    untouched(env)
    with reverts("NewtonMode"):
        newton.functions.migrateTo(
            env.vault.address, [], PREIMAGE.code_hash, PREIMAGE.params_hash, 300
        ).transact({"from": OWNER})


def test_nothing_moves_for_anyone_but_the_owner(pinned: Env) -> None:
    env = pinned
    new = new_vault(env)
    grant_guardian(env.w3, env.vault, PAYEE, sender=OWNER)
    for caller in (AGENT, OUTSIDER, PAYEE):
        with reverts("NotOwner", caller):
            migrate(env, new.address).transact({"from": caller})
    untouched(env)
    assert env.usdc(new.address) == 0


def test_a_token_that_arrives_short_undoes_the_whole_migration(
    pinned: Env, deploy_test: DeployTest
) -> None:
    """A fee-on-transfer token delivers less than was sent: ``migrateTo`` reverts
    ``MigrationShortfall`` instead of reporting a full move, and nothing (ETH included) moves."""
    env = pinned
    fee = deploy_test(env.w3, "FeeToken")
    transact(env.w3, fee.functions.mint(env.vault.address, 10_000), sender=OWNER)
    new = new_vault(env)
    call = env.vault.functions.migrateTo(
        new.address, [env.token.address, fee.address], PREIMAGE.code_hash, PREIMAGE.params_hash, 300
    )
    with reverts("MigrationShortfall", fee.address, 10_000, 9_900):
        call.transact({"from": OWNER})
    untouched(env)


def test_a_contract_faking_the_views_is_refused_by_the_helper(
    pinned: Env, deploy_test: DeployTest
) -> None:
    """The limit of any onchain check: a contract written to answer every view ``migrateTo``
    asks exactly as a clone would (same owner, agent, operators, threshold, policy) passes
    them, and then lets anyone drain it. ``migrate_vault`` refuses it by its code (an EIP-1167
    clone of the shipped ``AgentVault`` only) before sending anything."""
    env = pinned
    # its policy id is the preimage's for its own address, known before it is deployed
    fake = deploy_test(
        env.w3, "FakeVault", OWNER, AGENT, OPERATORS, 2, PREIMAGE.policy_id(_next_address(env))
    )
    assert migrate(env, fake.address).call({"from": OWNER}) == []  # the chain alone would move
    fake_as_vault = env.w3.eth.contract(address=fake.address, abi=env.vault.abi)
    with pytest.raises(ConfigurationError, match="not an AgentVault clone"):
        migrate_vault(
            env.w3, env.vault, fake_as_vault, tokens=[env.token.address], preimage=PREIMAGE,
            sender=OWNER,
        )  # fmt: skip
    untouched(env)


def _next_address(env: Env) -> str:
    """The address of the next contract the owner deploys (CREATE: sender and nonce)."""
    import rlp
    from eth_utils.address import to_checksum_address

    nonce = env.w3.eth.get_transaction_count(OWNER)
    return to_checksum_address(keccak(rlp.encode([bytes.fromhex(OWNER[2:]), nonce]))[12:])


def test_the_helper_says_which_vault_does_not_pin_the_policy(pinned: Env) -> None:
    env = pinned
    new = new_vault(env, preimage=OTHER_PARAMS)
    with pytest.raises(ConfigurationError, match=f"vault {new.address} does not pin"):
        migrate_vault(
            env.w3, env.vault, new, tokens=[env.token.address], preimage=PREIMAGE, sender=OWNER
        )
    untouched(env)
