"""``NewtonVerifier``: accept a Newton attestation only when its BLS aggregate verifies.

What Newton's ``AttestationValidator.validateAttestationDirect`` does onchain on a destination
chain (Base), done here before an EOA signs: the task response the operators signed is
re-encoded locally and its consensus digest must be the certificate's ``messageHash``; the
certificate is checked as Newton's ``ViewBN254CertificateVerifier`` checks it (operator table
at the certificate's reference timestamp, non-signers proven by Merkle witnesses and subtracted,
the gamma-randomised pairing check) and the signed stake must meet the quorum rule of
``OperatorVerifierLib.verifyTaskResponseCertificate``. Then: the attested intent is exactly the
one to be signed, for the pinned policy client and policy, unexpired by block number, once.
See docs/newton.md for the trust base.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from web3 import Web3

from agentguard._attestation import Attestation
from agentguard._exceptions import (
    AttestationExpired,
    AttestationReplayed,
    ConfigurationError,
    InsufficientQuorum,
    IntentMismatch,
    MalformedAttestation,
    PolicyDenied,
    PolicyIdMismatch,
    VerificationError,
)
from agentguard._intent import PaymentIntent, TransactionIntent
from agentguard._json import json_bytes, one_spelling, strict_loads
from agentguard._tickets import Ticket
from agentguard._verifier import (
    MemoryReplayGuard,
    ReplayGuard,
    VerifiedAttestation,
    _address,
    _allowed,
    _callable,
    _inputs,
    _issue,
    _policy_id,
    _positive_int,
)
from agentguard.newton._bn254 import (
    PRECOMPILE_PAIRING,
    PairingCheck,
    aggregate_g1,
    certificate_digest,
    g1_add,
    g1_neg,
    precompile_pairing,
    verify_signature,
)
from agentguard.newton._certificate import (
    BN254Certificate,
    OperatorSetInfo,
    operator_info_leaf,
    process_inclusion_proof,
)
from agentguard.newton._operators import OperatorSet, OperatorTable
from agentguard.newton._structs import Task, TaskResponse

__all__ = [
    "DEFAULT_THRESHOLD_FLOOR",
    "DEPLOYMENTS",
    "MAX_CLOCK_SKEW",
    "NEWTON_MAX_TASK_AGE",
    "NewtonVerifier",
]

DEPLOYMENTS: dict[int, tuple[str, str]] = {
    # chain id: (Newton's BN254 certificate verifier there, Newton's AVS on the source chain)
    # newton-contracts deployments/newton-cross-chain/<chain>-prod.json (bn254CertificateVerifier)
    # and deployments/newton-prover/<source>-prod.json (newtonProverServiceManager).
    8453: (
        "0x19fd28083c23ce187cee21b5396ef3742b8eadaa",  # Base, source Ethereum (1)
        "0xbecc1d0b0eb3f1b7164f93d21e4581b3bddc488a",
    ),
    84532: (
        "0xc39f5e056310f782f622370a3318037a116ed68c",  # Base Sepolia, source Sepolia
        "0x1c7331aad7c326ea70f22046da7cb967675f398c",
    ),
}

_QUORUM = re.compile(r"(0x)?([0-9a-fA-F]{2})+")

NEWTON_MAX_TASK_AGE = 3600
"""Seconds a task response is usable after its signed ``initializationTimestamp`` at most
(``AgentVault.NEWTON_MAX_TASK_AGE``): the block expiry rests on the unsigned
``taskCreatedBlock``, so only the signed timestamp bounds a certificate's age."""
MAX_CLOCK_SKEW = 300
"""``AgentVault.NEWTON_MAX_CLOCK_SKEW``: how far a task may be dated ahead of the chain, and
how long a replay claim outlives the signed deadline."""

DEFAULT_THRESHOLD_FLOOR = 40
"""Newton's v1 protocol default (``OperatorVerifierLib.DEFAULT_CROSS_CHAIN_QUORUM_THRESHOLD_
PERCENTAGE``, "gateway-defaulted to 40% across all environments"). ``Task`` is not covered by
the certificate, so its ``quorumThresholdPercentage`` is only the gateway's word: Newton itself
refuses to trust it where the task is unauthenticated (NEWT-1708). The verifier therefore
requires the larger of the task's threshold and this floor (or ``threshold_percentage``)."""


class NewtonVerifier:
    """Verifies Newton BLS attestations client-side; assurance ``"newton-bls"``.

    ``web3`` reaches the chain whose Newton certificate verifier holds the operator table
    (Base); it is trusted for that table, the block number and the pairing check (docs/newton.md).
    ``certificate_verifier`` and ``source_avs`` default from Newton's deployments for the
    web3's chain id. The ticket's ``expires_at`` is a unix time: the attestation's remaining
    blocks (at most the signed policy's ``expireAfter``) times ``block_time``, never more than
    ``max_lifetime`` seconds from now, whatever block number the RPC reports, and never past
    the signed deadline (``initializationTimestamp`` + min(1 h, ``expireAfter`` blocks), on the
    chain head's clock, as ``AgentVault._requireFresh``); the replay claim lasts past it.
    ``quorum_number`` is the quorum the gateway was asked for (``NewtonGateway``'s): the task's
    ``quorumNumbers`` is not signed, so a task naming another operator set is refused.
    """

    def __init__(
        self,
        *,
        policy_client: str,
        web3: Web3,
        policy_id: str | None = None,
        certificate_verifier: str | None = None,
        source_avs: str | None = None,
        threshold_percentage: int | None = None,
        replay_guard: ReplayGuard | None = None,
        clock: Callable[[], float] = time.time,
        max_lifetime: int = 3600,
        block_time: float = 2.0,
        quorum_number: str = "00",
    ) -> None:
        if not isinstance(web3, Web3):
            raise ConfigurationError("NewtonVerifier needs a web3.Web3 connected to the chain")
        self.policy_client = _address(policy_client, "policy_client")
        self.policy_id = _policy_id(policy_id)
        self._web3 = web3
        self._certificate_verifier = (
            None
            if certificate_verifier is None
            else _address(certificate_verifier, "certificate_verifier")
        )
        self._source_avs = None if source_avs is None else _address(source_avs, "source_avs")
        if threshold_percentage is None:
            threshold_percentage = DEFAULT_THRESHOLD_FLOOR
        if _positive_int(threshold_percentage, "threshold_percentage") > 100:
            raise ConfigurationError("threshold_percentage must be in 1..100")
        self.threshold_floor = threshold_percentage
        self._clock = _callable(clock, "clock")
        self._replay = replay_guard if replay_guard is not None else MemoryReplayGuard(clock)
        self._max_lifetime = _positive_int(max_lifetime, "max_lifetime")
        if (
            isinstance(block_time, bool)
            or not isinstance(block_time, int | float)
            or not 0 < block_time <= 600
        ):
            raise ConfigurationError(
                f"block_time must be seconds in (0, 600], got {block_time!r:.40}"
            )
        self._block_time = float(block_time)
        if not isinstance(quorum_number, str) or not _QUORUM.fullmatch(quorum_number):
            raise ConfigurationError('quorum_number must be hex bytes such as "00"')
        self.quorum_numbers = bytes.fromhex(quorum_number.removeprefix("0x"))
        self._chain_id: int | None = None
        self._table: OperatorTable | None = None
        self._pairing: PairingCheck = precompile_pairing(self._eth_call_pairing)

    # --- chain access -------------------------------------------------------------------------

    def _eth_call_pairing(self, data: bytes) -> bytes:
        try:
            return bytes(
                self._web3.eth.call(
                    {"to": Web3.to_checksum_address(PRECOMPILE_PAIRING), "data": data}
                )
            )
        except Exception as exc:
            raise ValueError(
                f"the chain's pairing precompile refused the input ({type(exc).__name__})"
            ) from None

    def _resolve(self) -> tuple[int, OperatorTable, str]:
        """The chain id, the operator table and the source AVS, resolved on first use (so a
        verifier can be built while the RPC is down)."""
        if self._table is None or self._chain_id is None:
            from agentguard._exceptions import NodeUnavailable

            try:
                chain_id = int(self._web3.eth.chain_id)
            except Exception as exc:
                raise NodeUnavailable(
                    f"reading the chain id failed ({type(exc).__name__}); check the RPC and retry"
                ) from None
            default = DEPLOYMENTS.get(chain_id)
            verifier = self._certificate_verifier or (default[0] if default else None)
            avs = self._source_avs or (default[1] if default else None)
            if verifier is None or avs is None:
                raise ConfigurationError(
                    f"Newton has no published certificate verifier for chain {chain_id}; pass "
                    "certificate_verifier= and source_avs= (Newton's deployments list them)"
                )
            self._source_avs = _address(avs, "source_avs")
            self._table = OperatorTable(self._web3, verifier)
            self._chain_id = chain_id
        assert self._source_avs is not None
        return self._chain_id, self._table, self._source_avs

    # --- verification -------------------------------------------------------------------------

    def verify(
        self, attestation: Attestation, intent: TransactionIntent | PaymentIntent
    ) -> VerifiedAttestation:
        given = attestation  # the caller's object; everything below checks private copies
        attestation, fresh = _inputs(given, intent)
        task_hex = _allowed(attestation, fresh)
        if attestation.scheme != "newton-bls":
            raise VerificationError(
                f"NewtonVerifier verifies Newton BLS attestations, not {attestation.scheme}"
            )
        result = _result(getattr(attestation, "newton_result", None))
        response = TaskResponse.parse(result.get("task_response"), "task_response")
        task = Task.parse(result.get("task"), "task")
        certificate = BN254Certificate.decode(_signature_data(result))

        self._check_binding(attestation, response, task, fresh)
        chain_id, table, avs = self._resolve()
        if fresh.chain_id != chain_id:
            raise IntentMismatch(
                f"the intent is for chain {fresh.chain_id}; this verifier reads Newton's "
                f"operator table on chain {chain_id}"
            )
        required = self._threshold(task)
        if certificate.message_hash != response.consensus_digest():
            raise VerificationError(
                "the certificate signs a different task response than the one returned "
                "(messageHash is not the consensus digest recomputed here)"
            )
        head = table.head()
        if attestation.expires_at <= head.number:
            raise AttestationExpired(
                f"attestation {task_hex} expired at block {attestation.expires_at} "
                f"(the chain is at block {head.number})"
            )
        operator_set = OperatorSet(avs, task.quorum_numbers[0])
        info = table.info(operator_set, certificate.reference_timestamp)
        table.check_usable(operator_set, certificate.reference_timestamp, head)
        signed = self._check_certificate(certificate, info)
        _check_quorum(signed, info.total_weights, required)

        now = self._clock()
        signed_left = self._signed_lifetime_left(response, head.timestamp, task_hex)
        blocks = min(attestation.expires_at - head.number, response.policy_config.expire_after)
        lifetime = min(blocks * self._block_time, self._max_lifetime, signed_left)
        expires_at = int(now + lifetime)
        if expires_at <= now:
            raise AttestationExpired(f"attestation {task_hex} has no lifetime left")
        # the claim outlives the signed deadline on either clock (plus skew), never only the
        # ticket: once it lapses the certificate is refused as stale, not re-accepted
        claim_until = int(max(now + signed_left, head.timestamp + signed_left)) + MAX_CLOCK_SKEW
        if not self._replay.claim(attestation.task_id, claim_until):
            raise AttestationReplayed(f"attestation {task_hex} was already used")
        return _issue(
            Ticket(
                task_id=attestation.task_id,
                attestation=attestation,
                intent=fresh,
                intent_hash=fresh.intent_hash,
                expires_at=expires_at,
                assurance="newton-bls",
            ),
            given,
            intent,
            (),
            now,
        )

    def _check_binding(
        self,
        attestation: Attestation,
        response: TaskResponse,
        task: Task,
        fresh: TransactionIntent | PaymentIntent,
    ) -> None:
        """The signed response is for this task, this policy client and policy, and exactly
        this intent (hash recomputed here from the signed bytes); the gateway's summary fields
        must agree with it. Mirrors ``validateAttestationDirect``'s task/response binding."""
        if response.task_id != attestation.task_id or task.task_id != response.task_id:
            raise IntentMismatch("the task response, task and attestation name different task ids")
        client = bytes.fromhex(self.policy_client[2:])
        if response.policy_client != client or task.policy_client != client:
            raise IntentMismatch(
                f"Newton attested for policy client 0x{response.policy_client.hex()}, "
                f"expected {self.policy_client}"
            )
        if attestation.policy_client.lower() != self.policy_client.lower():
            raise IntentMismatch(f"attestation is for policy client {attestation.policy_client}")
        if (
            response.policy_id != response.policy_task_data.policy_id
            or response.policy_address != response.policy_task_data.policy_address
        ):
            raise IntentMismatch(
                "the task response's policy id or address contradicts its policy data"
            )
        if self.policy_id is not None and response.policy_id != self.policy_id:
            raise PolicyIdMismatch(response.policy_id, self.policy_id)
        if attestation.policy_id != response.policy_id:
            raise IntentMismatch("the attestation's policy id is not the signed response's")
        if (
            task.intent != response.intent
            or task.intent_signature != response.intent_signature
            or task.initialization_timestamp != response.initialization_timestamp
        ):
            raise IntentMismatch("the task and the signed task response describe different intents")
        if response.intent.intent_hash != fresh.intent_hash:
            raise IntentMismatch("Newton attested a different intent than the one to be signed")
        if not response.allowed:
            raise PolicyDenied(
                "the operators' signed evaluation result is not an allow",
                reasons=attestation.reasons,
                task_id="0x" + attestation.task_id.hex(),
            )

    def _signed_lifetime_left(self, response: TaskResponse, chain_now: int, task_hex: str) -> float:
        """Seconds left of the response's signed lifetime on the chain's clock, as
        ``AgentVault._requireFresh`` counts it: from the signed ``initializationTimestamp``
        (milliseconds when >= 10^11), ``expireAfter`` blocks, at most ``NEWTON_MAX_TASK_AGE``.
        The chain head's timestamp (trusted RPC, docs/newton.md), not the host's clock, is the
        one the transfer is judged by onchain."""
        created = response.initialization_timestamp
        if created >= 10**11:
            created //= 1000
        if created > chain_now + MAX_CLOCK_SKEW:
            raise VerificationError(
                f"attestation {task_hex} was signed for a task created at {created}, after the "
                f"chain's time {chain_now}; refusing a future-dated task response"
            )
        max_age = min(NEWTON_MAX_TASK_AGE, response.policy_config.expire_after * self._block_time)
        left = created + max_age - chain_now
        if left <= 0:
            raise AttestationExpired(
                f"attestation {task_hex} is stale: its task was created at {created} and its "
                f"signed lifetime ({int(max_age)} s) ended before the chain's time {chain_now}; "
                "ask Newton again"
            )
        return left

    def _threshold(self, task: Task) -> int:
        """Newton refuses a threshold of 0 (vacuous) or above 100; the task's value is the
        gateway's claim, so it can only raise the configured floor, never lower it."""
        claimed = task.quorum_threshold_percentage
        if claimed == 0 or claimed > 100:
            raise VerificationError(f"the task's quorum threshold {claimed}% is not in 1..100")
        if task.quorum_numbers != self.quorum_numbers:
            # unsigned: another operator set of the same AVS (other keys) must not be chosen
            raise VerificationError(
                f"the task names operator set(s) 0x{task.quorum_numbers.hex()}, not the quorum "
                f"0x{self.quorum_numbers.hex()} this client asked for"
            )
        return max(claimed, self.threshold_floor)

    def _check_certificate(self, cert: BN254Certificate, info: OperatorSetInfo) -> list[int]:
        """``ViewBN254CertificateVerifier._verifyCertificate``: subtract each proven non-signer
        from the table's aggregate key and weights, then check the aggregate signature."""
        if info.operator_info_tree_root == b"\x00" * 32:
            raise VerificationError("the operator table has an empty operator-info root")
        signed = list(info.total_weights)
        previous = -1
        non_signers = []
        for witness in cert.non_signer_witnesses:
            if witness.operator_index <= previous:
                raise VerificationError("the certificate's non-signers are not strictly sorted")
            if witness.operator_index >= info.num_operators:
                raise VerificationError(
                    f"non-signer index {witness.operator_index} is outside the "
                    f"{info.num_operators} operators"
                )
            leaf = operator_info_leaf(witness.operator_info)
            root = process_inclusion_proof(witness.proof, leaf, witness.operator_index)
            if root != info.operator_info_tree_root:
                raise VerificationError(
                    f"non-signer {witness.operator_index}'s Merkle proof does not lead to the "
                    "operator table's root"
                )
            non_signers.append(witness.operator_info.pubkey)
            for j, weight in enumerate(witness.operator_info.weights[: len(signed)]):
                signed[j] -= weight
                if signed[j] < 0:
                    raise VerificationError("non-signers weigh more than the whole operator set")
            previous = witness.operator_index
        if cert.apk == ((0, 0), (0, 0)) or cert.signature == (0, 0):
            # never produced by signing operators; refused so no identity point ever pairs
            raise VerificationError("the certificate's signature or G2 key is the identity")
        try:
            signer_apk = g1_add(info.aggregate_pubkey, g1_neg(aggregate_g1(non_signers)))
            digest = certificate_digest(cert.reference_timestamp, cert.message_hash)
            valid = verify_signature(digest, cert.signature, signer_apk, cert.apk, self._pairing)
        except ValueError as exc:
            raise VerificationError(f"the certificate's BLS points are invalid: {exc}") from None
        if not valid:
            raise VerificationError(
                "the BLS aggregate signature does not verify against the signers' keys "
                "(wrong message, wrong operator set or a forged key)"
            )
        return signed


def _check_quorum(signed: list[int], total: tuple[int, ...], percentage: int) -> None:
    """``verifyTaskResponseCertificate``: ``total * threshold <= 100 * signed`` per weight."""
    if not signed or len(signed) != len(total):
        raise InsufficientQuorum("the operator table lists no stake weights")
    for i, (s, t) in enumerate(zip(signed, total, strict=True)):
        if t <= 0:
            raise InsufficientQuorum(f"the operator table's total weight {i} is zero")
        if t * percentage > 100 * s:
            raise InsufficientQuorum(
                f"signers hold {s} of {t} stake (weight {i}); {percentage}% is required"
            )


def _result(raw: object) -> dict[str, Any]:
    if not isinstance(raw, str):
        raise VerificationError(
            "this Newton attestation carries no gateway result (task, task_response, "
            "signature_data), so its BLS aggregate cannot be verified"
        )
    try:
        doc = strict_loads(raw)
    except ValueError as exc:
        raise MalformedAttestation(f"the Newton result is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MalformedAttestation("the Newton result is not a JSON object")
    return doc


def _signature_data(result: dict[str, Any]) -> bytes:
    try:
        value = one_spelling(result, "signature_data", "signatureData")
    except ValueError as exc:
        raise MalformedAttestation(str(exc)) from None
    if value is None:
        if result.get("aggregation_response") is not None:
            raise VerificationError(
                "this Newton result carries a source-chain BLS aggregation (aggregation_response) "
                "and no certificate (signature_data); agentguard verifies Newton's destination-"
                "chain certificates (Base) only"
            )
        raise VerificationError("the Newton result has no signature_data (BN254 certificate)")
    try:
        return json_bytes(value)
    except ValueError as exc:
        raise MalformedAttestation(f"signature_data: {exc}") from None
