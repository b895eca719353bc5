"""Red team: configurations in which the agent's key alone moves a vault's funds.

The attacker is a compromised agent host. "The agent's key alone moves nothing" holds only if
the agent key is neither the owner (who withdraws without an attestation) nor an operator (whose
signature counts toward the quorum), and if the vault does not own itself (then its owner
functions run through ``execute`` with nobody outside to pause it).
"""

from __future__ import annotations

from coincurve import PrivateKey

from agentguard.chain import execute_args, transact
from tests.chain.helpers import (
    AGENT,
    AGENT_KEY,
    OPERATORS,
    OUTSIDER,
    OWNER,
    PAYEE,
    POLICY_ID,
    Env,
    attest,
    create_vault,
    reverts,
)

SALT = b"\x77" * 32


def test_the_agent_cannot_be_the_owner(env: Env) -> None:
    """Before the fix ``createVault(owner = agent)`` succeeded and the agent key then called
    ``withdraw`` and emptied the vault with no attestation at all."""
    f = env.factory.functions
    with reverts("AgentNotSeparate", AGENT):
        f.createVault(AGENT, AGENT, OPERATORS, 2, POLICY_ID, SALT).transact({"from": AGENT})
    with reverts("AgentNotSeparate", OWNER):
        env.vault.functions.setAgent(OWNER).transact({"from": OWNER})


def test_the_vault_cannot_own_itself(env: Env) -> None:
    """A vault created with its own (predicted) address as owner: nobody outside could pause
    it, and its owner functions would run on an attested ``execute`` to itself."""
    f = env.factory.functions
    itself = f.predictVault(OWNER, SALT).call()
    with reverts("AgentNotSeparate", AGENT):
        f.createVault(itself, AGENT, OPERATORS, 2, POLICY_ID, SALT).transact({"from": OWNER})


def test_the_agent_cannot_be_an_operator(env: Env) -> None:
    """Before the fix a vault whose operators included the agent key (threshold 1 here; with
    2 of 3 it would need just one accomplice) ran the agent's own "attestation": the key that
    asks also approved. Refused at creation, at rotation and when changing the agent."""
    f = env.factory.functions
    agent_operator = [AGENT, *OPERATORS[:2]]
    with reverts("AgentNotSeparate", AGENT):
        f.createVault(OWNER, AGENT, agent_operator, 1, POLICY_ID, SALT).transact({"from": OWNER})
    with reverts("AgentNotSeparate", AGENT):
        env.vault.functions.setOperators(agent_operator, 2).transact({"from": OWNER})
    with reverts("AgentNotSeparate", OPERATORS[0]):
        env.vault.functions.setAgent(OPERATORS[0]).transact({"from": OWNER})
    # what the refusal prevents: an attestation signed by the agent key alone
    intent = env.transfer_intent(to=PAYEE, amount=1)
    alone = attest(env.vault.address, intent, keys=[AGENT_KEY], expires_at=env.now() + 600)
    with reverts("UnknownOperator", AGENT):
        env.vault.functions.execute(*execute_args(intent, alone)).transact({"from": AGENT})


def test_a_separate_agent_and_owner_still_work(env: Env) -> None:
    """The checks refuse only the overlapping roles: a fresh agent, operators and owner pass."""
    vault = create_vault(env.w3, env.factory, salt=SALT)
    fresh = PrivateKey()
    address = "0x" + fresh.public_key.format(compressed=False)[1:].hex()[-40:]
    transact(env.w3, vault.functions.setAgent(env.w3.to_checksum_address(address)), sender=OWNER)
    transact(env.w3, vault.functions.setOperators([OUTSIDER, *OPERATORS], 3), sender=OWNER)
    assert vault.functions.threshold().call() == 3
