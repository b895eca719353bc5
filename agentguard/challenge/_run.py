"""One challenge run: each piece of evidence re-evaluated and compared with what its
signatures sign; a discrepancy becomes a record, anything that cannot be checked is reported
and blames no one. A task that cannot be judged now (``ChallengeRetry``: its policy's probe
ran out of time, or no child could start) does not stop the run: every later task is still
checked, and the cursor stays before the first such task, for the next run to start from
(stopping there let a policy that hangs the probe, listed first, keep every later task of the
source, frauds too, from ever being checked by ``run``)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agentguard._attestation import Attestation
from agentguard._exceptions import AgentGuardError, ChallengeError, ChallengeRetry
from agentguard._intent import TransactionIntent
from agentguard.challenge._evaluate import Recomputed, reevaluate
from agentguard.challenge._evidence import SignedBy, TaskEvidence, signed_values
from agentguard.challenge._record import build_record, verify_record, write_record
from agentguard.challenge._sources import Item, Materials, Skipped
from agentguard.policies._engine import PolicyEngine

__all__ = ["Finding", "Report", "check_evidence", "run"]


@dataclass(frozen=True)
class Finding:
    """One task that is a discrepancy (``record`` set) or cannot be checked (``why``)."""

    task_id: str
    cursor: int
    why: str = ""
    wrong_signers: tuple[str, ...] = ()
    signed: str = ""
    recomputed: Recomputed | None = None
    record: dict[str, Any] | None = None
    path: Path | None = None
    offline: bool = False  # the record proves it alone (see ``verify_record``)


@dataclass
class Report:
    checked: int = 0
    discrepancies: list[Finding] = field(default_factory=list)
    unverifiable: list[Finding] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    approvals_unchecked: int = 0
    cursor: int = 0
    not_judged: list[Finding] = field(default_factory=list)  # to check again (ChallengeRetry)

    @property
    def records(self) -> list[Path]:
        return [f.path for f in self.discrepancies if f.path is not None]


def check_evidence(
    evidence: TaskEvidence,
    materials: Materials,
    *,
    cursor: int = 0,
    operators: Collection[str] | None = None,
    engine: PolicyEngine | None = None,
) -> Finding | None:
    """None if the operators signed what the policy gives; a ``Finding`` otherwise."""
    task_id = evidence.task_id[:80]
    try:
        attestation = Attestation.from_json(evidence.attestation)
        intent = TransactionIntent.from_wire(evidence.intent)
    except AgentGuardError as exc:
        return Finding(task_id, cursor, why=f"unreadable evidence: {exc.message}")
    if "0x" + attestation.task_id.hex() != evidence.task_id.lower():
        return Finding(task_id, cursor, why="the attestation is for another task")
    policy_id = "0x" + attestation.policy_id.hex()
    found = materials.get(policy_id)
    if found is None:
        return Finding(task_id, cursor, why=f"no registration known for policy id {policy_id}")
    registration, policy = found
    signed = [s for s in signed_values(attestation, intent, operators) if s.allow is not None]
    if not signed:
        return Finding(
            task_id, cursor, why="no signature recovers to a known operator for this task"
        )
    try:
        recomputed = reevaluate(evidence, registration, policy, engine=engine)
    except ChallengeError as exc:
        return Finding(task_id, cursor, why=exc.message)
    # the tier is signed; a record without the field reads as tier 0, so its absence never
    # excuses a tier other than the policy's
    wrong_tier = recomputed.tier is not None and attestation.tier != recomputed.tier
    wrong = [s for s in signed if s.allow != recomputed.allowed or wrong_tier]
    if not wrong:
        return None
    allow = bool(wrong[0].allow)
    wrong = [s for s in wrong if s.allow == allow]  # one record: one signed value
    record = build_record(
        _as_signed(evidence, attestation, wrong),
        registration,
        policy,
        recomputed,
        kind="decision",
        wrong_signers=[s.operator for s in wrong],
    )
    return Finding(
        task_id,
        cursor,
        wrong_signers=tuple(sorted(s.operator for s in wrong)),
        signed="allow" if allow else "deny",
        recomputed=recomputed,
        record=record,
        offline=verify_record(record).proven,
    )


def _as_signed(
    evidence: TaskEvidence, attestation: Attestation, wrong: list[SignedBy]
) -> TaskEvidence:
    """The evidence with its attestation as the wrong signers signed it: only their
    signatures, and the decision they sign (a gateway may report another decision, or mix
    in other signatures; neither may make the record unprovable)."""
    keep = {s.operator for s in wrong}
    allow = bool(wrong[0].allow)  # every one of ``wrong`` signed this
    decision = (
        attestation.decision if attestation.allowed == allow else ("allow" if allow else "deny")
    )
    doc = dict(evidence.attestation)
    doc["decision"] = decision
    doc["signatures"] = [
        sig for sig in attestation.to_json()["signatures"] if sig["operator"].lower() in keep
    ]
    return replace(evidence, attestation=doc)


def run(
    items: Iterable[Item],
    materials: Materials,
    *,
    operators: Collection[str] | None = None,
    out: Path | None = None,
    engine: PolicyEngine | None = None,
    after: int = 0,
) -> Report:
    """Check every item; write each discrepancy's record into ``out`` (if given)."""
    report = Report(cursor=after)
    engine = engine if engine is not None else PolicyEngine()
    held: int | None = None  # the cursor before the first task not judged
    for cursor, item in items:
        before, report.cursor = report.cursor, max(report.cursor, cursor)
        if isinstance(item, Skipped):
            report.skipped.append(item)
            continue
        report.checked += 1
        if item.wasm.get("approved") is True and item.approval is None:
            report.approvals_unchecked += 1
        try:
            finding = check_evidence(
                item, materials, cursor=cursor, operators=operators, engine=engine
            )
        except ChallengeRetry as exc:
            report.not_judged.append(Finding(item.task_id[:80], cursor, why=exc.message))
            held = before if held is None else held
            continue
        if finding is None:
            continue
        if finding.record is None:
            report.unverifiable.append(finding)
            continue
        if out is not None:
            finding = replace(finding, path=write_record(finding.record, out))
        report.discrepancies.append(finding)
    if held is not None:
        report.cursor = held
    return report
