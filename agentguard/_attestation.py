"""Attestations: an operator quorum's signed decision about one exact intent.

Each operator signs the EIP-712 digest of

    Attestation(bytes32 taskId, bytes32 policyId, address policyClient, bytes32 intentHash,
                bool allow, uint64 expiresAt)

under the domain ``{name: "agentguard", version: "1", chainId: <intent chain>,
verifyingContract: <policy client>}``. The same digest is what ``AgentVault`` recomputes
onchain with ``ecrecover``, so one signature serves the SDK check and the contract check.
The intent hash inside is always recomputed locally; the copy a gateway reports is only used
to produce a clearer error.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from coincurve import PrivateKey, PublicKey
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentguard._eip712 import (
    ATTESTATION_TYPEHASH,
    address_word,
    bool_word,
    domain_separator,
    keccak,
    typed_data_digest,
    uint_word,
)
from agentguard._exceptions import MalformedSignature

__all__ = [
    "Attestation",
    "Decision",
    "OperatorSignature",
    "attestation_digest",
    "operator_address",
    "recover_signer",
    "sign_attestation",
]

Decision = Literal["allow", "deny", "approval_required"]

_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N = _SECP256K1_N // 2
_B32_RE = re.compile(r"^0x[0-9a-fA-F]{64}$")
_ADDR_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")


def _b32(value: Any, field: str) -> bytes:
    if isinstance(value, list) and len(value) == 32:  # Newton byte arrays
        value = bytes(value)
    if isinstance(value, bytes) and len(value) == 32:
        return value
    if isinstance(value, str) and _B32_RE.match(value):
        return bytes.fromhex(value[2:])
    raise ValueError(f"{field} must be 32 bytes (0x + 64 hex)")


def attestation_digest(
    *,
    chain_id: int,
    policy_client: bytes,
    task_id: bytes,
    policy_id: bytes,
    intent_hash: bytes,
    allow: bool,
    expires_at: int,
) -> bytes:
    if not 0 <= expires_at < 1 << 64:
        raise ValueError("expires_at must fit in uint64")
    struct_hash = keccak(
        ATTESTATION_TYPEHASH
        + task_id
        + policy_id
        + address_word(policy_client)
        + intent_hash
        + bool_word(allow)
        + uint_word(expires_at)
    )
    return typed_data_digest(domain_separator(chain_id, policy_client), struct_hash)


def sign_attestation(key: PrivateKey, digest: bytes) -> bytes:
    """65 bytes ``r ‖ s ‖ v`` (v = 27/28, low s), the form ``ecrecover`` and OZ ECDSA accept."""
    sig = key.sign_recoverable(digest, hasher=None)
    return sig[:64] + bytes([sig[64] + 27])


def operator_address(key: PrivateKey) -> str:
    from eth_utils.address import to_checksum_address

    return to_checksum_address(keccak(key.public_key.format(compressed=False)[1:])[12:])


def recover_signer(digest: bytes, signature: bytes) -> bytes:
    """The 20-byte address that signed ``digest``; rejects malleable (high-s) signatures."""
    if len(signature) != 65:
        raise MalformedSignature(f"signature is {len(signature)} bytes, expected 65")
    v = signature[64]
    if v >= 27:
        v -= 27
    if v not in (0, 1):
        raise MalformedSignature(f"signature recovery id {signature[64]} is not 27/28")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    if not (0 < r < _SECP256K1_N and 0 < s <= _HALF_N):
        raise MalformedSignature("signature has r/s out of range (or a malleable high s)")
    try:
        public = PublicKey.from_signature_and_message(
            signature[:64] + bytes([v]), digest, hasher=None
        )
    except Exception:
        raise MalformedSignature("signature does not recover to a public key") from None
    return keccak(public.format(compressed=False)[1:])[12:]


class OperatorSignature(BaseModel):
    model_config = ConfigDict(frozen=True)

    operator: str
    signature: bytes

    @field_validator("operator", mode="before")
    @classmethod
    def _addr(cls, v: Any) -> str:
        if not isinstance(v, str) or not _ADDR_RE.match(v):
            raise ValueError("operator must be a 0x address")
        return v.lower()

    @field_validator("signature", mode="before")
    @classmethod
    def _sig(cls, v: Any) -> bytes:
        if isinstance(v, list):
            return bytes(v)
        if isinstance(v, str) and v.startswith("0x"):
            return bytes.fromhex(v[2:])
        if isinstance(v, bytes):
            return v
        raise ValueError("signature must be 0x-hex or a byte array")


class Attestation(BaseModel):
    """What an authorizer returns. Not trusted until a ``Verifier`` turns it into a
    ``VerifiedAttestation``; a deny is a normal, final value of this type."""

    model_config = ConfigDict(frozen=True)

    decision: Decision
    task_id: bytes
    policy_id: bytes
    policy_client: str
    intent_hash: bytes = Field(description="as reported by the gateway; never trusted")
    expires_at: int
    signatures: tuple[OperatorSignature, ...] = ()
    reasons: tuple[str, ...] = ()
    scheme: Literal["ecdsa", "newton-bls"] = "ecdsa"
    operator_errors: tuple[dict[str, Any], ...] = ()

    @field_validator("task_id", "policy_id", "intent_hash", mode="before")
    @classmethod
    def _bytes32(cls, v: Any, info: Any) -> bytes:
        return _b32(v, info.field_name)

    @field_validator("policy_client", mode="before")
    @classmethod
    def _client(cls, v: Any) -> str:
        if not isinstance(v, str) or not _ADDR_RE.match(v):
            raise ValueError("policy_client must be a 0x address")
        return v

    @property
    def allowed(self) -> bool:
        return self.decision == "allow"

    def digest_for(self, intent_hash: bytes, chain_id: int) -> bytes:
        """The digest operators must have signed if this attests ``intent_hash`` on ``chain_id``."""
        return attestation_digest(
            chain_id=chain_id,
            policy_client=bytes.fromhex(self.policy_client[2:]),
            task_id=self.task_id,
            policy_id=self.policy_id,
            intent_hash=intent_hash,
            allow=self.allowed,
            expires_at=self.expires_at,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "task_id": "0x" + self.task_id.hex(),
            "policy_id": "0x" + self.policy_id.hex(),
            "policy_client": self.policy_client,
            "intent_hash": "0x" + self.intent_hash.hex(),
            "expires_at": self.expires_at,
            "signatures": [
                {"operator": s.operator, "signature": "0x" + s.signature.hex()}
                for s in self.signatures
            ],
            "reasons": list(self.reasons),
            "scheme": self.scheme,
        }
