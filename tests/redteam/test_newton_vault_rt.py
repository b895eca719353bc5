"""Red team: AgentVault's Newton mode and NewtonBlsValidator as a hostile agent would attack
them. Each xfail(strict) test reproduces a hole on today's main."""

from __future__ import annotations

from contextlib import suppress

import pytest
from web3.exceptions import ContractCustomError, ContractLogicError

from agentguard.chain.newton import bls_certificate, consensus_digest
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


@pytest.mark.xfail(
    strict=True,
    reason="finding: NewtonBlsValidator verifies the BLS signature over messageHash alone, "
    "not EigenLayer's certificate digest (referenceTimestamp, messageHash), so a certificate "
    "re-labelled with the new table's timestamp survives an operator-table rotation",
)
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
    assert old.message_hash == consensus_digest(attested.response)
    restamped = bls_certificate(
        reference_timestamp=world.reference_timestamp,
        message_hash=old.message_hash,
        signature=old.signature,  # copied from the old-table certificate
        signers_apk=old.apk,
    )
    before = world.usdc(PAYEE)
    with suppress(ContractCustomError, ContractLogicError):
        execute(world, Attested(attested.task, attested.response, restamped))
    assert world.usdc(PAYEE) == before, "an old-table certificate moved funds"
