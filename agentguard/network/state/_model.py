"""What the gateway's state holds, whichever backend stores it: records, requests, policies."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from agentguard._exceptions import ConfigurationError
from agentguard.network.registration import Registration
from agentguard.policies import NUL_REFUSED, Policy

DEFAULT_WINDOWS = (3600, 86400)
MAX_PENDING_APPROVALS = 1000  # live approval requests per policy client

TaskStatus = Literal["attested", "releasing", "committed", "released"]


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    policy_client: str
    agent: str
    asset: str
    amount: int
    created_at: int
    expires_at: int
    status: TaskStatus


@dataclass(frozen=True)
class StoredTask(TaskRecord):
    """A recorded (allowed) task as an auditor reads it: ``seq`` orders the records of one
    state (a cursor: a later record always gets a higher ``seq``), ``result`` is the whole
    answer the client got (the attestation and the policy data the operators evaluated)."""

    seq: int
    result: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The wire form (``agentguard_tasks``): the amount as a decimal string."""
        return {
            "seq": self.seq,
            "task_id": self.task_id,
            "policy_client": self.policy_client,
            "agent": self.agent,
            "asset": self.asset,
            "amount": str(self.amount),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "status": self.status,
            "result": self.result,
        }


MAX_TASKS_READ = 1000
"""The most recorded tasks one ``State.tasks`` call returns."""

REQUEST_COLUMNS = (
    "policy_client, intent_hash, intent, spend, reasons, created_at, expires_at, status, "
    "approver, used_by"
)


CLAIM_GRACE = 300
"""How long past its approval's expiry a task's claim on it is honoured: longer than any task
runs and than operators' clocks may lag. A claim a crashed gateway never settled ends then."""


def finished(p: str) -> str:
    """SQL for a request nothing will change any more: used, or past its expiry (and any
    claim's grace). ``p`` is the driver's placeholder; it takes ``now`` twice."""
    return (
        f"(status = 'used' OR (expires_at <= {p} AND "
        f"(used_by IS NULL OR expires_at + {CLAIM_GRACE} <= {p})))"
    )


@dataclass(frozen=True)
class ApprovalRequest:
    """A parked intent waiting for (or past) a human decision. ``status`` reads as of ``now``."""

    policy_client: str
    intent_hash: str
    intent: dict[str, Any]
    spend: dict[str, Any]
    reasons: list[str]
    created_at: int
    expires_at: int
    status: str
    approver: str | None
    used_by: str | None

    @classmethod
    def from_row(cls, row: tuple[Any, ...], now: int) -> ApprovalRequest:
        status, expires_at, used_by = row[7], row[6], row[9]
        if (
            status in ("pending", "approved")
            and expires_at <= now
            and (used_by is None or expires_at + CLAIM_GRACE <= now)
        ):
            status = "expired"
        return cls(
            policy_client=row[0],
            intent_hash=row[1],
            intent=json.loads(row[2]),
            spend=json.loads(row[3]),
            reasons=json.loads(row[4]),
            created_at=row[5],
            expires_at=row[6],
            status=status,
            approver=row[8],
            used_by=row[9],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "policy_client": self.policy_client,
            "intent_hash": self.intent_hash,
            "intent": self.intent,
            "spend": self.spend,
            "reasons": self.reasons,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "status": self.status,
            "approver": self.approver,
        }


class Pending(enum.Enum):
    """The attestation may still be usable where it is enforced: decide at a later sweep."""

    PENDING = "pending"


PENDING = Pending.PENDING


class UsageCheck(Protocol):
    """Says whether an expired, uncommitted attestation was used (True), not used (False),
    cannot tell (None), or cannot tell *yet* (``PENDING``: the chain's clock has not reached
    the expiry, so it could still be used; the task stays as it is until a later sweep).
    Only ``False`` gives the amount back."""

    def was_used(self, task: TaskRecord) -> bool | Pending | None: ...


@dataclass(frozen=True)
class WindowTotals:
    count: int
    spent: Mapping[str, int]


@dataclass(frozen=True)
class PolicyClientRecord:
    """A registered policy client: its owner-signed registration and the policy code."""

    registration: Registration
    policy: Policy


def policy_material(policy: Policy) -> dict[str, Any]:
    """The wire/storage form of a policy: what operators evaluate and hash."""
    return {
        "name": policy.name,
        "entrypoint": policy.entrypoint,
        "modules": dict(policy.modules),
        "params_schema": dict(policy.params_schema),
        "description": policy.description,
    }


def policy_from_material(material: Mapping[str, Any]) -> Policy:
    modules = material.get("modules")
    entrypoint = material.get("entrypoint")
    if not isinstance(entrypoint, str) or not entrypoint:
        raise ValueError("policy.entrypoint must be a non-empty string like 'package.rule'")
    if (
        not isinstance(modules, dict)
        or not modules
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in modules.items())
    ):
        raise ValueError("policy.modules must map file names to Rego source text")
    if "\0" in entrypoint or any("\0" in source for source in modules.values()):
        raise ValueError(f"policy: {NUL_REFUSED}")
    schema = material.get("params_schema", {})
    if not isinstance(schema, dict):
        raise ValueError("policy.params_schema must be a JSON schema object")
    return Policy(
        name=str(material.get("name", "")),
        entrypoint=entrypoint,
        modules=dict(modules),
        params_schema=schema,
        description=str(material.get("description", "")),
    )


def policy_from_spec(spec: Any, *, allow_paths: bool = False) -> Policy:
    """A bundled policy name, a policy folder (``allow_paths``: config files only), or the
    policy material itself."""
    from agentguard.policies import load

    if isinstance(spec, str):
        if allow_paths and ("/" in spec or spec.startswith(".")):
            return Policy.from_dir(spec)
        try:
            return load(spec)
        except KeyError as exc:
            raise ConfigurationError(str(exc.args[0])) from None
    if isinstance(spec, dict):
        try:
            return policy_from_material(spec)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
    raise ConfigurationError("policy must be a bundled policy name or the policy material object")
