"""x402 payments from a vault: the agent signs an EIP-3009 authorization whose nonce is the
task id, the vault's ERC-1271 check demands a matching quorum attestation, and the token's
nonce tracking makes each attestation pay once."""

from __future__ import annotations

import secrets
from typing import Any

from eth_abi.abi import encode as abi_encode

from agentguard._attestation import Attestation, sign_attestation
from agentguard._intent import PaymentIntent
from agentguard.chain import (
    execute_args,
    payment_signature,
    transact,
    transfer_authorization_digest,
)
from agentguard.chain.vault import PAYMENT_SIGNATURE_TYPES
from tests.chain.helpers import (
    AGENT,
    AGENT_KEY,
    FACILITATOR,
    OUTSIDER,
    OWNER,
    PAYEE,
    STRANGER_KEYS,
    VAULT_USDC,
    Env,
    attest,
    events,
    reverts,
)

MAGIC = bytes.fromhex("1626ba7e")
INVALID = bytes.fromhex("ffffffff")
AMOUNT = 10_000  # $0.01


class Payment:
    """One x402 `exact` payment from the vault, with everything the facilitator sees."""

    def __init__(
        self, env: Env, *, amount: int = AMOUNT, pay_to: str = PAYEE, **attest_kw: Any
    ) -> None:
        self.env = env
        self.intent = PaymentIntent(
            payer=env.vault.address, scheme="exact", network="eip155:8453",
            asset=env.token.address, amount=amount, pay_to=pay_to,
        )  # fmt: skip
        expires_at = attest_kw.pop("expires_at", env.now() + 600)
        self.attestation: Attestation = attest(
            env.vault.address, self.intent, expires_at=expires_at, **attest_kw
        )
        self.valid_after, self.valid_before = 0, env.now() + 300
        self.digest = self.authorization_digest()
        self.agent_signature = sign_attestation(AGENT_KEY, self.digest)

    def authorization_digest(self, **overrides: Any) -> bytes:
        fields: dict[str, Any] = {
            "from_": self.env.vault.address,
            "to": self.intent.pay_to,
            "value": self.intent.amount,
            "valid_after": self.valid_after,
            "valid_before": self.valid_before,
            "nonce": self.attestation.task_id,
        }
        fields.update(overrides)
        return transfer_authorization_digest(token=self.env.token.address, chain_id=8453, **fields)

    def blob(self) -> bytes:
        return payment_signature(
            self.intent,
            self.attestation,
            valid_after=self.valid_after,
            valid_before=self.valid_before,
            agent_signature=self.agent_signature,
        )

    def raw_blob(self, **overrides: Any) -> bytes:
        """The blob with fields changed behind the helper's back (what an attacker could send)."""
        fields: dict[str, Any] = {
            "token": self.env.token.address,
            "pay_to": self.intent.pay_to,
            "value": self.intent.amount,
            "valid_after": self.valid_after,
            "valid_before": self.valid_before,
            "nonce": self.attestation.task_id,
            "task_id": self.attestation.task_id,
            "policy_id": self.attestation.policy_id,
            "expires_at": self.attestation.expires_at,
            "agent_signature": self.agent_signature,
            "operator_signatures": [s.signature for s in self.attestation.signatures],
        }
        fields.update(overrides)
        return abi_encode(list(PAYMENT_SIGNATURE_TYPES), list(fields.values()))

    def settle_call(self, blob: bytes | None = None, **auth: Any) -> Any:
        """The facilitator's `transferWithAuthorization(..., bytes signature)`."""
        return self.env.token.functions.transferWithAuthorization(
            self.env.vault.address,
            auth.get("to", self.intent.pay_to),
            auth.get("value", self.intent.amount),
            self.valid_after,
            self.valid_before,
            auth.get("nonce", self.attestation.task_id),
            self.blob() if blob is None else blob,
        )

    def is_valid(self, blob: bytes, digest: bytes | None = None) -> bytes:
        return bytes(self.env.vault.functions.isValidSignature(digest or self.digest, blob).call())


def test_attested_payment_settles_through_the_token(env: Env) -> None:
    p = Payment(env)
    assert p.is_valid(p.blob()) == MAGIC
    receipt = transact(env.w3, p.settle_call(), sender=FACILITATOR)
    assert events(env.token, "Transfer", receipt) == [
        {"from": env.vault.address, "to": PAYEE, "value": AMOUNT}
    ]
    assert events(env.token, "AuthorizationUsed", receipt) == [
        {"authorizer": env.vault.address, "nonce": p.attestation.task_id}
    ]
    assert env.usdc(PAYEE) == AMOUNT
    assert env.usdc(env.vault.address) == VAULT_USDC - AMOUNT
    # single use: the token remembers the nonce, which is the task id
    with reverts("AuthorizationAlreadyUsed", env.vault.address, p.attestation.task_id):
        p.settle_call().transact({"from": FACILITATOR})


def test_settled_payment_cannot_also_be_executed(env: Env) -> None:
    p = Payment(env)
    transact(env.w3, p.settle_call(), sender=FACILITATOR)
    args = execute_args(p.intent.newton_intent(), p.attestation)
    with reverts("TaskAlreadyUsed", p.attestation.task_id):
        env.vault.functions.execute(*args).transact({"from": AGENT})
    assert env.usdc(PAYEE) == AMOUNT


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
    assert env.usdc(PAYEE) == AMOUNT


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
    p.digest = p.authorization_digest(value=AMOUNT + 1)
    p.agent_signature = sign_attestation(AGENT_KEY, p.digest)
    assert p.is_valid(p.raw_blob(value=AMOUNT + 1)) == INVALID
    with reverts("InvalidSignature", env.vault.address):
        p.settle_call(p.raw_blob(value=AMOUNT + 1), value=AMOUNT + 1).call()
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
