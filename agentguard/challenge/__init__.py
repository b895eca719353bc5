"""The challenger: re-evaluate attested decisions independently and prove a wrong one.

Anyone holding the evidence of a task (the reference network's records, or an agent's audit
log) and the policy material behind its policy id can evaluate the policy again, exactly as an
operator does, and compare with what the operators signed. A difference becomes a
self-contained challenge record (``agentguard.challenge/1``) that ``verify_record`` (and
``agentguard challenge verify``) re-checks with nothing else. See ``docs/challenger.md``.
"""

from __future__ import annotations

from agentguard._exceptions import ChallengeError, NotAChallengeRecord
from agentguard.challenge._evaluate import Recomputed, reevaluate
from agentguard.challenge._evidence import TaskEvidence
from agentguard.challenge._history import Quorum  # importing it registers ``history`` records
from agentguard.challenge._record import (
    RECORD_FORMAT,
    RecordCheck,
    build_record,
    load_record,
    register_kind,
    verify_record,
)
from agentguard.challenge._run import Finding, Report, check_evidence, run
from agentguard.challenge._sources import (
    AuditSource,
    GatewaySource,
    Materials,
    PolicyDir,
    StateSource,
)
from agentguard.challenge._watch import Watcher

__all__ = [
    "RECORD_FORMAT",
    "AuditSource",
    "ChallengeError",
    "Finding",
    "GatewaySource",
    "Materials",
    "NotAChallengeRecord",
    "PolicyDir",
    "Quorum",
    "Recomputed",
    "RecordCheck",
    "Report",
    "StateSource",
    "TaskEvidence",
    "Watcher",
    "build_record",
    "check_evidence",
    "load_record",
    "reevaluate",
    "register_kind",
    "run",
    "verify_record",
]
