"""Which OpenGradient enclaves to trust: the active TEEs of OpenGradient's onchain registry.

OpenGradient's ``TEERegistry`` contract records, for every enclave that proved (by a Nitro
attestation checked onchain) that it runs an approved build, its DER RSA signing key, its TLS
certificate, its build measurement (PCR hash), its payment address and its endpoint;
``getActiveTEEs(teeType)`` lists those that are enabled, on an approved build and with a fresh
heartbeat. A TEE's id is ``keccak256(DER public key)`` (the contract's ``teeId``), the same id
the enclave writes into every proof. The key an answer claims is therefore taken from the
registry, never from the endpoint (its ``/signing-key`` is self-reported).

``TeeRegistry`` reads the registry through a ``web3.Web3`` the caller builds (any provider,
any transport), caches the active set and reads it again when it is older than
``refresh_interval``. Trust in the registry is trust in the RPC node that answers for it: use
one you run or trust.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from eth_utils.crypto import keccak
from web3 import Web3

from agentguard import ConfigurationError, NodeUnavailable, TeeNotActive
from agentguard_opengradient._proof import TeeProof, verify_proof

__all__ = [
    "LLM_PROXY",
    "OPENGRADIENT_REGISTRY_RPC",
    "OPENGRADIENT_TEE_REGISTRY",
    "TEE_REGISTRY_ABI",
    "RegisteredTee",
    "TeeRegistry",
]

log = logging.getLogger("agentguard_opengradient.tee_registry")

# OpenGradient's SDK defaults (OpenGradient-SDK 0afa3f3, client/llm.py): the registry lives on
# OpenGradient's own chain, not on Base.
OPENGRADIENT_TEE_REGISTRY = "0x703cB174AEadB35D611858369B4b1111dC9Abda6"
OPENGRADIENT_REGISTRY_RPC = "https://ogevmdevnet.opengradient.ai"
LLM_PROXY = 0  # TEE type of the LLM gateways (TEE_TYPE_LLM_PROXY in the SDK)

_OHTTP: dict[str, Any] = {
    "components": [
        {"internalType": "uint8", "name": "keyId", "type": "uint8"},
        {"internalType": "uint16", "name": "kemId", "type": "uint16"},
        {"internalType": "uint16", "name": "kdfId", "type": "uint16"},
        {"internalType": "uint16", "name": "aeadId", "type": "uint16"},
        {"internalType": "bytes", "name": "publicKey", "type": "bytes"},
        {"internalType": "bytes", "name": "keyConfig", "type": "bytes"},
        {"internalType": "uint256", "name": "registeredAt", "type": "uint256"},
    ],
    "internalType": "struct TEERegistry.OhttpConfig",
    "name": "ohttpConfig",
    "type": "tuple",
}
_TEE_INFO: list[dict[str, Any]] = [
    {"internalType": "address", "name": "owner", "type": "address"},
    {"internalType": "address", "name": "paymentAddress", "type": "address"},
    {"internalType": "string", "name": "endpoint", "type": "string"},
    {"internalType": "bytes", "name": "publicKey", "type": "bytes"},
    {"internalType": "bytes", "name": "tlsCertificate", "type": "bytes"},
    {"internalType": "bytes32", "name": "pcrHash", "type": "bytes32"},
    {"internalType": "uint8", "name": "teeType", "type": "uint8"},
    {"internalType": "bool", "name": "enabled", "type": "bool"},
    {"internalType": "uint256", "name": "registeredAt", "type": "uint256"},
    {"internalType": "uint256", "name": "lastHeartbeatAt", "type": "uint256"},
    _OHTTP,
]
# The one function the resolver calls, as in the TEERegistry.abi OpenGradient's SDK ships.
TEE_REGISTRY_ABI: list[dict[str, Any]] = [
    {
        "inputs": [{"internalType": "uint8", "name": "teeType", "type": "uint8"}],
        "name": "getActiveTEEs",
        "outputs": [
            {
                "components": _TEE_INFO,
                "internalType": "struct TEERegistry.TEEInfo[]",
                "name": "",
                "type": "tuple[]",
            }
        ],
        "stateMutability": "view",
        "type": "function",
    }
]
_FIELDS: list[str] = [str(field["name"]) for field in _TEE_INFO]


def origin(url: str | httpx.URL) -> tuple[str, int]:
    """``(host, port)`` of an https URL, the key a pinned connection is looked up by."""
    try:
        parsed = httpx.URL(url) if isinstance(url, str) else url
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme != "https" or not parsed.raw_host:
        raise ConfigurationError(f"a TEE endpoint must be an https URL, not {str(url)[:100]!r}")
    # raw_host: the ASCII (IDNA) form, as the connection layer sees it
    return parsed.raw_host.decode("ascii").lower(), parsed.port or 443


@dataclass(frozen=True, slots=True)
class RegisteredTee:
    """One active TEE as the registry records it."""

    tee_id: str  # 0x + keccak256(public_key_der)
    endpoint: str
    public_key_der: bytes
    tls_certificate_der: bytes
    pcr_hash: str  # 0x + 32 bytes hex
    payment_address: str
    tee_type: int

    @property
    def public_key_pem(self) -> str:
        key = serialization.load_der_public_key(self.public_key_der)
        return key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    @property
    def origin(self) -> tuple[str, int]:
        return origin(self.endpoint)


def _entry(raw: object, tee_type: int) -> RegisteredTee:
    """One decoded ``TEEInfo``; ``ValueError`` says why it cannot be used."""
    if isinstance(raw, Mapping):
        info = dict(raw)
    elif isinstance(raw, Sequence) and not isinstance(raw, str | bytes) and len(raw) == 11:
        info = dict(zip(_FIELDS, raw, strict=True))
    else:
        raise ValueError("not a TEEInfo record")
    key_der, cert_der, pcr = info["publicKey"], info["tlsCertificate"], info["pcrHash"]
    if not all(isinstance(v, bytes) for v in (key_der, cert_der, pcr)) or len(pcr) != 32:
        raise ValueError("malformed key, certificate or PCR hash")
    if info["teeType"] != tee_type or info["enabled"] is not True:
        raise ValueError("listed as active but of another type or not enabled")
    key = serialization.load_der_public_key(key_der)
    if not isinstance(key, RSAPublicKey):
        raise ValueError("its signing key is not RSA")
    canonical = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if canonical != key_der:  # its tee_id would differ from the one the enclave computes
        raise ValueError("its signing key is not canonical DER")
    x509.load_der_x509_certificate(cert_der)
    endpoint = info["endpoint"]
    if not isinstance(endpoint, str):
        raise ValueError("its endpoint is not a string")
    try:
        origin(endpoint)
    except ConfigurationError:
        raise ValueError("its endpoint is not an https URL") from None
    return RegisteredTee(
        tee_id="0x" + keccak(key_der).hex(),
        endpoint=endpoint,
        public_key_der=key_der,
        tls_certificate_der=cert_der,
        pcr_hash="0x" + pcr.hex(),
        payment_address=str(info["paymentAddress"]),
        tee_type=tee_type,
    )


class TeeRegistry:
    """The active TEEs of OpenGradient's onchain registry, cached and re-read periodically.

    ``web3`` reaches the registry's chain (OpenGradient's, ``OPENGRADIENT_REGISTRY_RPC``, or a
    node of your own); ``pcr_hashes``, when given, admits only TEEs running one of those
    builds. ``tee(tee_id)`` and ``verify(...)`` refuse (``TeeNotActive``) a TEE the registry
    does not list as active; ``pins(url)`` gives the TLS certificates registered for an
    endpoint (used by ``PinnedTransport``). A failed registry read is ``NodeUnavailable``:
    nothing is trusted on a stale answer older than ``refresh_interval``.
    """

    def __init__(
        self,
        web3: Web3,
        address: str = OPENGRADIENT_TEE_REGISTRY,
        *,
        tee_type: int = LLM_PROXY,
        refresh_interval: float = 300.0,
        min_refresh_interval: float = 10.0,
        pcr_hashes: Collection[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not Web3.is_address(address):
            raise ConfigurationError(f"TEE registry address {address!r} is not an address")
        if refresh_interval <= 0 or min_refresh_interval < 0:
            raise ConfigurationError("refresh intervals must be positive")
        self._contract = web3.eth.contract(
            address=Web3.to_checksum_address(address), abi=TEE_REGISTRY_ABI
        )
        self._address = Web3.to_checksum_address(address)
        self._tee_type = tee_type
        self._interval = refresh_interval
        self._min_interval = min(min_refresh_interval, refresh_interval)
        self._pcrs = None if pcr_hashes is None else {_hex32(p) for p in pcr_hashes}
        self._clock = clock
        self._lock = threading.Lock()
        self._tees: tuple[RegisteredTee, ...] = ()
        self._read_at: float | None = None

    @classmethod
    def from_rpc(
        cls,
        rpc_url: str = OPENGRADIENT_REGISTRY_RPC,
        address: str = OPENGRADIENT_TEE_REGISTRY,
        *,
        timeout: float = 10.0,
        **options: Any,
    ) -> TeeRegistry:
        """A registry read over HTTP JSON-RPC at ``rpc_url``."""
        provider = Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout})
        return cls(Web3(provider), address, **options)

    # -- reading ------------------------------------------------------------------------------

    def refresh(self) -> tuple[RegisteredTee, ...]:
        """Read the active set now."""
        with self._lock:
            return self._read()

    def active(self) -> tuple[RegisteredTee, ...]:
        """The active set, read again when older than ``refresh_interval``."""
        with self._lock:
            if self._read_at is None or self._clock() - self._read_at >= self._interval:
                return self._read()
            return self._tees

    def _read(self) -> tuple[RegisteredTee, ...]:
        try:
            raw = self._contract.functions.getActiveTEEs(self._tee_type).call()
        except Exception as exc:  # any web3/provider/decoding failure: the node did not answer
            # The RPC URL can carry an API key: only the failure's type is named.
            raise NodeUnavailable(
                f"could not read OpenGradient's TEE registry {self._address} ({type(exc).__name__})"
            ) from None
        if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
            raise NodeUnavailable(f"the TEE registry {self._address} answered no list of TEEs")
        tees: dict[str, RegisteredTee] = {}
        for item in raw:
            try:
                tee = _entry(item, self._tee_type)
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("skipping a TEE registry entry: %s", str(exc)[:200])
                continue
            if self._pcrs is not None and tee.pcr_hash not in self._pcrs:
                continue
            tees.setdefault(tee.tee_id, tee)
        self._tees = tuple(tees.values())
        self._read_at = self._clock()
        return self._tees

    # -- lookups ------------------------------------------------------------------------------

    def tee(self, tee_id: str) -> RegisteredTee:
        """The active TEE with this id (an unknown id triggers one early re-read, at most every
        ``min_refresh_interval``); ``TeeNotActive`` if the registry does not list it."""
        wanted = _tee_id(tee_id)
        for tee in self.active():
            if tee.tee_id == wanted:
                return tee
        with self._lock:
            stale = self._read_at is None or self._clock() - self._read_at >= self._min_interval
            tees = self._read() if stale else self._tees
        for tee in tees:
            if tee.tee_id == wanted:
                return tee
        raise TeeNotActive(f"TEE {wanted} is not active in OpenGradient's TEE registry")

    def for_url(self, url: str | httpx.URL) -> tuple[RegisteredTee, ...]:
        """The active TEEs registered at this endpoint's host and port (during a key rotation
        the old and the new enclave can both be active); ``TeeNotActive`` if none."""
        where = origin(url)
        found = tuple(tee for tee in self.active() if tee.origin == where)
        if not found:
            host, port = where
            raise TeeNotActive(f"no active registered TEE serves {host}:{port}")
        return found

    def pins(self, url: str | httpx.URL) -> frozenset[bytes]:
        """The DER TLS certificates an endpoint may present: those the registry holds for it."""
        return frozenset(tee.tls_certificate_der for tee in self.for_url(url))

    def choose(self) -> RegisteredTee:
        """An active TEE to talk to (the first listed); ``TeeNotActive`` if there is none."""
        tees = self.active()
        if not tees:
            raise TeeNotActive("OpenGradient's TEE registry lists no active TEE")
        return tees[0]

    def verify(
        self,
        body: Mapping[str, Any],
        *,
        canonical_request: Mapping[str, Any],
        output: str,
        endpoint: str | httpx.URL | None = None,
    ) -> TeeProof:
        """Check an answer's proof with the key the registry holds for the TEE it names.

        With ``endpoint`` (the URL the answer came from), the TEE must also be registered at
        that endpoint, so a connection pinned to one enclave cannot carry another's proofs.
        """
        claimed = body.get("tee_id")
        if not isinstance(claimed, str):
            raise TeeNotActive("the answer names no TEE (tee_id)")
        tee = self.tee(claimed)
        if endpoint is not None and tee.origin != origin(endpoint):
            raise TeeNotActive(f"TEE {tee.tee_id} is not the one registered at this endpoint")
        return verify_proof(
            body,
            canonical_request=canonical_request,
            output=output,
            signing_key=tee.public_key_pem,
            expected_tee_id=tee.tee_id,
        )


def _hex32(value: str) -> str:
    text = value.lower().removeprefix("0x") if isinstance(value, str) else ""
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ConfigurationError(f"{value!r} is not a 32-byte hex value")
    return "0x" + text


def _tee_id(value: str) -> str:
    try:
        return _hex32(value)
    except ConfigurationError:
        raise TeeNotActive(f"{str(value)[:80]!r} is not a TEE id") from None
