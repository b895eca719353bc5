"""x402 payments from a vault: the agent signs an EIP-3009 authorization whose nonce is the
task id, the vault's ERC-1271 check demands a matching quorum attestation, and the token's
nonce tracking makes each attestation pay once."""

from __future__ import annotations

import secrets

from agentguard._attestation import sign_attestation
from agentguard.chain import execute_args, transact
from tests.chain.helpers import (
    AGENT,
    AGENT_KEY,
    FACILITATOR,
    INVALID,
    MAGIC,
    OUTSIDER,
    OWNER,
    PAYEE,
    PAYMENT_AMOUNT,
    STRANGER_KEYS,
    VAULT_USDC,
    Env,
    Payment,
    events,
    reverts,
)


def test_attested_payment_settles_through_the_token(env: Env) -> None:
    p = Payment(env)
    assert p.is_valid(p.blob()) == MAGIC
    receipt = transact(env.w3, p.settle_call(), sender=FACILITATOR)
    assert events(env.token, "Transfer", receipt) == [
        {"from": env.vault.address, "to": PAYEE, "value": PAYMENT_AMOUNT}
    ]
    assert events(env.token, "AuthorizationUsed", receipt) == [
        {"authorizer": env.vault.address, "nonce": p.attestation.task_id}
    ]
    assert env.usdc(PAYEE) == PAYMENT_AMOUNT
    assert env.usdc(env.vault.address) == VAULT_USDC - PAYMENT_AMOUNT
    # single use: the token remembers the nonce, which is the task id
    with reverts("AuthorizationAlreadyUsed", env.vault.address, p.attestation.task_id):
        p.settle_call().transact({"from": FACILITATOR})


def test_settled_payment_cannot_also_be_executed(env: Env) -> None:
    p = Payment(env)
    transact(env.w3, p.settle_call(), sender=FACILITATOR)
    args = execute_args(p.intent.newton_intent(), p.attestation)
    with reverts("TaskAlreadyUsed", p.attestation.task_id):
        env.vault.functions.execute(*args).transact({"from": AGENT})
    assert env.usdc(PAYEE) == PAYMENT_AMOUNT


def test_executed_attestation_cannot_also_pay(env: Env) -> None:
    p = Payment(env)
    transact(
        env.w3,
        env.vault.functions.execute(*execute_args(p.intent.newton_intent(), p.attestation)),
        sender=AGENT,
    )
    assert p.is_valid(p.blob()) == INVALID
    with reverts("InvalidSignature", env.vault.address):
        p.settle_call().transact({"from": FACILITATOR})
    assert env.usdc(PAYEE) == PAYMENT_AMOUNT


def test_wrong_nonce_is_invalid(env: Env) -> None:
    p = Payment(env)
    nonce = secrets.token_bytes(32)
    p.digest = p.authorization_digest(nonce=nonce)
    p.agent_signature = sign_attestation(AGENT_KEY, p.digest)
    assert p.is_valid(p.raw_blob(nonce=nonce)) == INVALID
    with reverts("InvalidSignature", env.vault.address):
        p.settle_call(p.raw_blob(nonce=nonce), nonce=nonce).call()


def test_wrong_amount_is_invalid(env: Env) -> None:
    p = Payment(env)
    # the agent signs for more than the operators attested
    p.digest = p.authorization_digest(value=PAYMENT_AMOUNT + 1)
    p.agent_signature = sign_attestation(AGENT_KEY, p.digest)
    assert p.is_valid(p.raw_blob(value=PAYMENT_AMOUNT + 1)) == INVALID
    with reverts("InvalidSignature", env.vault.address):
        p.settle_call(p.raw_blob(value=PAYMENT_AMOUNT + 1), value=PAYMENT_AMOUNT + 1).call()
    # and a blob that claims the attested amount does not match the authorization's digest
    assert p.is_valid(p.raw_blob()) == INVALID


def test_wrong_pay_to_is_invalid(env: Env) -> None:
    p = Payment(env)
    p.digest = p.authorization_digest(to=OUTSIDER)
    p.agent_signature = sign_attestation(AGENT_KEY, p.digest)
    assert p.is_valid(p.raw_blob(pay_to=OUTSIDER)) == INVALID
    with reverts("InvalidSignature", env.vault.address):
        p.settle_call(p.raw_blob(pay_to=OUTSIDER), to=OUTSIDER).call()


def test_missing_or_foreign_agent_signature_is_invalid(env: Env) -> None:
    p = Payment(env)
    assert p.is_valid(p.raw_blob(agent_signature=b"")) == INVALID
    stranger = sign_attestation(STRANGER_KEYS[0], p.digest)
    assert p.is_valid(p.raw_blob(agent_signature=stranger)) == INVALID
    with reverts("InvalidSignature", env.vault.address):
        p.settle_call(p.raw_blob(agent_signature=b"")).call()
    assert p.is_valid(p.blob()) == MAGIC


def test_quorum_problems_are_invalid(env: Env) -> None:
    p = Payment(env)
    sigs = [s.signature for s in p.attestation.signatures]
    for bad in (
        [],
        sigs[:1],
        [sigs[0], sigs[0]],
        [*sigs, sign_attestation(STRANGER_KEYS[0], p.digest)],
    ):
        assert p.is_valid(p.raw_blob(operator_signatures=bad)) == INVALID
    assert p.is_valid(p.blob()) == MAGIC


def test_digest_must_be_the_authorizations(env: Env) -> None:
    p = Payment(env)
    assert p.is_valid(p.blob(), digest=secrets.token_bytes(32)) == INVALID
    other_token = p.raw_blob(token=OUTSIDER)  # no code: no domain separator to bind to
    assert p.is_valid(other_token) == INVALID


def test_pause_expiry_and_policy_make_payments_invalid(env: Env) -> None:
    p = Payment(env)
    transact(env.w3, env.vault.functions.pause(), sender=OWNER)
    assert p.is_valid(p.blob()) == INVALID
    transact(env.w3, env.vault.functions.unpause(), sender=OWNER)
    assert p.is_valid(p.blob()) == MAGIC
    expired = Payment(env, expires_at=env.now())
    assert expired.is_valid(expired.blob()) == INVALID
    other_policy = Payment(env, policy_id=b"\x07" * 32)
    assert other_policy.is_valid(other_policy.blob()) == INVALID
