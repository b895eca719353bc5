"""Every way agentguard refuses to sign, in one tree.

Nothing is ever signed after one of these is raised. Each message says what
happened and what to do about it; none ever contains a key or a secret: every message
and every text or JSON-like attribute (a server's words: ``data``, ``reasons``, ``reason``…)
passes ``agentguard._redact.redact`` when the error is made, so a gateway, node or paid
server that echoes a registered API key or RPC URL key back cannot put it in the error.

    AgentGuardError
    ├── ConfigurationError           the SDK was set up wrongly (fix the code/config)
    │   ├── MissingExtra             an optional part is not installed (names the extra to add)
    │   └── PolicyError              policy material that is not usable text (a ValueError too)
    ├── IntentError                  the action itself is malformed (fix the call)
    │   ├── FeeCapExceeded           gas or fees above the FeeCap (whatever the RPC node quotes)
    │   └── UnknownModel             an inference model the provider does not serve (nothing paid)
    ├── AuthorizationError           no usable decision came back
    │   ├── GatewayUnavailable       transport failure, timeout, 5xx, 429 (retried first)
    │   ├── GatewayProtocolError     an answer we cannot trust (garbage, truncated, contradictory,
    │   │   │                        oversized, too deep, a redirect, a lying Content-Encoding)
    │   │   └── MalformedAttestation an attestation document with a missing or wrongly typed field
    │   ├── GatewayRPCError          a JSON-RPC error object (Newton codes, see below)
    │   │   ├── PolicyEvaluationError     -32615
    │   │   ├── PolicyContractError       -32616
    │   │   ├── OperatorNotRegistered     -32617
    │   │   ├── IncompatiblePolicyVersion -32618 / -32619
    │   │   ├── DataProviderError         -32620
    │   │   ├── PolicyProbeUnavailable    -32623 (reference network: policy not judged now, retry)
    │   │   └── GatewayAuthError          -32002, HTTP 401/403 (bad or missing API key)
    │   ├── QuorumNotReached         too few operators answered (per-operator errors attached)
    │   │   └── TierQuorumNotReached the signed trust tier needs more operators than signed it
    │   ├── PolicyDenied             a final, normal "no" with the policy's reasons (never retried)
    │   │   ├── ApprovalRequired     the policy wants a human to approve this exact intent first
    │   │   ├── ApprovalRejected     a person rejected it (or its approval was already spent)
    │   │   └── ApprovalTimedOut     no approval before the wait ended, or the request expired
    ├── VerificationError            an attestation came back but is not good enough to sign on
    │   ├── IntentMismatch           bound to a different intent / chain / policy client
    │   │   └── PolicyIdMismatch     under another policy id than the one this Guard pins
    │   ├── AttestationExpired       past its expiry (or too far in the future)
    │   ├── AttestationReplayed      this task id was already used once
    │   ├── UnknownOperator          a signature from a key outside the configured operator set
    │   ├── DuplicateSignature       two signatures from one operator key
    │   ├── InsufficientQuorum       fewer valid signatures than the threshold
    │   ├── MalformedSignature       not a 65-byte low-s secp256k1 signature
    │   ├── OnchainCheckRequired     signatures not checked by agentguard: vault (onchain) use only
    │   ├── TierTooLow               the signed trust tier is below what this client requires
    │   └── UnknownTier              a trust tier outside the table this verifier knows
    ├── LedgerError                  the spend budget refuses or cannot account for the action
    │   ├── BudgetExceeded           reserving would pass a cap
    │   ├── ReservationError         unknown, expired or already settled reservation
    │   └── LedgerUnavailable        the shared ledger / used-attestation store cannot be reached
    │       └── LedgerRolledBack     its server went back in time (an older snapshot): refuses
    ├── GatewayStateError            the reference gateway's own store refused or lost a change
    │   ├── StateUnavailable         its PostgreSQL did not answer (the gateway answers an error)
    │   └── TaskAlreadyRecorded      another request recorded this very task first
    ├── PaymentRequiredError         an x402 402 answer offers nothing this agent may pay
    ├── PaymentSessionBusy           waited too long for another request to open an upto session
    ├── NotAnAuditLog                a file given as an audit log is not one (no line is an entry)
    ├── ChallengeError               the challenger cannot re-check what it was given
    │   └── NotAChallengeRecord      a challenge record is malformed (not JSON, wrong shape, huge)
    └── ExecutionError               signed under a valid attestation, but it did not land as asked
        ├── TransactionReverted      the chain (or gas estimation) reverted it; reason decoded
        ├── OutcomeUnknown           sent, but whether it landed is not known yet (never re-signed)
        │   ├── PaymentOutcomeUnknown   an x402 payment was sent and no answer came back
        │   └── PaidRequestRefused      a request carrying a payment (or a paid session) was refused
        ├── PaymentRejected          a signed x402 payment was answered with 402 (never re-signed)
        ├── ProofError               a paid answer's TEE proof does not verify (do not use it)
        │   ├── TeeNotActive         the TEE is not active in OpenGradient's onchain registry
        │   │   └── EndpointNotActive    a request to an unregistered endpoint, refused unsent
        │   └── StreamUnverified     a streamed answer ended without a proof that verifies
        ├── TlsPinMismatch           a TEE endpoint showed another TLS certificate than registered
        └── NodeUnavailable          the RPC node failed before anything was signed (retry later)

    RequestNotSent (mixin of TlsPinMismatch, EndpointNotActive): a transport refused the request
    before writing a byte of it, so a signed payment it carried never left the process
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentguard._redact import redact


class AgentGuardError(Exception):
    """Base class: catching this catches every refusal."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        for name, value in list(vars(self).items()):  # what a subclass set before this call
            if isinstance(value, str | list | dict):
                setattr(self, name, redact(value))
        self.message = message = str(redact(message))
        if hint is not None:
            self.hint = str(redact(hint))
        super().__init__(f"{message} — {self.hint}" if self.hint else message)


class ConfigurationError(AgentGuardError):
    """The SDK was set up wrongly (a missing or malformed argument, variable or file): fix the code
    or config."""

    hint = "Fix the agentguard configuration; nothing was sent or signed."


class MissingExtra(ConfigurationError, ImportError):
    """An entry point needs an optional part of agentguard that is not installed. Raised before
    the entry point does anything (no key written, no process started). An ``ImportError`` too,
    so ``except ImportError`` around an optional import keeps working."""

    def __init__(self, extra: str, missing: Sequence[str], *, needed_by: str) -> None:
        self.extra = extra
        self.missing = list(missing)
        super().__init__(
            f"{needed_by} needs agentguard's {extra!r} extra, which is not installed "
            f"(missing: {', '.join(self.missing)})",
            hint=(
                f"Install it: pip install 'agentguard[{extra}]' (or uv add "
                f"'agentguard[{extra}]'; in a checkout of agentguard: uv sync --all-extras). "
                "Nothing was written or started."
            ),
        )


class PolicyError(ConfigurationError, ValueError):
    """Policy material that cannot name one code: text with no UTF-8 form (a lone surrogate,
    which JSON's ``"\\ud800"`` decodes to) cannot be hashed, signed or compiled. A
    ``ValueError`` too, as material checks have always raised (callers map it to
    ``INVALID_PARAMS``)."""

    hint = "Fix the policy material (its text must be valid Unicode); nothing was sent or signed."


class IntentError(AgentGuardError, ValueError):
    """The action itself is malformed (an address, amount, chain id or calldata): fix the call."""

    hint = "Fix the action's fields; nothing was sent or signed."


class UnknownModel(IntentError):
    """An inference request names a model the provider's model list does not have: refused
    before anything is paid (the provider would take the payment, then refuse the model)."""

    hint = (
        "Nothing was sent or signed. Use a model the provider serves, or extend the client's "
        "model list if the provider added one."
    )


class FeeCapExceeded(IntentError):
    """Gas or fees (as the RPC node quotes them, or as asked of the Signer) above the ``FeeCap``."""

    hint = (
        "Nothing was signed. The transaction would pay more gas or fees than the Signer's FeeCap "
        "allows; retry when fees are lower, or raise Signer(fees=FeeCap(...)) deliberately."
    )


# -- authorization ---------------------------------------------------------------------------


class AuthorizationError(AgentGuardError):
    """No usable decision came back from the authorization network."""

    hint = "Nothing was signed. Check the authorization service and try again."


class GatewayUnavailable(AuthorizationError):
    """Transport failure, timeout, HTTP 5xx or 429 from the gateway (retried first, when safe)."""

    hint = (
        "The authorization gateway could not be reached in time; nothing was signed. Retry later."
    )


class GatewayProtocolError(AuthorizationError):
    """An answer that cannot be trusted: garbage, truncated, contradictory, oversized, too deep."""

    hint = (
        "The gateway's answer could not be trusted (malformed or incomplete); nothing was signed. "
        "Check that the gateway URL points at a Newton-compatible gateway."
    )


class MalformedAttestation(GatewayProtocolError, ValueError):
    """An attestation document (from a gateway, or ``Attestation.from_json``) that does not
    have the documented shape: it is refused whole, never partly read. (A ``ValueError`` too,
    so a nested model's refusal keeps its place in the outer one's message.)"""

    hint = (
        "The attestation is malformed (see which field); nothing was signed. If it came from a "
        "gateway, check that the gateway URL points at a Newton-compatible gateway."
    )


class GatewayRPCError(AuthorizationError):
    """A JSON-RPC error object from the gateway."""

    def __init__(self, message: str, *, code: int, data: Any = None, hint: str | None = None):
        self.code = code
        self.data = data
        super().__init__(f"gateway error {code}: {message}", hint=hint)


class PolicyEvaluationError(GatewayRPCError):
    """JSON-RPC -32615: the policy failed to evaluate (bad params or a Rego error)."""

    hint = "The policy failed to evaluate (bad params or Rego error); fix the policy."


class PolicyContractError(GatewayRPCError):
    """JSON-RPC -32616: the call to the policy client contract failed."""

    hint = "The policy client contract call failed; check the policy client address and chain."


class OperatorNotRegistered(GatewayRPCError):
    """JSON-RPC -32617: an operator is not registered."""

    hint = "An operator is not registered; the operator set must be fixed by its owner."


class IncompatiblePolicyVersion(GatewayRPCError):
    """JSON-RPC -32618 / -32619: the policy or policy data version is not supported."""

    hint = "The policy (or policy data) version is not supported by the task manager; migrate it."


class DataProviderError(GatewayRPCError):
    """JSON-RPC -32620: a policy data provider failed."""

    hint = "A policy data provider failed; retry later or check the data provider."


class PolicyProbeUnavailable(GatewayRPCError):
    """JSON-RPC -32623 (the reference network's): the gateway or an operator could not judge
    the policy now (no probe child could start: the machine's state, not the policy's)."""

    hint = "Nothing was refused or signed; the policy could not be judged now. Retry later."


class GatewayAuthError(GatewayRPCError):
    """JSON-RPC -32002 or HTTP 401/403: the gateway refused the API key (bad or missing)."""

    hint = "The gateway refused the API key; set a valid key with the right permissions."


class QuorumNotReached(AuthorizationError):
    """Too few operators produced a decision; ``operator_errors`` says who failed and why."""

    hint = "Not enough operators answered; nothing was signed. Retry when operators are back."

    def __init__(self, message: str, *, operator_errors: Sequence[Any] = ()) -> None:
        self.operator_errors = list(operator_errors)
        super().__init__(message)


class PolicyDenied(AuthorizationError):
    """The policy said no. Final: never retried."""

    hint = "The policy refused this action; change the action or the policy, do not retry."

    def __init__(
        self,
        message: str,
        *,
        reasons: Sequence[str] = (),
        task_id: str | None = None,
    ) -> None:
        self.reasons = list(reasons)
        self.task_id = task_id
        detail = "; ".join(self.reasons) if self.reasons else "no reason given"
        super().__init__(f"{message}: {detail}")


class ApprovalRequired(PolicyDenied):
    """The policy wants a human to approve this exact intent first (``approval_above``)."""

    hint = (
        "A human must approve this exact intent (`agentguard approvals approve`, or the approval "
        "console); pass approval_timeout= to wait for it, or authorize it again afterwards."
    )

    def __init__(
        self,
        message: str,
        *,
        reasons: Sequence[str] = (),
        task_id: str | None = None,
        intent_hash: str | None = None,
    ) -> None:
        self.intent_hash = intent_hash
        super().__init__(message, reasons=reasons, task_id=task_id)


class ApprovalRejected(PolicyDenied):
    """A person rejected the pending approval for this exact intent. Nothing was signed."""

    hint = "A person refused this action; do not retry it unchanged."

    def __init__(self, message: str, *, intent_hash: str | None = None) -> None:
        self.intent_hash = intent_hash
        super().__init__(message)


class ApprovalTimedOut(PolicyDenied):
    """No approval came for this exact intent before the wait ended (or the request expired).
    Nothing was signed; the local hold was released."""

    hint = (
        "Nobody approved the action in time; ask a person to approve it "
        "(`agentguard approvals list`) and try again, or wait longer (approval_timeout=)."
    )

    def __init__(self, message: str, *, intent_hash: str | None = None) -> None:
        self.intent_hash = intent_hash
        super().__init__(message)


# -- verification ----------------------------------------------------------------------------


class VerificationError(AgentGuardError):
    """An attestation came back but is not good enough to sign on."""

    hint = "The attestation cannot be trusted; nothing was signed. Do not bypass this check."


class IntentMismatch(VerificationError):
    """The attestation is bound to a different intent, chain, policy client or policy id."""

    hint = (
        "The attestation is for a different action than the one about to be signed; "
        "nothing was signed. Authorize the exact action again."
    )


class PolicyIdMismatch(IntentMismatch):
    """The attestation was made under another policy id than the one this Guard pins: the
    policy client's configuration changed (the owner switched the policy, see
    docs/vault-upgrades.md) or the network evaluates one the agent did not pin."""

    hint = (
        "Nothing was signed and the local hold was released. If the owner switched the policy "
        "on purpose, pin the new id (Guard.connect(..., policy_id=<new id>) or policy= and "
        "params= of the new configuration) and ask again; if not, do not: the network is "
        "attesting a configuration you did not pin."
    )

    def __init__(self, attested: bytes, pinned: bytes) -> None:
        self.attested = "0x" + attested.hex()
        self.pinned = "0x" + pinned.hex()
        super().__init__(
            f"the attestation was made under policy id {self.attested}; this Guard pins "
            f"{self.pinned}"
        )


class AttestationExpired(VerificationError):
    """The attestation is past its expiry (or claims an absurdly long lifetime)."""

    hint = "The attestation is no longer valid; nothing was signed. Authorize again."


class AttestationReplayed(VerificationError):
    """This attestation (task id) was already used once."""

    hint = "Each attestation authorizes one action once; nothing was signed. Authorize again."


class UnknownOperator(VerificationError):
    """A signature from a key outside the configured operator set."""

    hint = "A signature came from a key outside the configured operator set; nothing was signed."


class DuplicateSignature(VerificationError):
    """Two signatures from one operator key."""

    hint = "One operator signed twice; a quorum needs distinct operators. Nothing was signed."


class InsufficientQuorum(VerificationError):
    """Fewer valid signatures from distinct operators than the threshold."""

    hint = "Too few distinct operators signed; nothing was signed. Retry when operators are back."


class MalformedSignature(VerificationError):
    """An operator signature that is not a 65-byte low-s secp256k1 signature."""

    hint = "An operator signature is not a valid 65-byte low-s secp256k1 signature."


class OnchainCheckRequired(VerificationError):
    """Signatures agentguard does not check itself (Newton BLS binding): for vaults, whose contract
    checks them onchain, only."""

    hint = (
        "agentguard did not check this attestation's operator signatures (Newton BLS), so this "
        "key will not sign it directly; nothing was signed. Use it only through a vault whose "
        "contract checks the signatures onchain."
    )


# -- ledger ----------------------------------------------------------------------------------


class LedgerError(AgentGuardError):
    """The spend ledger refuses, or cannot account for, the action."""

    hint = "The spend ledger refused the action; nothing was signed."


class BudgetExceeded(LedgerError):
    """A cap refused the spend; the fields let an agent back off without parsing the message."""

    hint = "This would pass a spend cap; wait for the window to roll or raise the cap."

    def __init__(
        self,
        message: str,
        *,
        cap: int | None = None,
        used: int | None = None,
        requested: int | None = None,
        retry_at: float | None = None,
        asset: str | None = None,
        window_seconds: int | None = None,
    ) -> None:
        self.cap = cap
        self.used = used
        self.requested = requested
        self.retry_at = retry_at
        """Unix time when the spend would fit again; ``None`` if it never will."""
        self.asset = asset
        """The capped asset (lowercase address); ``None`` for a cap on the number of actions."""
        self.window_seconds = window_seconds
        """The rolling window of the cap; ``None`` for a per-transaction cap."""
        super().__init__(message)


class ReservationError(LedgerError):
    """An unknown, expired or already settled reservation."""

    hint = "The reservation is unknown, expired or already settled; authorize the action again."


class LedgerUnavailable(LedgerError):
    """The ledger's or the used-attestation record's server (Redis, PostgreSQL) did not answer.

    Whether the last call took effect is unknown; a reservation it may have made counts until it
    expires or is settled, and an attestation it may have claimed stays used (fail closed)."""

    hint = (
        "Nothing was signed. The shared ledger's server is unreachable; retry when it is back "
        "(the next call reconnects by itself)."
    )


class LedgerRolledBack(LedgerUnavailable):
    """The shared ledger's server came back with older data than this process already saw (a
    restore from an older snapshot, a failover to a replica that lagged): the spends made after
    that point are forgotten, so the budget would be paid twice. Every client refuses from then
    on, and so does every later open, until a person decides (retrying does not help)."""

    hint = (
        "Nothing was signed. Restore the ledger server's newest data; or, accepting that the "
        "spends after the snapshot are forgotten, reset the namespace knowingly (delete its "
        "epoch key, then open_ledger(url, create=True) once)."
    )


# -- the reference gateway's state -----------------------------------------------------------


class GatewayStateError(AgentGuardError):
    """The reference gateway's store of policy clients, spend and approvals refused a change
    (raised inside the gateway; a client sees the gateway's error answer, never an allow)."""

    hint = "The gateway answered an error instead of a decision; retry the request."


class StateUnavailable(GatewayStateError):
    """The gateway's shared state (PostgreSQL) did not answer. Whether the last change took
    effect is unknown; an amount it may have counted stays counted (fail closed)."""

    hint = (
        "Nothing was attested. The gateway's database is unreachable; retry when it is back "
        "(the next request reconnects by itself)."
    )


class TaskAlreadyRecorded(GatewayStateError):
    """Two requests decided the same task at once and the other one recorded it first: the
    recorded answer is the one to return."""


# -- execution -------------------------------------------------------------------------------


class NotAnAuditLog(AgentGuardError, ValueError):
    """The file is not an agentguard audit log at all (none of its lines is an audit entry), as
    opposed to a log that was tampered with."""

    hint = "Give the path of the JSONL file an AuditLog writes (e.g. audit.jsonl)."


class ExecutionError(AgentGuardError):
    """Signed under a valid attestation, but it did not land as asked."""

    hint = "The action was authorized but did not complete; see the reason."


class TransactionReverted(ExecutionError):
    """The transaction reverted (at estimation: nothing was signed; onchain: gas was spent)."""

    hint = "The contract refused the call; the budget was released. Fix the call, then retry."

    def __init__(self, message: str, *, reason: str = "", tx_hash: str | None = None) -> None:
        self.reason = reason
        self.tx_hash = tx_hash
        super().__init__(f"{message}: {reason}" if reason else message)


class OutcomeUnknown(ExecutionError):
    """Signed and possibly sent; it stays counted against the budget until reconciled."""

    hint = (
        "Do not sign it again. Reconcile with wallet.recover() (or the x402 receipt) once the "
        "chain or server answers; the reservation stays counted until then."
    )

    def __init__(self, message: str, *, reference: str | None = None) -> None:
        self.reference = reference
        super().__init__(message)


# -- x402 payments ---------------------------------------------------------------------------


class PaymentRequiredError(AgentGuardError):
    """A 402 answer that is malformed or offers only payments this agent may not make."""

    hint = (
        "Nothing was signed. The server asks for a payment this agent is not configured to make "
        "(see the reasons); fix the server or widen the x402 allowances deliberately."
    )

    def __init__(self, message: str, *, reasons: Sequence[str] = ()) -> None:
        self.reasons = list(reasons)
        detail = "; ".join(self.reasons[:8])
        super().__init__(f"{message}: {detail}" if detail else message)


class PaymentSessionBusy(AgentGuardError):
    """Another request was opening the ``upto`` session this request would ride, and did not
    finish within this request's pool timeout."""

    hint = (
        "Nothing was signed or held for this request. Retry it (it rides the session once open) "
        "or give the client a longer pool timeout."
    )


class PaymentRejected(ExecutionError):
    """The server refused a signed payment. The signature was not repeated; it stays counted."""

    hint = (
        "No second payment was signed. The signed authorization stays counted in the ledger "
        "until it expires unused or is reconciled (ledger.recover), because the server could "
        "still settle it; check the reason before asking for the resource again."
    )

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        reference: str | None = None,
        reservation_id: str | None = None,
    ) -> None:
        self.reason = reason
        self.reference = reference
        self.reservation_id = reservation_id
        super().__init__(f"{message}: {reason}" if reason else message)


class PaymentOutcomeUnknown(OutcomeUnknown):
    """A signed payment left the process and no answer came back: it may have been taken."""

    hint = (
        "The payment may have been taken. Send the same request again through the same "
        "X402Auth: it re-sends the identical signed payment (same nonce, same payment id), "
        "never a new one. Or reconcile with ledger.recover() by the payment nonce; the "
        "reservation stays counted until then."
    )

    def __init__(
        self,
        message: str,
        *,
        reference: str | None = None,
        reservation_id: str | None = None,
        payment_id: str | None = None,
    ) -> None:
        self.reservation_id = reservation_id
        self.payment_id = payment_id
        super().__init__(message, reference=reference)


class PaidRequestRefused(OutcomeUnknown):
    """A request that carried a signed payment, or rode a paid ``upto`` session, was answered
    with an error (401, 4xx, 5xx): the payee holds a signature it may still settle."""

    hint = (
        "Nothing new was signed. The signed maximum stays counted in the ledger until the chain "
        "shows what was settled (ledger.recover with agentguard.x402.resolver); fix the cause "
        "(see the status) before asking again."
    )

    def __init__(
        self,
        message: str,
        *,
        status: int,
        reference: str | None = None,
        reservation_id: str | None = None,
    ) -> None:
        self.status = status
        self.reservation_id = reservation_id
        super().__init__(message, reference=reference)


class ProofError(ExecutionError):
    """A response's enclave (TEE) proof does not verify: wrong key, wrong id, or altered data."""

    hint = (
        "Do not use this response: it is not provably the enclave's answer to this request. "
        "The payment for it stays as the receipt says; check the signing key and the endpoint."
    )


class TeeNotActive(ProofError):
    """The TEE (by id or endpoint) is not among the active TEEs of OpenGradient's onchain
    registry: unknown, disabled, revoked build (PCR) or stale heartbeat."""

    hint = (
        "Do not use this answer and do not send to this endpoint: the registry does not vouch "
        "for this enclave now. Use a TEE the registry lists as active."
    )


class RequestNotSent(AgentGuardError):
    """Mixed into an error a transport raises when it refused a request before writing any
    byte of it: a signed x402 payment the request carried never left the process, so
    ``X402Auth`` releases its budget instead of counting it as an unknown outcome.

    Only agentguard's own transports raise it, at points where nothing was written; a custom
    transport raising it is trusted like any code the agent runs (it could as well leak the
    payment). ``auth.client()``'s transport also checks httpcore's trace: a request of which
    any byte was started is never taken as unsent, whatever is raised."""


class EndpointNotActive(TeeNotActive, RequestNotSent):
    """A request to an endpoint at which no active TEE is registered, refused by the pinned
    transport before it connected."""


class TlsPinMismatch(ExecutionError, RequestNotSent):
    """A TEE endpoint presented a TLS certificate other than the one the registry holds for
    it: the connection was closed before any request byte was sent over it."""

    hint = (
        "Nothing was sent to that endpoint. It is not the registered enclave (or the registry "
        "changed); do not retry it until the registry and the endpoint agree."
    )


class StreamUnverified(ProofError):
    """A streamed answer ended without a final frame whose proof verifies (the frame is
    missing, cut off, or its proof fails): the text already streamed is not proven."""

    hint = (
        "Do not use the streamed text as the enclave's answer: it is unverified. The payment "
        "stays counted as for any paid answer; ask again if you need a proven answer."
    )

    def __init__(self, message: str, *, text: str = "") -> None:
        self.text = text
        super().__init__(message)


class NodeUnavailable(ExecutionError):
    """The RPC node failed or answered an error while the transaction was being prepared
    (nonce, block, fee reads): nothing was signed and the budget was given back."""

    hint = "Nothing was signed; the budget was released. Retry when the RPC node answers."


class TierQuorumNotReached(QuorumNotReached):
    """The operators agreed on a trust tier (``tier``) whose threshold the gateway could not
    reach (an operator down or disagreeing): nothing was attested, nothing signed."""

    hint = (
        "This action's trust tier needs more operators than answered; nothing was signed. "
        "Retry when every operator is up."
    )

    def __init__(self, message: str, *, tier: int, operator_errors: Sequence[Any] = ()) -> None:
        self.tier = tier
        super().__init__(message, operator_errors=operator_errors)


class TierTooLow(VerificationError):
    """The operators signed a lower trust tier than this client requires for what the action
    moves (``Guard.connect(..., tiers=...)``); ``tier`` signed, ``required`` locally."""

    hint = (
        "The policy's tier for this action is below the client's minimum; raise the policy's "
        "tier for such amounts or lower the client's tiers."
    )

    def __init__(self, message: str, *, tier: int, required: int) -> None:
        self.tier = tier
        self.required = required
        super().__init__(message)


class UnknownTier(VerificationError):
    """The attestation names a trust tier this verifier has no rule for: refused, never read
    as a weaker one."""

    hint = "Upgrade agentguard to a version that knows this trust tier."


class ChallengeError(AgentGuardError):
    """The challenger (``agentguard challenge``) cannot re-check what it was given: a source
    it cannot read, evidence it cannot rebuild the policy input from, a policy id it has no
    registration for."""

    hint = "Check the source (state, gateway URL and API key, audit log, policy folder)."


class ChallengeRetry(AgentGuardError):
    """The challenger could not judge a task now, though it may later: the policy's probe ran
    out of time or no probe child could start (a loaded machine can do both to a good policy).
    Not a ``ChallengeError``, which passes a task as unverifiable: the watch keeps its cursor
    before the task and tries it again; a one-shot run stops there."""

    hint = "Run it again when the machine is less loaded (the watch retries by itself)."

    def __init__(self, message: str, *, code: bytes = b"") -> None:
        # what was probed (``probe_key``: material and params, not the code alone, which
        # another registration's params could exhaust): the watch counts its retries per key
        self.code = code
        super().__init__(message)


class NotAChallengeRecord(ChallengeError):
    """What was given as a challenge record is not one: not JSON, not an object of the
    ``agentguard.challenge/1`` shape, a field of the wrong type, too large or too deep."""

    hint = (
        "A challenge record is the JSON file `agentguard challenge run` wrote; it proves nothing."
    )
