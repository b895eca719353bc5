"""A policy client's registration: which policy, params and expiry its owner chose, signed.

Operators must not take the gateway's word for which policy a policy client uses: a gateway
that could pick the policy could send ``allow := true``. So the owner signs (EIP-712, with the
key of the policy client itself for an EOA client, with the vault's ``owner()`` for an
``AgentVault``) a ``PolicyRegistration``:

    PolicyRegistration(address policyClient,address owner,uint256 chainId,bytes32 policyCodeHash,
                       bytes32 paramsHash,uint64 expireAfter,bytes32 policyId,uint64 version)
    domain = {name: "agentguard", version: "1", chainId, verifyingContract: policyClient}

with ``paramsHash = keccak(canonical_json(params))`` and ``policyId`` as in
``agentguard.policies.policy_id``. The JSON form carries the params themselves. Each operator
holds the newest registration per policy client (``agentguard.network.registry``) and signs
nothing for a policy client without one, or for other material, params or expiry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from coincurve import PrivateKey

from agentguard._attestation import operator_address, recover_signer, sign_attestation
from agentguard._eip712 import (
    address_word,
    domain_separator,
    keccak,
    typed_data_digest,
    uint_word,
)
from agentguard._exceptions import ConfigurationError, MalformedSignature
from agentguard.policies import Policy, canonical_json

__all__ = [
    "MAX_EXPIRE_AFTER",
    "MAX_VERSIONS",
    "REGISTRATION_TYPE",
    "Registration",
    "versions_after",
]

REGISTRATION_TYPE = (
    "PolicyRegistration(address policyClient,address owner,uint256 chainId,"
    "bytes32 policyCodeHash,bytes32 paramsHash,uint64 expireAfter,bytes32 policyId,"
    "uint64 version)"
)
REGISTRATION_TYPEHASH = keccak(REGISTRATION_TYPE.encode())
MAX_EXPIRE_AFTER = 86400
# Registrations kept per policy client: the one a vault pins and those registered after it
# (a switch the owner scheduled, then changed) must all stay at hand.
MAX_VERSIONS = 8

_ADDR = re.compile(r"^0x[0-9a-fA-F]{40}\Z")
_B32 = re.compile(r"^0x[0-9a-fA-F]{64}\Z")
_SIG = re.compile(r"^0x[0-9a-fA-F]{130}\Z")
_FIELDS = {
    "policy_client",
    "owner",
    "chain_id",
    "policy_code_hash",
    "params",
    "expire_after",
    "policy_id",
    "version",
    "signature",
}


def _invalid(message: str) -> ConfigurationError:
    return ConfigurationError(f"registration: {message}")


def _address(raw: Mapping[str, Any], field: str) -> bytes:
    value = raw.get(field)
    if not isinstance(value, str) or not _ADDR.match(value):
        raise _invalid(f"{field} must be a 0x-prefixed 20-byte address")
    return bytes.fromhex(value[2:])


def _uint(raw: Mapping[str, Any], field: str, low: int, high: int) -> int:
    value = raw.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _invalid(f"{field} must be an integer in {low}..{high}")
    return value


@dataclass(frozen=True)
class Registration:
    """A verified registration: ``from_json`` and ``sign`` are the only ways to get one."""

    policy_client: bytes
    owner: bytes
    chain_id: int
    policy_code_hash: bytes
    params: dict[str, Any]
    expire_after: int
    version: int
    signature: bytes

    @property
    def policy_client_hex(self) -> str:
        return "0x" + self.policy_client.hex()

    @property
    def owner_hex(self) -> str:
        return "0x" + self.owner.hex()

    @property
    def self_owned(self) -> bool:
        """Signed by the policy client's own key: an EOA, not a contract such as a vault."""
        return self.owner == self.policy_client

    @property
    def params_json(self) -> bytes:
        return canonical_json(self.params)

    @property
    def policy_id(self) -> bytes:
        return keccak(
            address_word(self.policy_client)
            + self.policy_code_hash
            + keccak(self.params_json)
            + uint_word(self.expire_after)
        )

    def digest(self) -> bytes:
        """The EIP-712 digest the owner signs."""
        struct_hash = keccak(
            REGISTRATION_TYPEHASH
            + address_word(self.policy_client)
            + address_word(self.owner)
            + uint_word(self.chain_id)
            + self.policy_code_hash
            + keccak(self.params_json)
            + uint_word(self.expire_after)
            + self.policy_id
            + uint_word(self.version)
        )
        return typed_data_digest(domain_separator(self.chain_id, self.policy_client), struct_hash)

    @classmethod
    def sign(
        cls,
        owner_key: PrivateKey,
        *,
        policy_client: str,
        policy: Policy,
        params: Mapping[str, Any],
        expire_after: int,
        chain_id: int,
        version: int,
    ) -> Registration:
        """What the owner signs (``ReferenceNetwork.register_policy_client``, the CLI)."""
        unsigned = {
            "policy_client": policy_client,
            "owner": operator_address(owner_key),
            "chain_id": chain_id,
            "policy_code_hash": "0x" + policy.code_hash.hex(),
            "params": dict(params),
            "expire_after": expire_after,
            "version": version,
        }
        draft = cls(*cls._fields(unsigned), signature=b"")
        return replace(draft, signature=sign_attestation(owner_key, draft.digest()))

    @staticmethod
    def _fields(
        raw: Mapping[str, Any],
    ) -> tuple[bytes, bytes, int, bytes, dict[str, Any], int, int]:
        client = _address(raw, "policy_client")
        owner = _address(raw, "owner")
        chain_id = _uint(raw, "chain_id", 1, (1 << 64) - 1)
        code_hash = raw.get("policy_code_hash")
        if not isinstance(code_hash, str) or not _B32.match(code_hash):
            raise _invalid("policy_code_hash must be 0x followed by 64 hex digits")
        params = raw.get("params")
        if not isinstance(params, dict):
            raise _invalid("params must be a JSON object")
        try:
            canonical_json(params)
        except (TypeError, ValueError) as exc:
            raise _invalid(f"params are not plain JSON: {exc}") from None
        expire_after = _uint(raw, "expire_after", 1, MAX_EXPIRE_AFTER)
        version = _uint(raw, "version", 0, (1 << 64) - 1)
        return (
            client,
            owner,
            chain_id,
            bytes.fromhex(code_hash[2:]),
            params,
            expire_after,
            version,
        )

    @classmethod
    def from_json(cls, raw: Any) -> Registration:
        """Parse and verify: the signature must recover to ``owner``."""
        if not isinstance(raw, dict):
            raise _invalid("must be an object (see agentguard/network/registration.py)")
        unknown = set(raw) - _FIELDS
        if unknown:
            raise _invalid(f"unknown fields {sorted(unknown)}")
        fields = cls._fields(raw)
        signature = raw.get("signature")
        if not isinstance(signature, str) or not _SIG.match(signature):
            raise _invalid("signature must be 0x followed by 65 bytes of hex")
        registration = cls(*fields, signature=bytes.fromhex(signature[2:]))
        try:
            signer = recover_signer(registration.digest(), registration.signature)
        except MalformedSignature as exc:
            raise _invalid(f"bad signature: {exc.message}") from None
        if signer != registration.owner:
            raise _invalid(f"signed by 0x{signer.hex()}, not by the owner {registration.owner_hex}")
        stated = raw.get("policy_id")
        if stated is not None and stated != "0x" + registration.policy_id.hex():
            raise _invalid("policy_id does not match the registered policy, params and expiry")
        return registration

    def replaces(self, held: Registration | None, *, chain_owner: str | None = None) -> bool:
        """Whether this registration takes the place of ``held`` (False: it is ``held``).

        Only the owner on record may re-register, and only with a higher version, so neither a
        stranger nor a replay of an older registration (looser params) can take over. The one
        exception: ``chain_owner``, the contract's ``owner()`` as the chain confirmed it, takes
        over from a registrant who is not that owner (who got in first, before the vault had
        code or where nobody could ask the chain).
        """
        if held is None:
            return True
        if held.owner != self.owner and chain_owner == self.owner_hex:
            return True
        if held.owner != self.owner:
            raise _invalid(
                f"policy client {self.policy_client_hex} is registered by {held.owner_hex}; "
                f"a registration signed by {self.owner_hex} is refused"
            )
        if self.version == held.version and self.digest() == held.digest():
            return False
        if self.version <= held.version:
            raise _invalid(
                f"version {self.version} is not newer than the registered version "
                f"{held.version} for {self.policy_client_hex}"
            )
        return True

    @property
    def wire_hash(self) -> bytes:
        """keccak of the canonical JSON of ``to_json``: names this exact registration (every
        field, the signature's bytes too) in a request to an operator that holds it already."""
        return keccak(canonical_json(self.to_json()))

    def to_json(self) -> dict[str, Any]:
        return {
            "policy_client": self.policy_client_hex,
            "owner": self.owner_hex,
            "chain_id": self.chain_id,
            "policy_code_hash": "0x" + self.policy_code_hash.hex(),
            "params": self.params,
            "expire_after": self.expire_after,
            "policy_id": "0x" + self.policy_id.hex(),
            "version": self.version,
            "signature": "0x" + self.signature.hex(),
        }


def versions_after(
    held: Sequence[Registration],
    offered: Registration,
    *,
    chain_owner: str | None = None,
    older: bool = False,
) -> list[Registration] | None:
    """The versions to hold (oldest first, at most ``MAX_VERSIONS``) once ``offered`` is
    accepted; ``None`` when it is held already. Raises ``ConfigurationError`` to refuse it.

    ``offered`` becomes the newest only by ``Registration.replaces`` (the owner, a higher
    version); an owner's takeover drops every version of the registrant before. With ``older``
    (an operator that missed it, and the chain says the vault pins its policy id, which only
    the owner can set) an older version by the same owner of a contract client joins the
    history, never as the newest.
    """
    if offered in held:
        return None
    newest = held[-1] if held else None
    if (
        older
        and newest is not None
        and not offered.self_owned
        and offered.owner == newest.owner
        and offered.version < newest.version
    ):
        if any(h.version == offered.version for h in held):
            raise _invalid(
                f"version {offered.version} of {offered.policy_client_hex} is held with other "
                "content; an owner signs each version once"
            )
        if len(held) >= MAX_VERSIONS and offered.version < held[0].version:
            raise _invalid(
                f"version {offered.version} is older than every version kept for "
                f"{offered.policy_client_hex}; re-register that configuration with a new version"
            )
        kept = sorted([*held, offered], key=lambda r: r.version)
        return kept[-MAX_VERSIONS:]
    if not offered.replaces(newest, chain_owner=chain_owner):
        return None
    if newest is not None and newest.owner != offered.owner:
        return [offered]
    return [*held, offered][-MAX_VERSIONS:]
