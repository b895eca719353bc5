"""Red team: AgentVault's Newton mode and NewtonBlsValidator as a hostile agent would attack
them. Each xfail(strict) test reproduces a hole on today's main."""

from __future__ import annotations

from contextlib import suppress

from web3.exceptions import ContractCustomError, ContractLogicError

from agentguard.newton._certificate import BN254Certificate
from tests.chain.helpers import PAYEE
from tests.chain.test_newton_vault import (
    BLS_OPERATORS,
    Attested,
    World,
    attest,
    execute,
    set_table,
    transfer_intent,
    world,
    world_once,
)

__all__ = ["world", "world_once"]


def test_newton_certificate_restamped_after_table_rotation_is_refused(world: World) -> None:
    """Attack (hostile agent): operators 1-3 certify a transfer under table T1. The owner
    replaces the table (here: drops operator 0; docs/architecture.md says "replacing the
    table voids certificates for the old one"). The agent copies the signature and G2 key
    into a certificate naming the new table's referenceTimestamp, with no non-signers. The
    signature does not cover the reference timestamp, so the vault pays. EigenLayer's
    ``BN254CertificateVerifier`` (and agentguard's Python ``NewtonVerifier``) sign
    ``keccak(abi.encode(BN254_CERTIFICATE_TYPEHASH, referenceTimestamp, messageHash))``."""
    signers = BLS_OPERATORS[1:]
    attested = attest(world, transfer_intent(world), signers=signers, threshold=40)
    set_table(world, signers)  # rotation: operator 0 is gone, a new reference timestamp
    old = BN254Certificate.decode(attested.certificate)
    assert old.message_hash == attested.response.consensus_digest()
    restamped = BN254Certificate(
        reference_timestamp=world.reference_timestamp,
        message_hash=old.message_hash,
        signature=old.signature,  # copied from the old-table certificate
        apk=old.apk,
        non_signer_witnesses=(),
    ).encode()
    before = world.usdc(PAYEE)
    with suppress(ContractCustomError, ContractLogicError):
        execute(world, Attested(attested.task, attested.response, restamped))
    assert world.usdc(PAYEE) == before, "an old-table certificate moved funds"


def test_newton_policy_expire_after_is_not_stretched_by_a_lying_task_block(world: World) -> None:
    """Attack (hostile agent): the policy signs ``expireAfter = 10`` blocks (~20 s on Base).
    Half an hour later the agent submits the response with ``task.taskCreatedBlock`` set to
    the previous block (unsigned), so ``taskCreatedBlock + expireAfter`` and the validator's
    response window both pass; the only age bound left is one hour after the signed
    ``initializationTimestamp``. Expected: refused once ``initializationTimestamp +
    expireAfter x block time`` has passed (both signed)."""
    half_hour_ago = int(world.block()["timestamp"]) - 1800
    attested = attest(world, transfer_intent(world), initialized_at=half_hour_ago, expire_after=10)
    before = world.usdc(PAYEE)
    with suppress(ContractCustomError, ContractLogicError):
        execute(world, attested)
    assert world.usdc(PAYEE) == before, "a 10-block approval was used 30 minutes later"
