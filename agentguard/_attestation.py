"""Attestations: an operator quorum's signed decision about one exact intent.

Each operator signs the EIP-712 digest of

    Attestation(bytes32 taskId, bytes32 policyId, address policyClient, bytes32 intentHash,
                bool allow, uint64 expiresAt, uint8 tier)

under the domain ``{name: "agentguard", version: "1", chainId: <intent chain>,
verifyingContract: <policy client>}``. The same digest is what ``AgentVault`` recomputes
onchain with ``ecrecover``, so one signature serves the SDK check and the contract check.
The intent hash inside is always recomputed locally; the copy a gateway reports is only used
to produce a clearer error. ``tier`` is the trust tier the operators signed (``_tiers``): a
gateway that relabels it breaks every signature.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal, Self, TypeVar

from coincurve import PrivateKey, PublicKey
from coincurve._libsecp256k1 import ffi as _ffi
from coincurve._libsecp256k1 import lib as _lib
from coincurve.context import GLOBAL_CONTEXT
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentguard._eip712 import (
    ATTESTATION_TYPEHASH,
    address_word,
    bool_word,
    domain_separator,
    keccak,
    typed_data_digest,
    uint_word,
)
from agentguard._exceptions import MalformedAttestation, MalformedSignature
from agentguard._json import json_bytes, preview

__all__ = [
    "Attestation",
    "Decision",
    "OperatorSignature",
    "attestation_digest",
    "operator_address",
    "private_copy",
    "recover_signer",
    "sign_attestation",
    "with_policy_data",
]

Decision = Literal["allow", "deny", "approval_required"]

_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N = _SECP256K1_N // 2
_ADDR_RE = re.compile(r"^0x[0-9a-fA-F]{40}\Z")  # \Z: $ would pass "0x<40 hex>\n"
_MAX_SIGNATURES = 256  # far above any operator set; bounds the verifier's ecrecover work
_MAX_REASONS = 256
_CTX = GLOBAL_CONTEXT.ctx
_UNCOMPRESSED = _lib.SECP256K1_EC_UNCOMPRESSED


def _b32(value: Any, field: str) -> bytes:
    if type(value) is bytes:
        raw = value
    elif isinstance(value, bytes):  # its bytes, as a plain value (no __eq__/__hash__ of its own)
        raw = bytes(memoryview(value))
    else:
        raw = json_bytes(value)
    if len(raw) != 32:
        raise ValueError(f"{field} must be 32 bytes (0x + 64 hex), got {len(raw)} bytes")
    return raw


def _address(value: Any, field: str) -> str:
    """A 0x address; a mixed-case one must carry a correct EIP-55 checksum."""
    if type(value) is str and len(value) == 42 and _address_ok(value):
        return value  # judged before (the same few operators sign every attestation)
    return _address_checked(value, field)


@lru_cache(maxsize=1024)
def _address_ok(value: str) -> bool:
    """Whether ``_address`` accepts ``value``: a pure function of an exact ``str``."""
    try:
        _address_checked(value, "address")
    except ValueError:
        return False
    return True


def _address_checked(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _ADDR_RE.match(value):
        raise ValueError(f"{field} must be a 0x address of 40 hex digits, got {preview(value)}")
    digits = value[2:]
    if digits != digits.lower() and digits != digits.upper() and _checksummed(value) != value:
        raise ValueError(f"{field} {value} has a wrong EIP-55 checksum (a mistyped address?)")
    return value


@lru_cache(maxsize=1024)
def _checksummed(address: str) -> str:
    from eth_utils.address import to_checksum_address

    return to_checksum_address(address)


def _as_malformed(exc: ValidationError, what: str) -> MalformedAttestation:
    """Pydantic's error, named by field, as the typed error callers catch."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or what
    nested = (first.get("ctx") or {}).get("error")
    if isinstance(nested, MalformedAttestation):  # an OperatorSignature inside an Attestation
        return MalformedAttestation(f"{what} is malformed at {where}: {nested.message}")
    message = str(first["msg"]).removeprefix("Value error, ")
    return MalformedAttestation(f"{what} is malformed at {where}: {message}")


class _WireModel(BaseModel):
    """Frozen model whose construction errors are always ``MalformedAttestation``."""

    model_config = ConfigDict(frozen=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _as_malformed(exc, type(self).__name__) from None

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise _as_malformed(exc, cls.__name__) from None

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Self:
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as exc:
            raise _as_malformed(exc, cls.__name__) from None


def attestation_digest(
    *,
    chain_id: int,
    policy_client: bytes,
    task_id: bytes,
    policy_id: bytes,
    intent_hash: bytes,
    allow: bool,
    expires_at: int,
    tier: int = 0,
) -> bytes:
    if not 0 <= expires_at < 1 << 64:
        raise ValueError("expires_at must fit in uint64")
    if not 0 <= tier < 1 << 8:
        raise ValueError("tier must fit in uint8")
    struct_hash = keccak(
        ATTESTATION_TYPEHASH
        + task_id
        + policy_id
        + address_word(policy_client)
        + intent_hash
        + bool_word(allow)
        + uint_word(expires_at)
        + uint_word(tier)
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
    if type(signature) is not bytes:
        # Only bytes, as coincurve took before the direct libsecp256k1 calls; a subclass is
        # read as its bytes, so its own slicing cannot show the range check another s.
        if not isinstance(signature, bytes):
            raise MalformedSignature(f"signature is {type(signature).__name__}, not bytes")
        signature = bytes(memoryview(signature))
    if len(signature) != 65:
        raise MalformedSignature(f"signature is {len(signature)} bytes, expected 65")
    # Only 27/28, as the operators sign and as ecrecover (and so the vault) reads it: v = 0/1
    # is the same signature spelled in a way the contract refuses.
    v = signature[64] - 27
    if v not in (0, 1):
        raise MalformedSignature(f"signature recovery id {signature[64]} is not 27/28")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    if not (0 < r < _SECP256K1_N and 0 < s <= _HALF_N):
        raise MalformedSignature("signature has r/s out of range (or a malleable high s)")
    if type(digest) is bytes and len(digest) == 32:
        public = _recover_public(digest, signature[:64], v)
    else:  # anything else goes to coincurve, which refuses it as before
        public = _recover_public_slow(digest, signature[:64], v)
    if public is None:
        raise MalformedSignature("signature does not recover to a public key")
    return _address_of(public)


def _recover_public(digest: bytes, compact: bytes, recid: int) -> bytes | None:
    """The 64-byte public key (x ‖ y) that signed the 32-byte ``digest``, or None: the three
    libsecp256k1 calls ``PublicKey.from_signature_and_message`` and ``format`` make, without
    their wrapper objects (about a fifth of a recovery's cost; the gateway recovers every vote and
    the client every signature). ``tests/unit/test_recover_fast.py`` holds it to coincurve."""
    parsed = _ffi.new("secp256k1_ecdsa_recoverable_signature *")
    if not _lib.secp256k1_ecdsa_recoverable_signature_parse_compact(_CTX, parsed, compact, recid):
        return None
    point = _ffi.new("secp256k1_pubkey *")
    if not _lib.secp256k1_ecdsa_recover(_CTX, point, parsed, digest):
        return None
    out = _ffi.new("unsigned char[65]")
    size = _ffi.new("size_t *", 65)
    _lib.secp256k1_ec_pubkey_serialize(_CTX, out, size, point, _UNCOMPRESSED)
    return _ffi.buffer(out, 65)[1:]  # type: ignore[no-any-return]


def _recover_public_slow(digest: Any, compact: bytes, recid: int) -> bytes | None:
    """``_recover_public`` through coincurve's objects (the reference the fast one is held to)."""
    try:
        public = PublicKey.from_signature_and_message(compact + bytes([recid]), digest, hasher=None)
    except Exception:
        return None
    return public.format(compressed=False)[1:]


@lru_cache(maxsize=256)
def _address_of(public_key: bytes) -> bytes:
    """The address of a 64-byte public key: a pure function, and the same few operator keys
    recover from every attestation, so each keccak is paid once (bounded: a flood of strangers'
    keys only evicts)."""
    return keccak(public_key)[12:]


class OperatorSignature(_WireModel):
    """One operator's signature. Its length is judged by the verifier (``MalformedSignature``);
    ``Attestation.from_json`` already refuses anything but 65 bytes on the wire."""

    operator: str
    signature: bytes

    @field_validator("operator", mode="before")
    @classmethod
    def _addr(cls, v: Any) -> str:
        return _address(v, "operator").lower()

    @field_validator("signature", mode="before")
    @classmethod
    def _sig(cls, v: Any) -> bytes:
        return v if isinstance(v, bytes) else json_bytes(v)


class Attestation(_WireModel):
    """What an authorizer returns. Not trusted until a ``Verifier`` turns it into a
    ``VerifiedAttestation``; a deny is a normal, final value of this type.

    Building one from bad values raises ``MalformedAttestation``; ``from_json`` is the strict
    reader for documents that crossed a wire."""

    decision: Decision
    task_id: bytes
    policy_id: bytes
    policy_client: str
    intent_hash: bytes = Field(description="as reported by the gateway; never trusted")
    expires_at: int = Field(
        description="ecdsa: unix seconds; newton-bls: Newton's expiration block number"
    )
    signatures: tuple[OperatorSignature, ...] = ()
    reasons: tuple[str, ...] = ()
    scheme: Literal["ecdsa", "newton-bls"] = "ecdsa"
    tier: int = Field(
        default=0, description="the trust tier the operators signed (uint8; see _tiers)"
    )
    operator_errors: tuple[dict[str, Any], ...] = ()
    newton_result: str | None = Field(
        default=None,
        description="scheme newton-bls: the gateway's whole newt_createTask result as received, "
        "as compact JSON text (immutable), for the BLS verifier to re-read; never trusted as is",
    )
    policy_data: str | None = Field(
        default=None,
        description="the policy data (data.wasm) the gateway says the operators evaluated, as "
        "JSON text; kept for the audit log so an auditor can re-evaluate; never trusted",
    )

    @field_validator("task_id", "policy_id", "intent_hash", mode="before")
    @classmethod
    def _bytes32(cls, v: Any, info: Any) -> bytes:
        return _b32(v, info.field_name)

    @field_validator("policy_client", mode="before")
    @classmethod
    def _client(cls, v: Any) -> str:
        return _address(v, "policy_client")

    @field_validator("expires_at", mode="before")
    @classmethod
    def _expiry(cls, v: Any) -> int:
        if type(v) is not int or not 0 <= v < 1 << 64:
            raise ValueError(f"expires_at must be an integer in uint64, got {preview(v)}")
        return v

    @field_validator("tier", mode="before")
    @classmethod
    def _tier(cls, v: Any) -> int:
        if type(v) is not int or not 0 <= v < 1 << 8:
            raise ValueError(f"tier must be an integer in uint8, got {preview(v)}")
        return v

    @classmethod
    def from_json(
        cls, doc: Any, *, operator_errors: Sequence[Mapping[str, Any]] = ()
    ) -> Attestation:
        """Read the documented wire form (``to_json``'s output, or the reference network's
        ``attestation`` object) strictly: every field of its exact JSON type, 32-byte ids as
        0x-hex or byte arrays, signatures exactly 65 bytes. Anything else is
        ``MalformedAttestation``; nothing is coerced (no ``"60"`` for 60, no ``true`` for 1)."""
        if not isinstance(doc, Mapping):
            raise MalformedAttestation(f"attestation must be a JSON object, got {preview(doc)}")
        for name in ("decision", "task_id", "policy_id", "policy_client", "intent_hash"):
            if name not in doc:
                raise MalformedAttestation(f"attestation has no {name}")
        for name in ("decision", "scheme"):
            if name in doc and not isinstance(doc[name], str):
                raise MalformedAttestation(
                    f"attestation {name} must be text, got {preview(doc[name])}"
                )
        signatures = _list(doc.get("signatures", []), "signatures", _MAX_SIGNATURES)
        for i, sig in enumerate(signatures):
            if not isinstance(sig, Mapping):
                raise MalformedAttestation(f"attestation signatures.{i} is not an object")
        reasons = _list(doc.get("reasons", []), "reasons", _MAX_REASONS)
        values = {
            "decision": doc["decision"],
            "task_id": doc["task_id"],
            "policy_id": doc["policy_id"],
            "policy_client": doc["policy_client"],
            "intent_hash": doc["intent_hash"],
            "expires_at": doc.get("expires_at"),
            "signatures": tuple(
                {"operator": s.get("operator"), "signature": s.get("signature")} for s in signatures
            ),
            "reasons": tuple(reasons),
            "scheme": doc.get("scheme", "ecdsa"),
            "tier": doc.get("tier", 0),
            "operator_errors": tuple(dict(e) for e in operator_errors),
        }
        attestation = _plain(cls, values) or cls.model_validate(values)
        for i, sig in enumerate(attestation.signatures):
            if len(sig.signature) != 65:
                raise MalformedAttestation(
                    f"attestation signatures.{i} is {len(sig.signature)} bytes, expected 65 "
                    "(r ‖ s ‖ v)"
                )
        return attestation

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
            tier=self.tier,
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
            "tier": self.tier,
        }


_DECISIONS = frozenset(("allow", "deny", "approval_required"))
_SCHEMES = frozenset(("ecdsa", "newton-bls"))
_HEX_TYPES = (str, list)  # how bytes arrive in JSON
# the fields from_json names (model_fields_set of what it returns)
_SET_BY_FROM_JSON = frozenset(
    (
        "decision",
        "task_id",
        "policy_id",
        "policy_client",
        "intent_hash",
        "expires_at",
        "signatures",
        "reasons",
        "scheme",
        "tier",
        "operator_errors",
    )
)


def _plain(cls: type[Attestation], values: dict[str, Any]) -> Attestation | None:
    """``cls.model_validate(values)`` without pydantic's machinery, for the values a JSON
    document holds when every one is well formed: the same validators, on exact JSON types
    only. Anything else (a str subclass, a bad field) returns None and pydantic judges it, so
    what is refused, and how, is unchanged (tests/unit/test_attestation_fast_path.py)."""
    decision, scheme, reasons = values["decision"], values["scheme"], values["reasons"]
    expires_at, tier = values["expires_at"], values["tier"]
    if (
        type(decision) is not str
        or decision not in _DECISIONS
        or type(scheme) is not str
        or scheme not in _SCHEMES
        or type(expires_at) is not int
        or not 0 <= expires_at < 1 << 64
        or type(tier) is not int
        or not 0 <= tier < 1 << 8
        or type(values["policy_client"]) is not str
        or not all(type(values[f]) in _HEX_TYPES for f in ("task_id", "policy_id", "intent_hash"))
        or not all(type(r) is str for r in reasons)
        or not all(type(k) is str for e in values["operator_errors"] for k in e)
    ):
        return None
    try:
        signatures = tuple(
            _built(
                OperatorSignature,
                {
                    "operator": _address(s["operator"], "operator").lower(),
                    "signature": json_bytes(s["signature"]),
                },
            )
            for s in values["signatures"]
        )
        return _built(
            cls,
            {
                "decision": decision,
                "task_id": _b32(values["task_id"], "task_id"),
                "policy_id": _b32(values["policy_id"], "policy_id"),
                "policy_client": _address(values["policy_client"], "policy_client"),
                "intent_hash": _b32(values["intent_hash"], "intent_hash"),
                "expires_at": expires_at,
                "signatures": signatures,
                "reasons": reasons,
                "scheme": scheme,
                "tier": tier,
                "operator_errors": values["operator_errors"],
                "newton_result": None,
                "policy_data": None,
            },
            _SET_BY_FROM_JSON,
        )
    except ValueError:
        return None


_M = TypeVar("_M", bound=BaseModel)
_set = object.__setattr__


def _built(
    cls: type[_M], fields: dict[str, Any], fields_set: frozenset[str] | set[str] | None = None
) -> _M:
    """What ``cls.model_construct(**fields)`` builds (``fields``: every field, in declaration
    order), without its per-field loop: these models have no alias, extra, private attribute
    or post-init for it to handle (pinned by tests/unit/test_attestation_fast_path.py)."""
    model = cls.__new__(cls)
    _set(model, "__dict__", fields)
    _set(model, "__pydantic_fields_set__", set(fields if fields_set is None else fields_set))
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model


_NONE = type(None)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "decision": (str,),
    "task_id": (bytes,),
    "policy_id": (bytes,),
    "policy_client": (str,),
    "intent_hash": (bytes,),
    "expires_at": (int,),
    "signatures": (tuple,),
    "reasons": (tuple,),
    "scheme": (str,),
    "tier": (int,),
    "operator_errors": (tuple,),
    "newton_result": (str, _NONE),
    "policy_data": (str, _NONE),
}
"""Each field's exact type, as validation leaves it."""
if tuple(_FIELD_TYPES) != tuple(Attestation.model_fields):
    raise RuntimeError("Attestation changed: review _FIELD_TYPES (private_copy)")


def private_copy(attestation: Attestation) -> Attestation | None:
    """``attestation.model_copy()`` (a shallow copy: every field is immutable, or never signed)
    without pydantic's generic copy: the verifier takes one per verification
    (tests/unit/test_authorize_fast_path.py holds the two equal). None if the attestation
    holds what validation never leaves: a value not exactly of its field's type (a subclass's
    ``__eq__``, ``__hash__``, ``lower`` or ``<=`` could show the checks one value while the
    digest reads another) or any other attribute (it would shadow a method: ``digest_for``);
    ``model_copy`` would copy either (tests/redteam/test_s13_verify.py)."""
    fields = dict(attestation.__dict__)  # judged after copying: no other thread alters it
    if fields.keys() != _FIELD_TYPES.keys():
        return None
    for name, kinds in _FIELD_TYPES.items():
        if type(fields[name]) not in kinds:
            return None
    for signature in fields["signatures"]:
        if type(signature) is not OperatorSignature:
            return None
    return _built(Attestation, fields, attestation.model_fields_set)


def with_policy_data(attestation: Attestation, data: str) -> Attestation:
    """``attestation.model_copy(update={"policy_data": data})``, without pydantic's generic
    copy (tests/unit/test_authorize_fast_path.py holds the two equal)."""
    fields = dict(attestation.__dict__)
    fields["policy_data"] = data
    return _built(Attestation, fields, attestation.model_fields_set | {"policy_data"})


def _list(value: Any, field: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise MalformedAttestation(
            f"attestation {field} must be a JSON array, got {preview(value)}"
        )
    if len(value) > limit:
        raise MalformedAttestation(
            f"attestation has {len(value)} {field}; at most {limit} are read"
        )
    return value
