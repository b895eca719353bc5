"""``Signer``: the only object that holds the agent's key, and it signs only what was attested.

Every signing method takes a ``VerifiedAttestation`` (which only a verifier can make) and
redeems the signing ticket the verifier recorded for it: one signing attempt per attestation,
before its expiry, of an intent that still hashes to the attested hash. What it signs is built
from the verifier's private copies of the intent and attestation, never from separate caller
arguments that could differ from them. Gas and fees are held to a ``FeeCap``; payment
authorizations may not outlive the attestation. The key never appears in a repr, a log line or
an exception.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from coincurve import PrivateKey
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress

from agentguard._attestation import Attestation
from agentguard._exceptions import (
    ConfigurationError,
    FeeCapExceeded,
    IntentError,
    IntentMismatch,
    MalformedSignature,
    OnchainCheckRequired,
    VerificationError,
)
from agentguard._fees import FeeCap
from agentguard._intent import PaymentIntent, TransactionIntent
from agentguard._redact import register_secret
from agentguard._tickets import SIGNATURES_CHECKED, Ticket, give_back, redeem
from agentguard._transaction import sign_eip1559
from agentguard._verifier import VerifiedAttestation

__all__ = ["FeeCap", "SignedTransaction", "Signer", "payment_mismatches", "vault_calldata"]

# How far in the future an EIP-3009 ``validAfter`` may lie (clock skew between us and the chain).
VALID_AFTER_SKEW = 60
_T = TypeVar("_T")
_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}\Z")


@dataclass(frozen=True)
class SignedTransaction:
    raw: bytes
    hash: str
    nonce: int
    task_id: str


def _require_verified(verified: object) -> VerifiedAttestation:
    # ``type(...) is`` rather than isinstance: a subclass could not have been built by the
    # Verifier either, but there is no reason to accept one.
    if type(verified) is not VerifiedAttestation:
        raise VerificationError("signing requires a VerifiedAttestation from Verifier.verify")
    return verified


def _quantity(value: object, name: str, bits: int) -> int:
    """A transaction field as the RLP encoder needs it: a non-negative int of ``bits`` bits."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise IntentError(f"{name} must be an integer in 0..2^{bits}-1, got {value!r:.80}")
    return int(value)


class Signer:
    """Holds an eth-account key; signs only under a verified attestation, once."""

    __slots__ = ("_account", "_clock", "_fees", "_key")

    def __init__(
        self,
        account: LocalAccount,
        *,
        fees: FeeCap | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if fees is not None and not isinstance(fees, FeeCap):
            raise ConfigurationError("fees must be a FeeCap")
        if not callable(clock):
            raise ConfigurationError("clock must be a function returning unix seconds")
        self._account = account
        self._key = PrivateKey(bytes(account.key))
        self._fees = fees if fees is not None else FeeCap()
        self._clock = clock
        register_secret(bytes(account.key))

    @classmethod
    def from_key(
        cls,
        key: str | bytes,
        *,
        fees: FeeCap | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Signer:
        """A signer holding ``key`` (0x + 64 hex, or 32 bytes); ``fees=`` sets its ``FeeCap``."""
        try:
            account = Account.from_key(key)
        except Exception:
            raise ConfigurationError("the private key is not a valid secp256k1 key") from None
        return cls(account, fees=fees, clock=clock)

    @classmethod
    def from_env(cls, name: str = "AGENTGUARD_PRIVATE_KEY", **options: Any) -> Signer:
        """A signer whose key is the environment variable ``name`` (prefer a key file)."""
        value = os.environ.get(name)
        if not value:
            raise ConfigurationError(f"environment variable {name} is not set")
        return cls.from_key(value, **options)

    @classmethod
    def from_keystore(cls, path: str | Path, password: str, **options: Any) -> Signer:
        """A signer from an encrypted JSON keystore file and its password."""
        try:
            key = Account.decrypt(Path(path).read_text(), password)
        except Exception:
            raise ConfigurationError(f"could not decrypt keystore {path}") from None
        return cls.from_key(bytes(key), **options)

    @property
    def address(self) -> str:
        """The signer's address (EIP-55 checksummed)."""
        return str(self._account.address)

    @property
    def checksum_address(self) -> ChecksumAddress:
        """The signer's address, typed as web3's ``ChecksumAddress``."""
        return self._account.address

    @property
    def fees(self) -> FeeCap:
        """The most gas and fees this signer will ever sign for."""
        return self._fees

    def __repr__(self) -> str:
        return f"Signer(address={self.address})"

    def __reduce__(self) -> Any:  # never pickled, so never copied out of the process
        raise TypeError("Signer cannot be pickled")

    def _redeemed(self, verified: object, eoa: bool, sign: Callable[[Ticket], _T]) -> _T:
        """``sign(ticket)`` with the verifier's ticket for ``verified``, used up unless
        ``sign`` raises (no signature left this object; a corrected call may sign once).
        (A plain call, not a ``contextmanager``: it is on every payment's path.)

        ``eoa``: the signature will be valid on its own (no contract re-checks the operator
        signatures), so only an attestation whose signatures agentguard checked may be used
        (``quorum-ecdsa``, or ``newton-bls``: Newton's BLS aggregate verified client-side).
        An altered, expired or insufficient attestation is used up for good.
        """
        verified = _require_verified(verified)
        ticket = redeem(verified.attestation, verified.intent, self._clock())
        if eoa and ticket.assurance not in SIGNATURES_CHECKED:
            raise OnchainCheckRequired(
                f"attestation {verified.task_id} has assurance {ticket.assurance!r}: its operator "
                "signatures were not checked here, so it may only be used through a vault"
            )
        try:
            return sign(ticket)
        except BaseException:
            give_back(ticket)
            raise

    def sign_transaction(
        self,
        verified: VerifiedAttestation,
        *,
        nonce: int,
        gas: int,
        max_fee_per_gas: int,
        max_priority_fee_per_gas: int,
        vault: str | None = None,
    ) -> SignedTransaction:
        """An EIP-1559 transaction built only from the verified attestation.

        EOA mode: the attested ``to, value, data, chain_id`` from this key. Vault mode
        (``vault`` given): the agent's call ``vault.execute(...)`` carrying the attested intent
        and its operator signatures; the vault re-checks quorum, binding, expiry and single use
        onchain. Either way at most one transaction per attestation, gas and fees within the
        ``FeeCap``.
        """
        return self._redeemed(
            verified,
            vault is None,
            lambda ticket: self._transaction(
                ticket,
                nonce=nonce,
                gas=gas,
                max_fee_per_gas=max_fee_per_gas,
                max_priority_fee_per_gas=max_priority_fee_per_gas,
                vault=vault,
            ),
        )

    def _transaction(
        self,
        ticket: Ticket,
        *,
        nonce: object,
        gas: object,
        max_fee_per_gas: object,
        max_priority_fee_per_gas: object,
        vault: object,
    ) -> SignedTransaction:
        if vault is not None and (not isinstance(vault, str) or not _ADDRESS_RE.match(vault)):
            raise IntentError(f"vault must be a 0x-prefixed 20-byte address, got {vault!r:.60}")
        intent = ticket.intent
        if not isinstance(intent, TransactionIntent):
            raise IntentMismatch("this attestation is for a payment, not a transaction")
        newton = vault is not None and ticket.attestation.scheme == "newton-bls"
        if ticket.assurance == "newton-bls-binding" and not newton:
            raise OnchainCheckRequired(
                f"attestation {'0x' + ticket.task_id.hex()} has assurance 'newton-bls-binding': "
                "only a Newton-mode vault's validator checks its BLS quorum"
            )
        expected_from = vault if vault is not None and not newton else self.address
        if intent.from_.lower() != expected_from.lower():
            raise IntentMismatch(f"the attested intent is from {intent.from_}, not {expected_from}")
        tx_nonce = _quantity(nonce, "nonce", 64)
        if tx_nonce == (1 << 64) - 1:  # EIP-2681
            raise IntentError("nonce 2^64-1 is not a valid account nonce")
        tx_gas, max_fee, tip = self._within_fee_cap(
            _quantity(gas, "gas", 64),
            _quantity(max_fee_per_gas, "max_fee_per_gas", 256),
            _quantity(max_priority_fee_per_gas, "max_priority_fee_per_gas", 256),
        )
        if vault is None:
            to, value, data = intent.to, intent.value, intent.data
        else:
            data = vault_calldata(intent, ticket.attestation, vault=vault, agent=self.address)
            to, value = vault, 0
        raw, tx_hash = sign_eip1559(
            self._key,
            chain_id=intent.chain_id,
            nonce=tx_nonce,
            max_priority_fee_per_gas=tip,
            max_fee_per_gas=max_fee,
            gas=tx_gas,
            to=bytes.fromhex(to[2:]),
            value=value,
            data=data,
        )
        return SignedTransaction(
            raw=raw,
            hash="0x" + tx_hash.hex(),
            nonce=tx_nonce,
            task_id="0x" + ticket.task_id.hex(),
        )

    def _within_fee_cap(self, gas: int, max_fee: int, tip: int) -> tuple[int, int, int]:
        cap = self._fees
        if tip > max_fee:
            raise IntentError(
                f"max_priority_fee_per_gas {tip} exceeds max_fee_per_gas {max_fee}; "
                "no node accepts such a transaction"
            )
        if gas > cap.max_gas:
            raise FeeCapExceeded(f"gas {gas} exceeds the cap of {cap.max_gas}")
        if max_fee > cap.max_fee_per_gas:
            raise FeeCapExceeded(
                f"max_fee_per_gas {max_fee} wei exceeds the cap of {cap.max_fee_per_gas} wei"
            )
        if gas * max_fee > cap.max_fee:
            raise FeeCapExceeded(
                f"the transaction could pay {gas * max_fee} wei in fees "
                f"(gas {gas} * {max_fee} wei), above the cap of {cap.max_fee} wei"
            )
        return gas, max_fee, tip

    def sign_payment(
        self,
        verified: VerifiedAttestation,
        typed_data: dict[str, Any],
        *,
        permit2_spenders: Collection[str] = (),
    ) -> bytes:
        """EIP-712 signature for an x402 authorization that moves exactly the attested payment.

        Accepts EIP-3009 ``TransferWithAuthorization`` (scheme ``exact``) and Permit2
        ``PermitWitnessTransferFrom`` (scheme ``upto``, whose spender must be one of
        ``permit2_spenders``: a Permit2 spender chooses where the funds go); refuses anything
        whose scheme (by its primary type), token, payee, amount, payer or chain differs from
        the attested ``PaymentIntent``,
        a payment attested for another payer than this key, any shape but the canonical
        EIP-3009 / Permit2 one (types, domain), and an authorization valid beyond
        the attestation's expiry (``validBefore`` / ``deadline``) or only from the future
        (``validAfter``).
        """
        return self._redeemed(
            verified, True, lambda ticket: self._payment(ticket, typed_data, permit2_spenders)
        )

    def sign_eip3009(
        self,
        verified: VerifiedAttestation,
        *,
        name: str,
        version: str,
        chain_id: int,
        token: str,
        payer: str,
        to: str,
        value: int,
        valid_after: int,
        valid_before: int,
        nonce: str,
    ) -> bytes:
        """``sign_payment`` of the EIP-3009 ``TransferWithAuthorization`` these fields make
        (``eip3009_typed_data``), for a caller that has them at hand (x402 ``exact``): the same
        checks on the same values and the same signature, without building the typed data and
        walking its shape. Anything the one pass does not take goes to ``sign_payment``'s
        general path with that typed data, which decides and refuses with its reasons."""
        fields = (name, version, chain_id, token, payer, to, value, valid_after, valid_before)
        return self._redeemed(
            verified, True, lambda ticket: self._eip3009(ticket, (*fields, nonce))
        )

    def _eip3009(self, ticket: Ticket, fields: tuple[Any, ...]) -> bytes:
        intent = ticket.intent
        if type(intent) is PaymentIntent and _same(intent.payer, self.address):
            digest = self._eip3009_digest(intent, ticket.expires_at, *fields)
            if digest is not None:
                return sign_typed_digest(self._key, digest)
        return self._payment(ticket, eip3009_typed_data(*fields), ())

    def _payment(
        self, ticket: Ticket, typed_data: object, permit2_spenders: Collection[str]
    ) -> bytes:
        intent = ticket.intent
        if not isinstance(intent, PaymentIntent):
            raise IntentMismatch("this attestation is for a transaction, not a payment")
        if not _same(intent.payer, self.address):  # Permit2's owner is whoever signs
            raise IntentMismatch(f"the attested payment is from {intent.payer}, not {self.address}")
        try:
            fast = self._plain_eip3009(intent, typed_data, ticket.expires_at)
        except (RuntimeError, ValueError):
            # resized by another thread between a size check and the read (a dict changed
            # size while iterated, an unpack of a grown field, a strict zip of a grown list):
            # the general path copies it first and decides, with a typed refusal
            fast = None
        if fast is not None:  # x402 ``exact`` as the port builds it: checked in one pass
            return sign_typed_digest(self._key, fast)
        typed = _typed(typed_data)
        digest = eip3009_digest(typed)  # once: the shape check and the signature share it
        mismatches = payment_mismatches(intent, typed)
        mismatches += self._window_mismatches(typed, ticket)
        mismatches += _shape_mismatches(typed, digest)
        spender = _mapping(typed.get("message")).get("spender")
        if typed.get("primaryType") == "PermitWitnessTransferFrom" and not any(
            _same(spender, trusted) for trusted in permit2_spenders
        ):
            mismatches.append(f"spender {spender} (not a trusted Permit2 spender)")
        if mismatches:
            raise IntentMismatch(
                "the authorization to sign differs from the attested payment in: "
                + ", ".join(mismatches)
            )
        if digest is not None:  # x402 ``exact``: hand-written encoder
            return sign_typed_digest(self._key, digest)
        try:  # x402 ``upto``: Permit2, in the canonical shape checked above
            signed = self._account.sign_typed_data(full_message=typed)
        except Exception as exc:
            raise IntentMismatch(
                f"the authorization is not valid EIP-712 typed data ({type(exc).__name__})"
            ) from None
        return bytes(signed.signature)

    def _plain_eip3009(
        self, intent: PaymentIntent, typed_data: object, expires_at: int
    ) -> bytes | None:
        """The digest of a canonical EIP-3009 authorization of exactly ``intent``, within the
        attestation's window, or ``None``: then the general path (``_typed`` → checks) decides,
        and refuses with its reasons. The same verdict and digest as that path, in one pass.

        Every field is read exactly once, into a local, and only values of exactly ``dict``,
        ``list``, ``str`` or ``int`` (no subclass, no bool) are taken: an object whose reads,
        comparisons or ``__index__`` change, or another thread editing the dict, can at worst
        send it to the general path (which copies it first), never make what is signed differ
        from what was checked. The digest is computed from the same locals."""
        if type(typed_data) is not dict or len(typed_data) != 4:
            return None
        primary, types = dict.get(typed_data, "primaryType"), dict.get(typed_data, "types")
        domain, message = dict.get(typed_data, "domain"), dict.get(typed_data, "message")
        if (
            type(primary) is not str
            or primary != "TransferWithAuthorization"
            or type(domain) is not dict
            or len(domain) != 4
            or type(message) is not dict
            or len(message) != 6
            or not _str_keys(typed_data)
            or not _canonical_eip3009_types(types)
        ):
            return None
        if not (_str_keys(domain) and _str_keys(message)):
            return None
        return self._eip3009_digest(
            intent,
            expires_at,
            dict.get(domain, "name"),
            dict.get(domain, "version"),
            dict.get(domain, "chainId"),
            dict.get(domain, "verifyingContract"),
            dict.get(message, "from"),
            dict.get(message, "to"),
            dict.get(message, "value"),
            dict.get(message, "validAfter"),
            dict.get(message, "validBefore"),
            dict.get(message, "nonce"),
        )

    def _eip3009_digest(
        self,
        intent: PaymentIntent,
        expires_at: int,
        name: object,
        version: object,
        chain_id: object,
        token: object,
        payer: object,
        payee: object,
        value: object,
        after: object,
        before: object,
        nonce: object,
    ) -> bytes | None:
        """``_plain_eip3009``'s verdict on the authorization's fields, each read once by the
        caller: the digest if every one is exactly a ``str``/``int`` and together they are
        exactly ``intent`` within the attestation's window, else ``None``."""
        if not (
            type(name) is str
            and type(version) is str
            and type(chain_id) is int
            and type(token) is str
            and type(payer) is str
            and type(payee) is str
            and type(value) is int
            and type(after) is int
            and type(before) is int
            and type(nonce) is str
        ):
            return None
        if not (
            intent.scheme == "exact"
            and chain_id == intent.chain_id
            and token.lower() == intent.asset.lower()
            and payer.lower() == intent.payer.lower()
            and payee.lower() == intent.pay_to.lower()
            and value == intent.amount
            and 0 <= after <= self._clock() + VALID_AFTER_SKEW
            and 0 <= before <= expires_at
            and _NONCE_RE.fullmatch(nonce)
        ):
            return None
        from agentguard.chain.eip3009 import transfer_authorization_digest

        try:
            return transfer_authorization_digest(
                token=token,
                chain_id=chain_id,
                from_=payer,
                to=payee,
                value=value,
                valid_after=after,
                valid_before=before,
                nonce=bytes.fromhex(nonce[2:]),
                name=name,
                version=version,
            )
        except ValueError:  # not an address, not UTF-8 text: the general path refuses it
            return None

    def sign_vault_payment(
        self, verified: VerifiedAttestation, typed_data: dict[str, Any], *, vault: str
    ) -> bytes:
        """The ERC-1271 ``signature`` of an x402 ``exact`` payment drawn from ``vault``.

        The EIP-3009 authorization must move exactly the attested payment from the vault with
        ``nonce`` = the task id (the vault accepts nothing else, and the token's nonce tracking
        then makes the attestation pay once), valid no longer than the attestation. Returns
        ``chain.vault.payment_signature``: this key's signature over the authorization plus the
        operators' attestation.
        """
        return self._redeemed(
            verified, False, lambda ticket: self._vault_payment(ticket, typed_data, vault)
        )

    def _vault_payment(self, ticket: Ticket, typed_data: object, vault: object) -> bytes:
        from agentguard.chain.vault import payment_signature

        intent, attestation = ticket.intent, ticket.attestation
        if not isinstance(intent, PaymentIntent):
            raise IntentMismatch("this attestation is for a transaction, not a payment")
        if not _same(intent.payer, vault) or not _same(attestation.policy_client, vault):
            raise IntentMismatch(
                f"a vault payment is attested for the vault {vault}; this attestation's payer is "
                f"{intent.payer} and its policy client {attestation.policy_client}"
            )
        if ticket.assurance not in ("quorum-ecdsa", "quorum-ecdsa-vault-only"):
            raise OnchainCheckRequired(
                "a vault checks ECDSA operator signatures; this attestation is "
                + attestation.scheme
            )
        typed = _typed(typed_data)
        if typed.get("primaryType") != "TransferWithAuthorization":
            raise IntentMismatch("a vault pays only EIP-3009 TransferWithAuthorization")
        wrong = payment_mismatches(intent, typed)
        wrong += self._window_mismatches(typed, ticket)
        message = _mapping(typed.get("message"))
        if not _same(message.get("nonce"), "0x" + ticket.task_id.hex()):
            wrong.append("nonce (must be the task id)")
        if wrong:
            raise IntentMismatch(
                "the vault authorization to sign differs from the attested payment in: "
                + ", ".join(wrong)
            )
        valid_after, valid_before = (
            _int(message.get("validAfter")),
            _int(message.get("validBefore")),
        )
        digest = eip3009_digest(typed)
        if digest is None or valid_after is None or valid_before is None:
            raise IntentMismatch("the EIP-3009 authorization is not in canonical form")
        return payment_signature(
            intent,
            attestation,
            valid_after=valid_after,
            valid_before=valid_before,
            agent_signature=sign_typed_digest(self._key, digest),
        )

    def _window_mismatches(self, typed_data: dict[str, Any], ticket: Ticket) -> list[str]:
        """An authorization may be settled until its deadline; the attestation allowed the
        payment only until its own expiry, so the deadline may not be later."""
        message = _mapping(typed_data.get("message"))
        primary = typed_data.get("primaryType")
        wrong: list[str] = []
        if primary == "TransferWithAuthorization":
            deadline, field = _int(message.get("validBefore")), "validBefore"
            valid_after = _int(message.get("validAfter"))
            if valid_after is None or not 0 <= valid_after <= self._clock() + VALID_AFTER_SKEW:
                wrong.append(f"validAfter {message.get('validAfter')!r:.40} (in the future)")
        elif primary == "PermitWitnessTransferFrom":
            deadline, field = _int(message.get("deadline")), "deadline"
        else:
            return wrong  # payment_mismatches already names the primary type
        if deadline is None or deadline > ticket.expires_at:
            wrong.append(
                f"{field} {message.get(field)!r:.40} (after the attestation's expiry "
                f"{ticket.expires_at})"
            )
        return wrong


def _shape_mismatches(typed: dict[str, Any], digest: bytes | None) -> list[str]:
    """Only the canonical shapes are signed: EIP-3009 exactly as tokens hash it, Permit2 with
    x402's upto witness under Permit2's own domain. Any other ``types`` or domain (a salt, a
    look-alike verifying contract, an extra field) makes a signature some other contract may
    accept, for something no attestation covered. ``digest``: ``eip3009_digest(typed)``."""
    from agentguard.x402.upto.client import _TYPES as UPTO_TYPES
    from agentguard.x402.upto.client import PERMIT2

    primary = typed.get("primaryType")
    if primary == "TransferWithAuthorization" and digest is None:
        return ["types or domain (not the canonical EIP-3009 authorization)"]
    if primary == "PermitWitnessTransferFrom":
        domain = _mapping(typed.get("domain"))
        wrong = []
        if typed.get("types") != UPTO_TYPES:
            wrong.append("types (not x402's upto Permit2 witness)")
        if (
            set(domain) != {"name", "chainId", "verifyingContract"}
            or domain.get("name") != "Permit2"
            or not _same(domain.get("verifyingContract"), PERMIT2)
        ):
            wrong.append(f"domain (not Permit2 at {PERMIT2})")
        return wrong
    return []


def sign_typed_digest(key: PrivateKey, digest: bytes) -> bytes:
    """65-byte ``r ‖ s ‖ v`` over an EIP-712 digest (what eth-account's typed signing yields),
    ``v`` 27 or 28: a recovery id of 2 or 3 (R.x past the group order, never seen in practice)
    has no ``v`` a token's ``ecrecover`` accepts, so it is refused rather than sent."""
    signature = key.sign_recoverable(digest, hasher=None)
    if len(signature) != 65 or signature[64] > 1:
        raise MalformedSignature("the signature has no recovery id a token accepts (v 27/28)")
    return signature[:64] + bytes([signature[64] + 27])


_NONCE_RE = re.compile(r"0x[0-9a-fA-F]{64}")
_EIP3009_FIELDS = (
    ("EIP712Domain", (("name", "string"), ("version", "string"), ("chainId", "uint256"),
                      ("verifyingContract", "address"))),
    ("TransferWithAuthorization", (("from", "address"), ("to", "address"), ("value", "uint256"),
                                   ("validAfter", "uint256"), ("validBefore", "uint256"),
                                   ("nonce", "bytes32"))),
)  # fmt: skip


def _str_keys(mapping: dict[Any, Any]) -> bool:
    """Every key exactly a ``str`` (a key object equal to ``"to"`` could answer its lookup)."""
    for key in mapping:  # noqa: SIM110 (a loop: no generator frame per call)
        if type(key) is not str:
            return False
    return True


def _canonical_eip3009_types(types: object) -> bool:
    """``types`` is exactly ``EIP3009_TYPES`` in plain lists and dicts, each field written
    ``{"name": …, "type": …}`` in that order (``_EIP3009_FIELDS`` is its private copy, pinned
    equal by the tests); anything else is for the general path."""
    if type(types) is not dict or len(types) != 2 or not _str_keys(types):
        return False
    for name, spec in _EIP3009_FIELDS:
        fields = dict.get(types, name)
        if type(fields) is not list or len(fields) != len(spec):
            return False
        for field, (field_name, field_type) in zip(fields, spec, strict=True):
            if type(field) is not dict or len(field) != 2:
                return False
            (k1, v1), (k2, v2) = dict.items(field)
            if not (
                type(k1) is str
                and type(v1) is str
                and type(k2) is str
                and type(v2) is str
                and k1 == "name"
                and v1 == field_name
                and k2 == "type"
                and v2 == field_type
            ):
                return False
    return True


def eip3009_typed_data(
    name: object,
    version: object,
    chain_id: object,
    token: object,
    payer: object,
    to: object,
    value: object,
    valid_after: object,
    valid_before: object,
    nonce: object,
) -> dict[str, Any]:
    """The EIP-3009 ``TransferWithAuthorization`` typed data (eth-account's ``full_message``
    shape, types freshly built: ``EIP3009_TYPES``, from the private copy the tests pin to it) of
    these fields, exactly as x402's ``exact`` client builds it."""
    return {
        "types": {
            name: [{"name": n, "type": t} for n, t in spec] for name, spec in _EIP3009_FIELDS
        },
        "primaryType": "TransferWithAuthorization",
        "domain": {
            "name": name,
            "version": version,
            "chainId": chain_id,
            "verifyingContract": token,
        },
        "message": {
            "from": payer,
            "to": to,
            "value": value,
            "validAfter": valid_after,
            "validBefore": valid_before,
            "nonce": nonce,
        },
    }


def eip3009_digest(typed_data: dict[str, Any]) -> bytes | None:
    """The digest of a canonical EIP-3009 authorization, or ``None`` for any other shape
    (which then goes through eth-account's generic encoder)."""
    from agentguard.chain.eip3009 import EIP3009_TYPES, transfer_authorization_digest

    if typed_data.get("primaryType") != "TransferWithAuthorization":
        return None
    if typed_data.get("types") != EIP3009_TYPES:
        return None
    domain, message = _mapping(typed_data.get("domain")), _mapping(typed_data.get("message"))
    if set(domain) != {"name", "version", "chainId", "verifyingContract"}:
        return None
    nonce = message.get("nonce")
    if isinstance(nonce, str) and re.fullmatch(r"0x[0-9a-fA-F]{64}", nonce):
        nonce = bytes.fromhex(nonce[2:])
    numbers = [_int(message.get(k)) for k in ("value", "validAfter", "validBefore")]
    chain_id = _int(domain.get("chainId"))
    if not isinstance(nonce, bytes) or len(nonce) != 32 or None in numbers or chain_id is None:
        return None
    if not all(isinstance(domain.get(k), str) for k in ("name", "version")):
        return None
    value, valid_after, valid_before = (n for n in numbers if n is not None)
    try:
        return transfer_authorization_digest(
            token=str(domain["verifyingContract"]),
            chain_id=chain_id,
            from_=str(message.get("from")),
            to=str(message.get("to")),
            value=value,
            valid_after=valid_after,
            valid_before=valid_before,
            nonce=nonce,
            name=domain["name"],
            version=domain["version"],
        )
    except ValueError:
        return None


def _same(a: Any, b: Any) -> bool:
    return str(a).lower() == str(b).lower()


def _int(value: Any) -> int | None:
    """An integer field of typed data (int or decimal/hex string); ``None`` for anything else
    (floats and bools included: ``int(2.5)`` would silently sign 2)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        return int(value, 0) if isinstance(value, str) else int(value)
    except ValueError:
        return None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _typed(typed_data: Any) -> dict[str, Any]:
    """One plain copy of the typed data: the fields checked are the fields signed. A mapping
    whose reads change (a ``dict`` subclass, or a dict another thread edits) could otherwise
    show the digest one payee or amount and the checks another."""
    if type(typed_data) is not dict:
        raise IntentMismatch(f"typed data must be a dict, got {type(typed_data).__name__}")
    return _plain(typed_data)  # type: ignore[no-any-return]


_LEAVES = (str, int, float, bool, bytes, type(None))


def _plain(value: Any, depth: int = 0) -> Any:
    """A deep copy made of exactly dict, list, str, int, float, bool, bytes and None. (Leaves
    are taken in the loops, without a call each: this runs on every payment.)"""
    kind = type(value)
    if kind in _LEAVES:
        return value
    if depth < 16 and kind is dict:
        copy = {}
        for key, item in dict.items(value):
            if type(key) is not str:
                raise IntentMismatch("typed data keys must be strings")
            copy[key] = item if type(item) in _LEAVES else _plain(item, depth + 1)
        return copy
    if depth < 16 and kind in (list, tuple):
        return [item if type(item) in _LEAVES else _plain(item, depth + 1) for item in value]
    raise IntentMismatch(f"typed data holds a {kind.__name__}, not plain JSON-like data")


def payment_mismatches(intent: PaymentIntent, typed_data: dict[str, Any]) -> list[str]:
    """Which fields of an x402 authorization differ from the attested payment (empty: none)."""
    domain = _mapping(typed_data.get("domain"))
    message = _mapping(typed_data.get("message"))
    primary = typed_data.get("primaryType")
    wrong: list[str] = []
    if _int(domain.get("chainId")) != intent.chain_id:
        wrong.append("chainId")
    if primary == "TransferWithAuthorization":
        checks = {
            # an attestation names the scheme it allowed: an ``upto`` maximum is not an
            # ``exact`` payment of that maximum (nor the other way round)
            "scheme": intent.scheme == "exact",
            "token": _same(domain.get("verifyingContract"), intent.asset),
            "payer": _same(message.get("from"), intent.payer),
            "payee": _same(message.get("to"), intent.pay_to),
            "amount": _int(message.get("value")) == intent.amount,
        }
    elif primary == "PermitWitnessTransferFrom":
        permitted = _mapping(message.get("permitted"))
        witness = _mapping(message.get("witness"))
        checks = {
            "scheme": intent.scheme == "upto",
            "token": _same(permitted.get("token"), intent.asset),
            "payee": _same(witness.get("to"), intent.pay_to),
            "amount": _int(permitted.get("amount")) == intent.amount,
        }
    else:
        return [f"primaryType {primary!r}"]
    wrong.extend(name for name, ok in checks.items() if not ok)
    return wrong


def vault_calldata(
    intent: TransactionIntent, attestation: Attestation, *, vault: str, agent: str
) -> bytes:
    """What the agent's key sends to ``vault`` to run ``intent``: ``executeNewton`` with the
    Newton gateway's task, response and certificate for a Newton attestation (the intent sent
    by ``agent``, the vault its policy client), else ``execute`` with the ECDSA quorum's
    signatures (the intent sent by the vault). Each refuses an attestation for anything else."""
    if attestation.scheme == "newton-bls":
        from agentguard.chain.newton import newton_execute_calldata

        return newton_execute_calldata(intent, attestation, vault=vault, agent=agent)
    from agentguard.chain.vault import execute_calldata

    return execute_calldata(intent, attestation)
