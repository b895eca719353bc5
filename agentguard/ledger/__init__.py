"""One spend budget for everything an agent pays: onchain transfers and calls, and x402 payments.

Per agent and asset, caps per transaction and per rolling window, plus a count per window; a
spend is reserved before it is signed and committed or released after, atomically across
threads and processes (see ``_ledger.py`` for the lifecycle and crash rules). ``open_ledger(url)``
puts it in a SQLite file, Redis or PostgreSQL (``_url.py``) for many processes and hosts.
"""

from agentguard.ledger._backend import LedgerBackend, ReserveRequest, Usage
from agentguard.ledger._ledger import (
    AsyncLedger,
    Ledger,
    RecoveryReport,
    Resolver,
    Spent,
    Verdict,
)
from agentguard.ledger._limits import Limits, RateCap, WindowCap
from agentguard.ledger._reservation import Reservation, State
from agentguard.ledger._sqlite import SQLiteBackend
from agentguard.ledger._url import open_ledger, open_replay_guard

__all__ = [
    "AsyncLedger",
    "Ledger",
    "LedgerBackend",
    "Limits",
    "RateCap",
    "RecoveryReport",
    "Reservation",
    "ReserveRequest",
    "Resolver",
    "SQLiteBackend",
    "Spent",
    "State",
    "Usage",
    "Verdict",
    "WindowCap",
    "open_ledger",
    "open_replay_guard",
]
