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

__all__ = [
    "ChallengeError",
    "NotAChallengeRecord",
    "Recomputed",
    "TaskEvidence",
    "reevaluate",
]
