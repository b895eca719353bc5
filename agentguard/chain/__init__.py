"""Onchain enforcement: the shipped contracts, a local anvil chain, and vault call encoding.

``AgentVault`` holds an agent's funds and executes only calls (or accepts only x402
payments) that a quorum of policy operators attested, so a stolen agent key moves nothing.
In Newton mode (``create_newton_vault``) a validator with Newton's ``validateAttestationDirect``
(the shipped ``NewtonBlsValidator``: BN254 BLS quorum) checks each attested call instead.
``agentguard.chain.owner`` holds the owner's side: creation, guardians, delayed policy
switches, two-step ownership and migration (docs/vault-upgrades.md).
"""

from agentguard.chain.anvil import BASE_CHAIN_ID, DEV_ACCOUNTS, Anvil, DevAccount, find_anvil
from agentguard.chain.contracts import Artifact, deploy, load_artifact, transact
from agentguard.chain.eip3009 import token_domain_separator, transfer_authorization_digest
from agentguard.chain.newton import (
    create_newton_vault,
    deploy_newton_validator,
    execute_newton_args,
    newton_execute_calldata,
)
from agentguard.chain.owner import (
    PolicyPreimage,
    create_vault,
    grant_guardian,
    migrate_vault,
    revoke_guardian,
    switch_policy,
)
from agentguard.chain.vault import (
    EXECUTE_SIGNATURE,
    execute_args,
    execute_calldata,
    payment_signature,
)

__all__ = [
    "BASE_CHAIN_ID",
    "DEV_ACCOUNTS",
    "EXECUTE_SIGNATURE",
    "Anvil",
    "Artifact",
    "DevAccount",
    "PolicyPreimage",
    "create_newton_vault",
    "create_vault",
    "deploy",
    "deploy_newton_validator",
    "execute_args",
    "execute_calldata",
    "execute_newton_args",
    "find_anvil",
    "grant_guardian",
    "load_artifact",
    "migrate_vault",
    "newton_execute_calldata",
    "payment_signature",
    "revoke_guardian",
    "switch_policy",
    "token_domain_separator",
    "transact",
    "transfer_authorization_digest",
]
