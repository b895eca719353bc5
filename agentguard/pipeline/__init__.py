"""The one guarded pipeline every entry point that can lead to a signature goes through.

``guarded(action)`` is the sequence as typed steps (no I/O); ``Runner`` / ``AsyncRunner``
perform them against a ``Guard``, a ``Ledger``, an audit sink and the entry point's ``Port``
(prepare, sign, send, confirm). The wallet, ``X402Auth`` and the official x402 hook are ports;
so is anything new (decorators, LangChain tools): supply the intent and the port, nothing else.
"""

from agentguard.pipeline._bookkeeping import aflush, flush
from agentguard.pipeline._flow import DEFAULT_HOLD_SECONDS, Action, InFlight, guarded, settle
from agentguard.pipeline._outcomes import (
    Landed,
    NeverLanded,
    Outcome,
    Prepared,
    Reverted,
    Sent,
    Settled,
    Signed,
    StillCounted,
)
from agentguard.pipeline._runner import LATER, AsyncPort, AsyncRunner, AuditSink, Port, Runner
from agentguard.pipeline._steps import (
    Abandon,
    Audit,
    Authorize,
    AwaitApproval,
    Bind,
    Commit,
    Confirm,
    Flow,
    GatewayCommit,
    GatewayRelease,
    MarkSigned,
    Prepare,
    Release,
    Reserve,
    Send,
    Sign,
    Step,
)

__all__ = [
    "DEFAULT_HOLD_SECONDS",
    "LATER",
    "Abandon",
    "Action",
    "AsyncPort",
    "AsyncRunner",
    "Audit",
    "AuditSink",
    "Authorize",
    "AwaitApproval",
    "Bind",
    "Commit",
    "Confirm",
    "Flow",
    "GatewayCommit",
    "GatewayRelease",
    "InFlight",
    "Landed",
    "MarkSigned",
    "NeverLanded",
    "Outcome",
    "Port",
    "Prepare",
    "Prepared",
    "Release",
    "Reserve",
    "Reverted",
    "Runner",
    "Send",
    "Sent",
    "Settled",
    "Sign",
    "Signed",
    "Step",
    "StillCounted",
    "aflush",
    "flush",
    "guarded",
    "settle",
]
