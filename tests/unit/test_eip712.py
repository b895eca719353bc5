"""The hand-written encoders must equal eth-account's generic EIP-712 implementation."""

from __future__ import annotations

from coincurve import PrivateKey
from eth_account import Account
from eth_account.messages import encode_typed_data
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard import TransactionIntent
from agentguard._attestation import attestation_digest, recover_signer, sign_attestation

INTENT_FIELDS = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "data", "type": "bytes"},
    {"name": "chainId", "type": "uint256"},
    {"name": "functionSignature", "type": "bytes"},
]
DOMAIN_FIELDS = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
ATTESTATION_FIELDS = [
    {"name": "taskId", "type": "bytes32"},
    {"name": "policyId", "type": "bytes32"},
    {"name": "policyClient", "type": "address"},
    {"name": "intentHash", "type": "bytes32"},
    {"name": "allow", "type": "bool"},
    {"name": "expiresAt", "type": "uint64"},
    {"name": "tier", "type": "uint8"},
]

addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())


@settings(max_examples=60, deadline=None)
@given(
    sender=addresses,
    to=addresses,
    value=st.integers(0, 2**256 - 1),
    chain_id=st.integers(1, 2**64),
    amount=st.integers(0, 2**256 - 1),
)
def test_intent_hash_matches_generic_encoder(sender, to, value, chain_id, amount):
    transfer = TransactionIntent.erc20_transfer(
        sender=sender, token=to, recipient=sender, amount=amount, chain_id=chain_id
    )
    plain = TransactionIntent(from_=sender, to=to, value=value, chain_id=chain_id)
    for intent in (transfer, plain):
        message = encode_typed_data(
            full_message={
                "types": {
                    "EIP712Domain": [{"name": "name", "type": "string"}],
                    "Intent": INTENT_FIELDS,
                },
                "primaryType": "Intent",
                "domain": {"name": "x"},
                "message": {
                    "from": intent.from_,
                    "to": intent.to,
                    "value": intent.value,
                    "data": intent.data,
                    "chainId": intent.chain_id,
                    "functionSignature": intent.function_signature.encode(),
                },
            }
        )
        assert message.body == intent.intent_hash


@settings(max_examples=40, deadline=None)
@given(
    task_id=st.binary(min_size=32, max_size=32),
    policy_id=st.binary(min_size=32, max_size=32),
    intent_hash=st.binary(min_size=32, max_size=32),
    client=st.binary(min_size=20, max_size=20),
    allow=st.booleans(),
    expires_at=st.integers(0, 2**64 - 1),
    chain_id=st.integers(1, 2**32),
    tier=st.integers(0, 255),
)
def test_attestation_digest_and_signature_match_eth_account(
    task_id, policy_id, intent_hash, client, allow, expires_at, chain_id, tier
):
    key = PrivateKey()
    account = Account.from_key(key.secret)
    client_hex = "0x" + client.hex()
    digest = attestation_digest(
        chain_id=chain_id,
        policy_client=client,
        task_id=task_id,
        policy_id=policy_id,
        intent_hash=intent_hash,
        allow=allow,
        expires_at=expires_at,
        tier=tier,
    )
    signed = account.sign_typed_data(
        full_message={
            "types": {"EIP712Domain": DOMAIN_FIELDS, "Attestation": ATTESTATION_FIELDS},
            "primaryType": "Attestation",
            "domain": {
                "name": "agentguard",
                "version": "1",
                "chainId": chain_id,
                "verifyingContract": client_hex,
            },
            "message": {
                "taskId": task_id,
                "policyId": policy_id,
                "policyClient": client_hex,
                "intentHash": intent_hash,
                "allow": allow,
                "expiresAt": expires_at,
                "tier": tier,
            },
        }
    )
    assert signed.message_hash == digest
    ours = sign_attestation(key, digest)
    assert ours == bytes(signed.signature)
    assert "0x" + recover_signer(digest, ours).hex() == account.address.lower()
