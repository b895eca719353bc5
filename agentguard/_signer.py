"""``Signer``: the only object that holds the agent's key, and it signs only what was attested.

Every signing method takes a ``VerifiedAttestation`` (which only ``Verifier.verify`` can make)
and builds what it signs *from the attested intent*, never from separate caller arguments
that could differ from it. The key never appears in a repr, a log line or an exception.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coincurve import PrivateKey
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress

from agentguard._exceptions import ConfigurationError, IntentMismatch, VerificationError
from agentguard._intent import PaymentIntent, TransactionIntent
from agentguard._redact import register_secret
from agentguard._transaction import sign_eip1559
from agentguard._verifier import VerifiedAttestation

__all__ = ["SignedTransaction", "Signer", "payment_mismatches"]


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


class Signer:
    """Holds an eth-account key; signs only under a verified attestation."""

    __slots__ = ("_account", "_key")

    def __init__(self, account: LocalAccount) -> None:
        self._account = account
        self._key = PrivateKey(bytes(account.key))
        register_secret(bytes(account.key))

    @classmethod
    def from_key(cls, key: str | bytes) -> Signer:
        try:
            return cls(Account.from_key(key))
        except Exception:
            raise ConfigurationError("the private key is not a valid secp256k1 key") from None

    @classmethod
    def from_env(cls, name: str = "AGENTGUARD_PRIVATE_KEY") -> Signer:
        value = os.environ.get(name)
        if not value:
            raise ConfigurationError(f"environment variable {name} is not set")
        return cls.from_key(value)

    @classmethod
    def from_keystore(cls, path: str | Path, password: str) -> Signer:
        try:
            key = Account.decrypt(Path(path).read_text(), password)
        except Exception:
            raise ConfigurationError(f"could not decrypt keystore {path}") from None
        return cls.from_key(bytes(key))

    @property
    def address(self) -> str:
        return str(self._account.address)

    @property
    def checksum_address(self) -> ChecksumAddress:
        return self._account.address

    def __repr__(self) -> str:
        return f"Signer(address={self.address})"

    def __reduce__(self) -> Any:  # never pickled, so never copied out of the process
        raise TypeError("Signer cannot be pickled")

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
        onchain.
        """
        verified = _require_verified(verified)
        intent = verified.intent
        if not isinstance(intent, TransactionIntent):
            raise IntentMismatch("this attestation is for a payment, not a transaction")
        expected_from = vault if vault is not None else self.address
        if intent.from_.lower() != expected_from.lower():
            raise IntentMismatch(f"the attested intent is from {intent.from_}, not {expected_from}")
        if vault is None:
            to, value, data = intent.to, intent.value, intent.data
        else:
            from agentguard.chain.vault import execute_calldata

            to, value, data = intent.from_, 0, execute_calldata(intent, verified.attestation)
        raw, tx_hash = sign_eip1559(
            self._key,
            chain_id=intent.chain_id,
            nonce=nonce,
            max_priority_fee_per_gas=max_priority_fee_per_gas,
            max_fee_per_gas=max_fee_per_gas,
            gas=gas,
            to=bytes.fromhex(to[2:]),
            value=value,
            data=data,
        )
        return SignedTransaction(
            raw=raw, hash="0x" + tx_hash.hex(), nonce=nonce, task_id=verified.task_id
        )

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
        whose token, payee, amount, payer or chain differs from the attested ``PaymentIntent``,
        and a payment attested for another payer than this key.
        """
        verified = _require_verified(verified)
        intent = verified.intent
        if not isinstance(intent, PaymentIntent):
            raise IntentMismatch("this attestation is for a transaction, not a payment")
        if not _same(intent.payer, self.address):  # Permit2's owner is whoever signs
            raise IntentMismatch(f"the attested payment is from {intent.payer}, not {self.address}")
        mismatches = payment_mismatches(intent, typed_data)
        spender = (typed_data.get("message") or {}).get("spender")
        if typed_data.get("primaryType") == "PermitWitnessTransferFrom" and not any(
            _same(spender, trusted) for trusted in permit2_spenders
        ):
            mismatches.append(f"spender {spender} (not a trusted Permit2 spender)")
        if mismatches:
            raise IntentMismatch(
                "the authorization to sign differs from the attested payment in: "
                + ", ".join(mismatches)
            )
        digest = eip3009_digest(typed_data)
        if digest is not None:  # the common x402 ``exact`` shape: hand-written encoder
            return sign_typed_digest(self._key, digest)
        signed = self._account.sign_typed_data(full_message=typed_data)
        return bytes(signed.signature)

    def sign_vault_payment(
        self, verified: VerifiedAttestation, typed_data: dict[str, Any], *, vault: str
    ) -> bytes:
        """The ERC-1271 ``signature`` of an x402 ``exact`` payment drawn from ``vault``.

        The EIP-3009 authorization must move exactly the attested payment from the vault with
        ``nonce`` = the task id (the vault accepts nothing else, and the token's nonce tracking
        then makes the attestation pay once). Returns ``chain.vault.payment_signature``: this
        key's signature over the authorization plus the operators' attestation.
        """
        from agentguard.chain.vault import payment_signature

        verified = _require_verified(verified)
        intent = verified.intent
        if not isinstance(intent, PaymentIntent):
            raise IntentMismatch("this attestation is for a transaction, not a payment")
        attestation = verified.attestation
        if not _same(intent.payer, vault) or not _same(attestation.policy_client, vault):
            raise IntentMismatch(
                f"a vault payment is attested for the vault {vault}; this attestation's payer is "
                f"{intent.payer} and its policy client {attestation.policy_client}"
            )
        if attestation.scheme != "ecdsa":
            raise VerificationError(
                "a vault checks ECDSA operator signatures; this attestation is "
                + attestation.scheme
            )
        if typed_data.get("primaryType") != "TransferWithAuthorization":
            raise IntentMismatch("a vault pays only EIP-3009 TransferWithAuthorization")
        wrong = payment_mismatches(intent, typed_data)
        if not _same((typed_data.get("message") or {}).get("nonce"), verified.task_id):
            wrong.append("nonce (must be the task id)")
        if wrong:
            raise IntentMismatch(
                "the vault authorization to sign differs from the attested payment in: "
                + ", ".join(wrong)
            )
        message = typed_data.get("message") or {}
        valid_after, valid_before = (
            _int(message.get("validAfter")),
            _int(message.get("validBefore")),
        )
        digest = eip3009_digest(typed_data)
        if digest is None or valid_after is None or valid_before is None:
            raise IntentMismatch("the EIP-3009 authorization is not in canonical form")
        return payment_signature(
            intent,
            attestation,
            valid_after=valid_after,
            valid_before=valid_before,
            agent_signature=sign_typed_digest(self._key, digest),
        )


def sign_typed_digest(key: PrivateKey, digest: bytes) -> bytes:
    """65-byte ``r ‖ s ‖ v`` over an EIP-712 digest (what eth-account's typed signing yields)."""
    signature = key.sign_recoverable(digest, hasher=None)
    return signature[:64] + bytes([signature[64] + 27])


def eip3009_digest(typed_data: dict[str, Any]) -> bytes | None:
    """The digest of a canonical EIP-3009 authorization, or ``None`` for any other shape
    (which then goes through eth-account's generic encoder)."""
    from agentguard.chain.eip3009 import EIP3009_TYPES, transfer_authorization_digest

    if typed_data.get("primaryType") != "TransferWithAuthorization":
        return None
    if typed_data.get("types") != EIP3009_TYPES:
        return None
    domain, message = typed_data.get("domain") or {}, typed_data.get("message") or {}
    if set(domain) != {"name", "version", "chainId", "verifyingContract"}:
        return None
    nonce = message.get("nonce")
    if isinstance(nonce, str) and nonce.startswith("0x"):
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
    try:
        return int(value, 0) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        return None


def payment_mismatches(intent: PaymentIntent, typed_data: dict[str, Any]) -> list[str]:
    """Which fields of an x402 authorization differ from the attested payment (empty: none)."""
    domain = typed_data.get("domain") or {}
    message = typed_data.get("message") or {}
    primary = typed_data.get("primaryType")
    wrong: list[str] = []
    if _int(domain.get("chainId")) != intent.chain_id:
        wrong.append("chainId")
    if primary == "TransferWithAuthorization":
        checks = {
            "token": _same(domain.get("verifyingContract"), intent.asset),
            "payer": _same(message.get("from"), intent.payer),
            "payee": _same(message.get("to"), intent.pay_to),
            "amount": _int(message.get("value")) == intent.amount,
        }
    elif primary == "PermitWitnessTransferFrom":
        permitted = message.get("permitted") or {}
        witness = message.get("witness") or {}
        checks = {
            "token": _same(permitted.get("token"), intent.asset),
            "payee": _same(witness.get("to"), intent.pay_to),
            "amount": _int(permitted.get("amount")) == intent.amount,
        }
    else:
        return [f"primaryType {primary!r}"]
    wrong.extend(name for name, ok in checks.items() if not ok)
    return wrong
