"""The challenger: re-evaluate attested decisions independently and prove a wrong one.

Anyone holding the evidence of a task (the reference network's records, or an agent's audit
log) and the policy material behind its policy id can evaluate the policy again, exactly as an
operator does, and compare with what the operators signed. A difference becomes a
self-contained challenge record (``agentguard.challenge/1``) that ``verify_record`` (and
``agentguard challenge verify``) re-checks with nothing else. See ``docs/challenger.md``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from agentguard._exceptions import ChallengeError, ChallengeRetry, NotAChallengeRecord

# Loaded on first use: the CLI registers ``agentguard challenge`` without the network extra
# (regopy) being installed; using the challenger needs it.
_LAZY = {
    "Recomputed": "_evaluate",
    "reevaluate": "_evaluate",
    "TaskEvidence": "_evidence",
    "RECORD_FORMAT": "_record",
    "RecordCheck": "_record",
    "build_record": "_record",
    "load_record": "_record",
    "register_kind": "_record",
    "verify_record": "_record",
    "Finding": "_run",
    "Report": "_run",
    "check_evidence": "_run",
    "run": "_run",
    "AuditSource": "_sources",
    "GatewaySource": "_sources",
    "Materials": "_sources",
    "PolicyDir": "_sources",
    "StateSource": "_sources",
    "Quorum": "_history",
    "Watcher": "_watch",
}

if TYPE_CHECKING:
    from agentguard.challenge._evaluate import Recomputed, reevaluate
    from agentguard.challenge._evidence import TaskEvidence
    from agentguard.challenge._history import Quorum
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
    "ChallengeRetry",
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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agentguard.challenge' has no attribute {name!r}")
    from agentguard._extras import require

    require("network", needed_by="agentguard.challenge")
    return getattr(import_module(f"agentguard.challenge.{module}"), name)
