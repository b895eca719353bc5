"""Trust tiers end to end: the bundled agent_spend policy states a tier per amount, the real
operators sign it, the real gateway collects as many signatures as it needs, the Verifier
enforces it, the wallet's audit log records it (anvil, chain id 8453)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentguard import (
    ApprovalRequired,
    InsufficientQuorum,
    OnchainCheckRequired,
    TierQuorumNotReached,
    TierTooLow,
    TransactionIntent,
    UnknownOperator,
)
from agentguard._tiers import ALL, HIGH, HUMAN, STANDARD, VAULT_ONLY
from agentguard.chain import execute_args, transact
from agentguard.network.launcher import ReferenceNetwork
from agentguard.testing import SigningSpy
from tests.chain.helpers import reverts

from .conftest import (
    AGENT,
    PAYEE,
    USDC,
    AuditList,
    Chain,
    connect,
    create_vault,
    make_wallet,
    new_client,
)


def transfer_intent(chain: Chain, amount: int, sender: str = AGENT.address) -> TransactionIntent:
    return TransactionIntent.erc20_transfer(
        sender=sender, token=chain.token.address, recipient=PAYEE, amount=amount, chain_id=8453
    )


@contextlib.contextmanager
def operator_down(network: ReferenceNetwork, index: int) -> Iterator[None]:
    network.stop_operator(index)
    try:
        yield
    finally:
        network.start_operator(index)


def test_a_small_spend_needs_only_the_standard_quorum(
    chain: Chain, network: ReferenceNetwork
) -> None:
    client = new_client(network, chain)
    audit = AuditList()
    wallet = make_wallet(chain, network, client, audit=audit)
    before = chain.balance(PAYEE)
    wallet.transfer(PAYEE, 3 * USDC, asset=chain.token.address)
    assert chain.balance(PAYEE) - before == 3 * USDC
    (authorized,) = audit.of("authorized")
    assert authorized["tier"] == STANDARD and authorized["attestation"]["tier"] == STANDARD
    assert len(authorized["signers"]) >= 2


def test_a_larger_spend_carries_every_operator_and_says_so(
    chain: Chain, network: ReferenceNetwork
) -> None:
    """Tier high (default threshold: every operator) and tier all: the gateway does not stop
    at 2-of-3; the attestation and the audit log name the tier."""
    client = new_client(network, chain)
    audit = AuditList()
    wallet = make_wallet(chain, network, client, audit=audit)
    wallet.transfer(PAYEE, 7 * USDC, asset=chain.token.address)
    wallet.transfer(PAYEE, 15 * USDC, asset=chain.token.address)
    high, every = audit.of("authorized")
    assert (high["tier"], every["tier"]) == (HIGH, ALL)
    assert len(high["signers"]) == 3 and len(every["signers"]) == 3
    assert len(every["attestation"]["signatures"]) == 3


def test_tier_all_with_one_operator_down_is_a_typed_refusal_and_nothing_is_signed(
    chain: Chain, network: ReferenceNetwork
) -> None:
    client = new_client(network, chain)
    audit = AuditList()
    wallet = make_wallet(chain, network, client, audit=audit)
    before = chain.balance(PAYEE)
    with operator_down(network, 2), SigningSpy() as spy:
        with pytest.raises(TierQuorumNotReached) as info:
            wallet.transfer(PAYEE, 15 * USDC, asset=chain.token.address)
        # a standard spend still works with two operators
        wallet.transfer(PAYEE, 1 * USDC, asset=chain.token.address)
    assert info.value.tier == ALL
    assert "trust tier all needs 3 of 3" in info.value.message
    assert spy.calls == ["sign_transaction"]  # only the standard spend was signed
    assert chain.balance(PAYEE) - before == 1 * USDC
    (denied,) = audit.of("denied")
    assert denied["error"] == "TierQuorumNotReached" and denied["tier"] == ALL


def test_tier_high_with_one_operator_down_is_refused_by_the_verifier(
    chain: Chain, network: ReferenceNetwork
) -> None:
    """The gateway attests a high-tier allow with the two signatures it could get (it cannot
    know the client's high threshold); the verifier, whose high threshold is every operator,
    refuses it: nothing signed."""
    client = new_client(network, chain)
    wallet = make_wallet(chain, network, client)
    before = chain.balance(PAYEE)
    with (
        operator_down(network, 0),
        SigningSpy() as spy,
        pytest.raises(InsufficientQuorum, match="tier high"),
    ):
        wallet.transfer(PAYEE, 7 * USDC, asset=chain.token.address)
    assert spy.calls == [] and chain.balance(PAYEE) == before


def test_the_largest_spend_needs_a_person(chain: Chain, network: ReferenceNetwork) -> None:
    """No approval_above is configured: the tier alone makes the operators ask a person, and
    they sign tier human only over an approval they checked themselves."""
    client = new_client(network, chain)
    audit = AuditList()
    wallet = make_wallet(chain, network, client, audit=audit)
    before = chain.balance(PAYEE)
    with SigningSpy() as spy, pytest.raises(ApprovalRequired) as info:
        wallet.transfer(PAYEE, 25 * USDC, asset=chain.token.address)
    assert spy.calls == [] and chain.balance(PAYEE) == before
    assert any("trust tier human" in r for r in info.value.reasons)
    assert info.value.intent_hash is not None
    network.approve(client, info.value.intent_hash)
    wallet.transfer(PAYEE, 25 * USDC, asset=chain.token.address, approval_timeout=30)
    assert chain.balance(PAYEE) - before == 25 * USDC
    authorized = audit.of("authorized")[-1]
    assert authorized["tier"] == HUMAN and len(authorized["signers"]) == 3


def test_vault_only_is_refused_on_the_eoa_wallet(chain: Chain, network: ReferenceNetwork) -> None:
    client = new_client(network, chain, {"vault": 5})
    audit = AuditList()
    wallet = make_wallet(chain, network, client, audit=audit)
    before = chain.balance(PAYEE)
    wallet.transfer(PAYEE, 2 * USDC, asset=chain.token.address)  # below: an EOA may
    with SigningSpy() as spy, pytest.raises(OnchainCheckRequired, match="vault-only"):
        wallet.transfer(PAYEE, 7 * USDC, asset=chain.token.address)
    assert spy.calls == [] and chain.balance(PAYEE) - before == 2 * USDC
    assert audit.of("authorized")[-1]["tier"] == VAULT_ONLY


def test_the_local_minimum_beats_a_policy_that_says_standard(
    chain: Chain, network: ReferenceNetwork
) -> None:
    """Attack: the owner's policy (or a lax re-registration) says nothing about tiers, so
    everything is standard; the client requires tier all above 10 USDC, judged from the
    calldata. Before tiers the 2-of-3 attestation was signed on."""
    client = new_client(network, chain, tiers=None)
    usdc = chain.token.address.lower()
    guard = connect(network, client, tiers={"all": {usdc: 10 * USDC}})
    audit = AuditList()
    wallet = make_wallet(chain, network, client, guard=guard, audit=audit)
    before = chain.balance(PAYEE)
    wallet.transfer(PAYEE, 10 * USDC, asset=chain.token.address)  # not above: fine
    with SigningSpy() as spy, pytest.raises(TierTooLow) as info:
        wallet.transfer(PAYEE, 11 * USDC, asset=chain.token.address)
    assert (info.value.tier, info.value.required) == (STANDARD, ALL)
    assert spy.calls == [] and chain.balance(PAYEE) - before == 10 * USDC
    denied = audit.of("denied")[-1]
    assert (denied["tier"], denied["required_tier"]) == (STANDARD, ALL)


def test_a_gateway_stripping_a_high_tier_to_the_standard_quorum_is_refused(
    chain: Chain, network: ReferenceNetwork
) -> None:
    """Attack: the gateway hands back only two of the three signatures of a tier-all allow
    (what would pass the standard 2-of-3 quorum). Before tiers it verified."""
    client = new_client(network, chain)
    guard = connect(network, client)
    intent = transfer_intent(chain, 15 * USDC)
    attestation = guard.authorizer.authorize(intent)
    assert attestation.tier == ALL and len(attestation.signatures) == 3
    stripped = attestation.model_copy(update={"signatures": attestation.signatures[:2]})
    with pytest.raises(InsufficientQuorum, match=r"2 valid operator signature.*3 required"):
        guard.verifier.verify(stripped, intent)
    assert guard.verifier.verify(attestation, intent).attestation.tier == ALL


def test_a_gateway_relabelling_the_tier_breaks_every_signature(
    chain: Chain, network: ReferenceNetwork
) -> None:
    """Attack: the gateway rewrites tier all as standard (so 2-of-3 would do), and replays the
    attestation under another tier: the tier is in the signed digest, nothing recovers."""
    client = new_client(network, chain)
    guard = connect(network, client)
    intent = transfer_intent(chain, 15 * USDC)
    attestation = guard.authorizer.authorize(intent)
    for tier in (STANDARD, HIGH, HUMAN):
        relabelled = attestation.model_copy(update={"tier": tier})
        with pytest.raises(UnknownOperator):
            guard.verifier.verify(relabelled, intent)
    guard.verifier.verify(attestation, intent)  # the genuine one, once


def test_vault_only_goes_through_the_vault_which_enforces_the_tier(
    chain: Chain, network: ReferenceNetwork
) -> None:
    """The same tiers on a vault: vault-only spends land through ``execute``; a tier-all one
    carries every operator, and stripped to the standard 2-of-3 (a lying gateway) the vault
    itself refuses it onchain."""
    vault = create_vault(chain, network, salt=b"\x7e" * 32, tiers={"vault": 5, "all": 10})
    audit = AuditList()
    wallet = make_wallet(chain, network, vault.address, audit=audit, vault=vault.address)
    before = chain.balance(PAYEE)
    wallet.transfer(PAYEE, 7 * USDC, asset=chain.token.address)
    wallet.transfer(PAYEE, 15 * USDC, asset=chain.token.address)
    assert chain.balance(PAYEE) - before == 22 * USDC
    assert [r["tier"] for r in audit.of("authorized")] == [VAULT_ONLY, ALL | VAULT_ONLY]
    guard = connect(network, vault.address)
    intent = transfer_intent(chain, 16 * USDC, sender=vault.address)
    attestation = guard.authorizer.authorize(intent)
    stripped = attestation.model_copy(update={"signatures": attestation.signatures[:2]})
    with reverts("InsufficientQuorum", 2, 3):
        vault.functions.execute(*execute_args(intent, stripped)).transact({"from": AGENT.address})
    transact(
        chain.w3, vault.functions.execute(*execute_args(intent, attestation)), sender=AGENT.address
    )
    assert chain.balance(PAYEE) - before == 38 * USDC


@contextlib.contextmanager
def downgrading_operator(network: ReferenceNetwork, index: int) -> Iterator[None]:
    """Operator ``index`` replaced by one that signs every decision at tier standard."""
    op = network.operators[index]
    network.stop_operator(index)
    script = Path(__file__).with_name("downgrading_operator.py")
    process = subprocess.Popen(
        [sys.executable, str(script), "--port", str(op.port), "--key-file", str(op.key_file),
         "--token-file", str(op.token_file)],
        cwd=Path(__file__).parents[2],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{op.port}/health").status_code == 200:
                    break
            assert time.monotonic() < deadline and process.poll() is None, "did not start"
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(10)
        network.start_operator(index)


def test_an_operator_signing_a_lower_tier_gets_no_standard_attestation_out(
    chain: Chain, network: ReferenceNetwork
) -> None:
    """Attack: one operator signs the tier-all spend as standard (valid signatures, lower
    tier). Its vote does not join the honest ones (the tier is part of what is agreed on), the
    honest two are short of every operator: the task fails closed, nothing is signed. A
    standard spend is unaffected."""
    client = new_client(network, chain)
    wallet = make_wallet(chain, network, client)
    before = chain.balance(PAYEE)
    with downgrading_operator(network, 1), SigningSpy() as spy:
        with pytest.raises(TierQuorumNotReached) as info:
            wallet.transfer(PAYEE, 15 * USDC, asset=chain.token.address)
        wallet.transfer(PAYEE, 2 * USDC, asset=chain.token.address)
    assert info.value.tier == ALL and "allow/standard: 1" in info.value.message
    assert spy.calls == ["sign_transaction"] and chain.balance(PAYEE) - before == 2 * USDC
