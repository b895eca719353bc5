"""The typed steps of the guarded pipeline: what the core asks its runner to do.

Each step is one small frozen value naming one effect. The core (``_flow.py``) only yields
steps and reads back their results; a runner (``_runner.py``) performs them against the
guard, the ledger, the audit log and the entry point's ``Port``. So the sequence can be read,
traced and fault-injected without any I/O, and sync and async code share it exactly.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from agentguard._intent import PaymentIntent, Spend, TransactionIntent
from agentguard._verifier import VerifiedAttestation
from agentguard.ledger import Limits
from agentguard.pipeline._outcomes import Prepared, Signed

if TYPE_CHECKING:
    from agentguard.pipeline._flow import InFlight

__all__ = [
    "Abandon",
    "Audit",
    "Authorize",
    "AwaitApproval",
    "Bind",
    "Commit",
    "Confirm",
    "Flow",
    "GatewayCommit",
    "GatewayRelease",
    "Intent",
    "MarkSigned",
    "Prepare",
    "Release",
    "Reserve",
    "Send",
    "Sign",
    "Step",
]

Intent = TransactionIntent | PaymentIntent
R = TypeVar("R")

# -- budget (the ledger) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reserve:
    """Hold ``spend`` against ``limits``. ``expires_at=None``: a local hold of ``hold_seconds``
    made before the network is asked (bound to the attestation by ``Bind``)."""

    agent: str
    spend: Spend
    key: str
    limits: Limits
    expires_at: float | None = None
    hold_seconds: float = 0.0
    action: bool = True


@dataclass(frozen=True, slots=True)
class Bind:
    """Tie a local hold to the attestation that allowed it (its task id and expiry)."""

    reservation_id: str
    task_id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class MarkSigned:
    """Recorded before a signature leaves the process: from here on it counts until settled."""

    reservation_id: str
    reference: str


@dataclass(frozen=True, slots=True)
class Commit:
    reservation_id: str
    outcome: str
    amount: int | None = None


@dataclass(frozen=True, slots=True)
class Release:
    reservation_id: str
    reason: str


# -- the authorization network --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authorize:
    """Ask the network and verify its attestation (``Guard.authorize``)."""

    intent: Intent
    wasm_args: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AwaitApproval:
    """Wait (polling the gateway's ``approvalStatus``) until a person decided on this exact
    intent: returns once it reads approved (the flow then authorizes the same intent again),
    raises ``ApprovalRejected`` / ``ApprovalTimedOut``. ``deadline`` is ``time.monotonic()``.
    ``hold``: the local hold, released by the runner if the wait is cancelled or interrupted
    (the flow cannot run on to release it then; while waiting no attestation exists)."""

    intent_hash: str
    deadline: float
    hold: str


@dataclass(frozen=True, slots=True)
class GatewayRelease:
    """Best effort: the attestation will not be used."""

    task_id: str


@dataclass(frozen=True, slots=True)
class GatewayCommit:
    """Best effort: the attested action happened."""

    task_id: str
    outcome: str


# -- the entry point's port ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prepare:
    """Everything the signature needs that is not the intent (gas, fees, nonce, typed data)."""

    verified: VerifiedAttestation


@dataclass(frozen=True, slots=True)
class Sign:
    verified: VerifiedAttestation
    prepared: Prepared


@dataclass(frozen=True, slots=True)
class Abandon:
    """The prepared signature will never leave the process (give its nonce back)."""

    prepared: Prepared


@dataclass(frozen=True, slots=True)
class Send:
    """Hand the signed bytes over: answers ``Sent`` (then ``Confirm``) or an ``Outcome``.
    ``flight`` lets an entry point that loses the answer settle a re-send later."""

    signed: Signed
    flight: InFlight


@dataclass(frozen=True, slots=True)
class Confirm:
    """Wait for what became of a sent signature."""

    signed: Signed


# -- the record ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Audit:
    kind: str
    record: Mapping[str, Any] = field(default_factory=dict)


Step = (
    Reserve
    | Bind
    | MarkSigned
    | Commit
    | Release
    | Authorize
    | AwaitApproval
    | GatewayRelease
    | GatewayCommit
    | Prepare
    | Sign
    | Abandon
    | Send
    | Confirm
    | Audit
)
Flow = Generator[Step, Any, R]
"""A sans-IO flow: yields steps, receives each step's result, returns ``R``."""
