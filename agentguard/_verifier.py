"""The one gate between "the gateway said yes" and "we may sign".

A ``VerifiedAttestation`` can only be built here (its constructor demands a private token),
and every signing path in agentguard takes one. Each successful verification also issues a
signing ticket (``_tickets``) that the ``Signer`` redeems once, so a copied, altered or reused
``VerifiedAttestation`` signs nothing: read ``Verifier.verify`` and ``Signer``.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from eth_utils.address import to_checksum_address

from agentguard._attestation import Attestation, private_copy, recover_signer
from agentguard._exceptions import (
    ApprovalRequired,
    AttestationExpired,
    AttestationReplayed,
    ConfigurationError,
    DuplicateSignature,
    InsufficientQuorum,
    IntentMismatch,
    PolicyDenied,
    PolicyIdMismatch,
    TierTooLow,
    UnknownOperator,
    UnknownTier,
    VerificationError,
)
from agentguard._intent import PaymentIntent, TransactionIntent
from agentguard._tickets import Assurance, Ticket, fresh_intent, issue
from agentguard._tiers import MinimumTiers, TierThresholds, known, satisfies, tier_name, vault_only

__all__ = [
    "AttestationVerifier",
    "MemoryReplayGuard",
    "NewtonBindingVerifier",
    "ReplayGuard",
    "VerifiedAttestation",
    "Verifier",
    "block_deadline",
]

_TOKEN = object()
_F = TypeVar("_F", bound=Callable[..., object])
# \Z, not $: $ also matches before a final newline
_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}\Z")
_BYTES32_RE = re.compile(r"^0x[0-9a-fA-F]{64}\Z")


def _address(value: object, what: str) -> str:
    """A configured address, checksummed; a mixed-case address must carry a valid EIP-55
    checksum (a typo in one would otherwise silently name another account)."""
    if not isinstance(value, str) or not _ADDRESS_RE.match(value):
        raise ConfigurationError(
            f"{what} must be a 0x-prefixed 20-byte hex address, got {value!r:.60}"
        )
    checksummed = to_checksum_address(value)
    body = value[2:]
    if body != body.lower() and body != body.upper() and value != checksummed:
        raise ConfigurationError(
            f"{what} {value} has a wrong EIP-55 checksum (expected {checksummed}); "
            "check the address for a typo"
        )
    return checksummed


def _policy_id(value: object) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _BYTES32_RE.match(value):
        raise ConfigurationError(f"policy_id must be 0x + 64 hex digits, got {value!r:.80}")
    return bytes.fromhex(value[2:])


def _callable(value: _F, what: str) -> _F:
    if not callable(value):
        raise ConfigurationError(f"{what} must be a function, got {type(value).__name__}")
    return value


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{what} must be a positive integer, got {value!r:.40}")
    return value


class ReplayGuard(Protocol):
    """Remembers task ids already used. ``claim`` is atomic: True once, False ever after."""

    def claim(self, task_id: bytes, expires_at: int) -> bool: ...


class AttestationVerifier(Protocol):
    """What a ``Guard`` needs to turn an attestation into something a signer accepts: the
    ECDSA ``Verifier``, ``NewtonBindingVerifier``, or Newton's BLS ``NewtonVerifier``."""

    def verify(
        self, attestation: Attestation, intent: TransactionIntent | PaymentIntent
    ) -> VerifiedAttestation: ...


class MemoryReplayGuard:
    """Process-local replay guard; forgets ids only after they could no longer verify anyway."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._used: dict[bytes, int] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self._next_prune = 0.0

    def claim(self, task_id: bytes, expires_at: int) -> bool:
        with self._lock:
            now = self._clock()
            if now >= self._next_prune:
                self._used = {k: e for k, e in self._used.items() if e > now}
                self._next_prune = now + 60
            if task_id in self._used:
                return False
            self._used[task_id] = expires_at
            return True


@dataclass(frozen=True, slots=True)
class VerifiedAttestation:
    """Proof that a quorum allowed exactly ``intent``. Only ``Verifier.verify`` makes these."""

    attestation: Attestation
    intent: TransactionIntent | PaymentIntent
    signers: tuple[str, ...]
    assurance: Assurance
    expires_at: int
    """The signing ticket's deadline, unix seconds, for every scheme: for ECDSA the
    attestation's ``expiresAt``; for Newton (whose ``expiration`` is a block number) what the
    verifier derived. Ledger holds, x402 validity windows and wallet deadlines read only this."""
    _token: object

    def __post_init__(self) -> None:
        if self._token is not _TOKEN:
            raise VerificationError("VerifiedAttestation can only be created by a Verifier")

    @property
    def task_id(self) -> str:
        """The attested task id, 0x-hex."""
        return "0x" + self.attestation.task_id.hex()


class Verifier:
    """Accepts an attestation only if every one of these holds:

    (a) signatures from distinct keys of the configured operator set reach the threshold of
        the trust tier the operators signed (``agentguard._tiers``: standard = ``threshold``,
        high = ``high_threshold`` (default every operator), all and human = every operator; a
        tier outside the table is ``UnknownTier``), and that tier is at least what ``tiers``
        requires for what the intent moves (``TierTooLow``);
    (b) it is bound to the exact intent about to be signed (hash recomputed here);
    (c) it has not expired (and does not claim an absurd lifetime);
    (d) it was not used before (claimed in the replay guard, single use).

    A vault-only tier (signed, or required by ``tiers``) gives a vault-only ticket: the
    ``Signer`` then signs only a vault's ``execute`` or ERC-1271 payment, where the contract
    re-checks the quorum, never an EOA transaction or payment (``OnchainCheckRequired``).
    """

    def __init__(
        self,
        operators: Iterable[str],
        *,
        policy_client: str,
        threshold: int | None = None,
        threshold_percentage: int = 66,
        policy_id: str | None = None,
        replay_guard: ReplayGuard | None = None,
        clock: Callable[[], float] = time.time,
        max_lifetime: int = 3600,
        high_threshold: int | None = None,
        tiers: MinimumTiers | Mapping[str, Mapping[str, int | str]] | None = None,
    ) -> None:
        if isinstance(operators, str | bytes) or not isinstance(operators, Iterable):
            raise ConfigurationError("operators must be a list of operator addresses")
        addrs = {bytes.fromhex(_address(a, "operator address")[2:]) for a in operators}
        if not addrs:
            raise ConfigurationError("a Verifier needs at least one operator address")
        if threshold is None:
            if _positive_int(threshold_percentage, "threshold_percentage") > 100:
                raise ConfigurationError("threshold_percentage must be in 1..100")
            # Newton's rule: signed * 100 >= total * percentage (66% of 3 is 2, 67% is 3).
            threshold = math.ceil(len(addrs) * threshold_percentage / 100)
        if _positive_int(threshold, "threshold") > len(addrs):
            raise ConfigurationError(
                f"threshold {threshold} must be between 1 and the {len(addrs)} operators"
            )
        self._operators = frozenset(addrs)
        self.threshold = threshold
        self.thresholds = TierThresholds(len(addrs), threshold, high_threshold)
        self.tiers = MinimumTiers() if tiers is None else MinimumTiers.parse(tiers)
        self.policy_client = _address(policy_client, "policy_client")
        self.policy_id = _policy_id(policy_id)
        self._replay = replay_guard if replay_guard is not None else MemoryReplayGuard(clock)
        self._clock = _callable(clock, "clock")
        self._max_lifetime = _positive_int(max_lifetime, "max_lifetime")

    @property
    def operators(self) -> frozenset[str]:
        """The operator addresses whose signatures count (checksummed)."""
        return frozenset(to_checksum_address(a) for a in self._operators)

    @property
    def blocking(self) -> bool:
        """Whether ``verify`` may wait on I/O (a shared replay guard, or a subclass's own
        ``verify``, which may do anything). Otherwise it is CPU only (two or three ECDSA
        recoveries), which an event loop runs faster inline than through a worker thread."""
        return type(self) is not Verifier or type(self._replay) is not MemoryReplayGuard

    def verify(
        self, attestation: Attestation, intent: TransactionIntent | PaymentIntent
    ) -> VerifiedAttestation:
        """The one-time ticket a ``Signer`` accepts, if ``attestation`` allows exactly ``intent``;
        raises a ``VerificationError`` subclass otherwise (nothing is then signed)."""
        given = attestation  # the caller's object; everything below checks private copies
        attestation, fresh = _inputs(given, intent)
        task = _allowed(attestation, fresh)
        if attestation.scheme != "ecdsa":
            raise VerificationError(
                f"{attestation.scheme} attestations cannot be verified by this Verifier; "
                "use NewtonVerifier (checks Newton's BLS certificate against the onchain "
                "operator table; Guard.connect(url, policy_client=..., web3=...) picks it) "
                "or NewtonBindingVerifier with onchain enforcement (vault mode)"
            )
        if attestation.policy_client.lower() != self.policy_client.lower():
            raise IntentMismatch(
                f"attestation is for policy client {attestation.policy_client}, "
                f"expected {self.policy_client}"
            )
        if self.policy_id is not None and attestation.policy_id != self.policy_id:
            raise PolicyIdMismatch(attestation.policy_id, self.policy_id)
        local_hash = fresh.intent_hash
        if attestation.intent_hash != local_hash:
            raise IntentMismatch(
                "attestation is bound to a different intent (0x"
                f"{attestation.intent_hash.hex()[:16]}…, this intent is 0x{local_hash.hex()[:16]}…)"
            )
        now = self._clock()
        if attestation.expires_at <= now:
            raise AttestationExpired(f"attestation {task} expired at {attestation.expires_at}")
        if attestation.expires_at > now + self._max_lifetime:
            raise AttestationExpired(
                f"attestation {task} claims a lifetime beyond {self._max_lifetime}s"
            )

        tier = attestation.tier
        if not known(tier):
            raise UnknownTier(
                f"attestation {task} is signed at trust tier {tier}, which this verifier does "
                "not know; refused rather than read as a weaker tier"
            )
        threshold = self.thresholds.required(tier)
        digest = attestation.digest_for(local_hash, fresh.chain_id)
        signers: set[bytes] = set()
        for sig in attestation.signatures:
            signer = recover_signer(digest, sig.signature)
            if signer not in self._operators:
                raise UnknownOperator(
                    f"a signature recovers to 0x{signer.hex()}, which is not a configured operator "
                    "(or it signed a different intent, chain or policy client)"
                )
            if signer in signers:
                raise DuplicateSignature(f"operator 0x{signer.hex()} signed more than once")
            signers.add(signer)
        if len(signers) < threshold:
            raise InsufficientQuorum(
                f"{len(signers)} valid operator signature(s), {threshold} required at trust "
                f"tier {tier_name(tier)}"
            )
        # Judged once the tier is known to be the operators' (a relabelled one recovers to
        # strangers above), so a refusal names the tier they signed.
        spend = fresh.spend
        required_tier = self.tiers.required(spend)
        if not satisfies(tier, required_tier):
            unvalued = " (a call agentguard cannot value counts as unbounded)"
            raise TierTooLow(
                f"attestation {task} is signed at trust tier {tier_name(tier)}; this client "
                f"requires at least {tier_name(required_tier)} for what the action moves"
                f"{unvalued if spend.kind == 'unknown_call' else ''}",
                tier=tier,
                required=required_tier,
            )
        if not self._replay.claim(attestation.task_id, attestation.expires_at):
            raise AttestationReplayed(f"attestation {task} was already used")
        return _issue(
            Ticket(
                task_id=attestation.task_id,
                attestation=attestation,
                intent=fresh,
                intent_hash=local_hash,
                expires_at=attestation.expires_at,
                assurance=(
                    "quorum-ecdsa-vault-only"
                    if vault_only(tier | required_tier)
                    else "quorum-ecdsa"
                ),
            ),
            given,
            intent,
            tuple(sorted("0x" + s.hex() for s in signers)),
            now,
        )


def block_deadline(
    expiration: int, block: int, now: float, block_time: float, max_lifetime: int
) -> int:
    """The unix deadline of an attestation that expires at block ``expiration`` while the chain
    is at ``block``: the time the remaining blocks take at ``block_time`` seconds each, rounded
    down, and at most ``max_lifetime`` seconds ahead (a far-future block buys nothing)."""
    remaining = max(0, expiration - block) * block_time
    return int(now + min(remaining, max_lifetime))


def _inputs(
    attestation: object, intent: object
) -> tuple[Attestation, TransactionIntent | PaymentIntent]:
    """A private copy of the attestation and an intent rebuilt from its current fields: what
    is checked here is what the signer will later sign, whatever happens to the originals."""
    if type(attestation) is not Attestation:
        raise VerificationError(f"expected an Attestation, got {type(attestation).__name__}")
    # A shallow copy suffices: every field is immutable or never signed (operator_errors).
    copied = private_copy(attestation)
    if copied is None:
        raise VerificationError(
            "the attestation holds a value of another type than its field's, or an attribute "
            "no attestation has (altered after it was built?)"
        )
    return copied, fresh_intent(intent)


def _allowed(attestation: Attestation, intent: TransactionIntent | PaymentIntent) -> str:
    """The decision checks every verifier makes first: an approval request or a deny is final
    here (typed, with the network's reasons). Returns the task id as 0x-hex for messages."""
    task = "0x" + attestation.task_id.hex()
    if attestation.decision == "approval_required":
        raise ApprovalRequired(
            "policy requires approval",
            reasons=attestation.reasons,
            task_id=task,
            intent_hash="0x" + intent.intent_hash.hex(),
        )
    if attestation.decision != "allow":
        raise PolicyDenied("policy denied the action", reasons=attestation.reasons, task_id=task)
    if attestation.scheme != "ecdsa" and attestation.tier != 0:
        raise UnknownTier(
            f"attestation {task} is {attestation.scheme} and names trust tier "
            f"{attestation.tier}; Newton's signatures carry no tier, so none is accepted"
        )
    return task


def _issue(
    ticket: Ticket,
    attestation: Attestation,
    intent: TransactionIntent | PaymentIntent,
    signers: tuple[str, ...],
    now: float,
) -> VerifiedAttestation:
    """Record the ticket the Signer will redeem (it keeps private copies), and hand the caller
    its proof, which carries the caller's own objects."""
    issue(ticket, now)
    return VerifiedAttestation(
        attestation=attestation,
        intent=intent,
        signers=signers,
        assurance=ticket.assurance,
        expires_at=ticket.expires_at,
        _token=_TOKEN,
    )


class NewtonBindingVerifier:
    """For attestations from Newton's real gateway, whose BLS aggregate is checked onchain.

    Python cannot cheaply check a BN254 aggregate against Newton's operator registry, so this
    verifier checks what it can — decision, policy client, policy id, the intent hash
    recomputed locally, expiry by block number, single use — and marks the result
    ``assurance="newton-bls-binding"``. It is complete only together with an onchain check:
    the policy client contract calls ``validateAttestationDirect`` (BLS quorum) before it
    executes, as ``AgentVault`` does for the reference network's ECDSA quorum. So the
    ``Signer`` uses such a result only for a vault call, never for an EOA transaction or payment.
    """

    def __init__(
        self,
        *,
        policy_client: str,
        block_number: Callable[[], int],
        policy_id: str | None = None,
        replay_guard: ReplayGuard | None = None,
        clock: Callable[[], float] = time.time,
        max_lifetime: int = 3600,
        block_time: float = 2.0,
    ) -> None:
        self.policy_client = _address(policy_client, "policy_client")
        self.policy_id = _policy_id(policy_id)
        self._block_number = _callable(block_number, "block_number")
        if (
            isinstance(block_time, bool)
            or not isinstance(block_time, int | float)
            or not 0 < block_time <= 60
        ):
            raise ConfigurationError(
                f"block_time must be seconds in (0, 60], got {block_time!r:.40}"
            )
        self._block_time = float(block_time)
        self._replay = replay_guard if replay_guard is not None else MemoryReplayGuard()
        self._clock = _callable(clock, "clock")
        # Expiry is a block number here; the ticket lapses when the blocks left would have
        # passed at ``block_time`` seconds each, and never later than ``max_lifetime``.
        self._max_lifetime = _positive_int(max_lifetime, "max_lifetime")

    def verify(
        self, attestation: Attestation, intent: TransactionIntent | PaymentIntent
    ) -> VerifiedAttestation:
        given = attestation  # the caller's object; everything below checks private copies
        attestation, fresh = _inputs(given, intent)
        task = _allowed(attestation, fresh)
        if attestation.scheme != "newton-bls":
            raise VerificationError("NewtonBindingVerifier only accepts Newton BLS attestations")
        if attestation.policy_client.lower() != self.policy_client.lower():
            raise IntentMismatch(f"attestation is for policy client {attestation.policy_client}")
        if self.policy_id is not None and attestation.policy_id != self.policy_id:
            raise PolicyIdMismatch(attestation.policy_id, self.policy_id)
        if attestation.intent_hash != fresh.intent_hash:
            raise IntentMismatch("Newton attested a different intent than the one to be signed")
        block = self._block_number()
        if attestation.expires_at <= block:
            raise AttestationExpired(
                f"attestation {task} expired at block {attestation.expires_at} (the chain is "
                f"at block {block}); authorize the action again"
            )
        if not self._replay.claim(attestation.task_id, 2**63):
            raise AttestationReplayed(f"attestation {task} was already used")
        now = self._clock()
        return _issue(
            Ticket(
                task_id=attestation.task_id,
                attestation=attestation,
                intent=fresh,
                intent_hash=fresh.intent_hash,
                expires_at=block_deadline(
                    attestation.expires_at, block, now, self._block_time, self._max_lifetime
                ),
                assurance="newton-bls-binding",
            ),
            given,
            intent,
            (),
            now,
        )
