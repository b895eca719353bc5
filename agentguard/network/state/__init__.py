"""The gateway's own memory: what it attested, per policy client and agent.

Rego is stateless, so cumulative limits (daily caps, rate limits) need someone to remember
what was already allowed. Here the gateway remembers it itself, instead of trusting the agent
host to report its spending: every ``allow`` it hands out is recorded (task id, policy client,
agent = intent ``from``, asset, exact amount, time, expiry) before the attestation leaves the
gateway, and the totals policies see in ``data.wasm.history`` are computed from these records.

Accounting rules:

* An attested amount counts until it is released. ``release`` (the client says it never used
  the attestation) is accepted only while the task is ``attested``; a ``committed`` task
  stays counted. A release only marks the task ``releasing``, and the amount keeps counting
  until the attestation expires: otherwise a host could release an attestation and then still
  use it (a vault accepts it until expiry) and so spend past its cap. At expiry a
  ``UsageCheck`` (the chain, for a vault) decides; without one a ``releasing`` task is given
  back only for a trusted policy client (one whose own key signed its registration: an EOA,
  whose host could bypass the network anyway), and otherwise stays counted (``committed``).
* An attestation that expires without a commit is *not* given back on its own. The gateway
  cannot see whether the client broadcast the transaction or settled the payment before
  expiry; giving the amount back would let a host that never commits (or lies) spend past
  its cap. Only a configured ``UsageCheck`` can release it, and only when it says the
  attestation was not used. With no usage check configured, expired tasks age out of their
  windows.
* Denials record nothing.
* Concurrent requests for one policy client + agent cannot both pass a cap: ``reserve`` reads
  the totals and counts the new amount as in flight in one step no other request for that pair
  can interleave with (one event loop for SQLite, an advisory lock for PostgreSQL, shared by
  every replica); an in-flight reservation is turned into a record on ``allow`` or dropped
  otherwise.
* An ``approval_required`` answer parks the intent as an approval request (``park_approval``:
  pending until its expiry). Only a signed approval (``agentguard.network.approvals``) moves it
  to ``approved``; a ``rejected`` one never moves again. ``claim_approval`` takes an approved
  request for one task in a single statement when the operators' input is built;
  ``unclaim_approval`` gives it back if that task is not allowed, ``use_approval`` marks it
  ``used`` once the task is. ``expired`` is not stored: a pending or approved request past its
  expiry reads as expired.

Backends: ``open_state(spec)``: a path or ``sqlite:///PATH`` is one SQLite file with running
totals in memory (one gateway process, ``_sqlite``); ``postgresql://…`` is a database any number
of gateway replicas share, totals included (``_postgres``). A recorded answer is stored
compactly and read back equal (``_compact``).
"""

from __future__ import annotations

from pathlib import Path

from agentguard.network.state._base import State
from agentguard.network.state._book import Reservation
from agentguard.network.state._model import (
    CLAIM_GRACE,
    DEFAULT_WINDOWS,
    MAX_PENDING_APPROVALS,
    MAX_TASKS_READ,
    PENDING,
    ApprovalRequest,
    Pending,
    PolicyClientRecord,
    StoredTask,
    TaskRecord,
    TaskStatus,
    UsageCheck,
    WindowTotals,
    policy_from_material,
    policy_from_spec,
    policy_material,
)
from agentguard.network.state._spec import parse_spec

__all__ = [
    "CLAIM_GRACE",
    "DEFAULT_WINDOWS",
    "MAX_PENDING_APPROVALS",
    "MAX_TASKS_READ",
    "PENDING",
    "ApprovalRequest",
    "Pending",
    "PolicyClientRecord",
    "Reservation",
    "State",
    "StoredTask",
    "TaskRecord",
    "TaskStatus",
    "UsageCheck",
    "WindowTotals",
    "open_state",
    "policy_from_material",
    "policy_from_spec",
    "policy_material",
]


def backend_for(spec: str | Path) -> type[State]:
    """The ``State`` class that opens ``spec`` (see ``open_state``)."""
    if parse_spec(spec)[0] == "postgres":
        from agentguard.network.state._postgres import PostgresState

        return PostgresState
    from agentguard.network.state._sqlite import SQLiteState

    return SQLiteState


def open_state(spec: str | Path) -> State:
    """The gateway's state at ``spec``: a path or ``sqlite:///PATH`` (one gateway process), or
    ``postgresql://USER@HOST/DB[?namespace=NAME]`` (any number of replicas share it). Anything
    else is a ``ConfigurationError``; a PostgreSQL that cannot be reached, ``StateUnavailable``.
    """
    return backend_for(spec)(spec)
