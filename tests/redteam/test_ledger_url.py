"""Red-team: ledger URLs that silently select a per-process, in-memory budget.

``sqlite://`` is documented as in-memory. ``sqlite:///`` (an empty path: what
``sqlite:///$LEDGER_FILE`` becomes when the variable is unset) and ``sqlite:///:memory:`` are not
documented, yet ``open_ledger`` gives each process its own empty budget and
``open_replay_guard`` a ``MemoryReplayGuard``: N replicas spend N budgets and each accepts every
attestation once, without a word.
"""

from __future__ import annotations

import pytest

from agentguard._exceptions import ConfigurationError
from agentguard.ledger import open_ledger, open_replay_guard


@pytest.mark.parametrize("url", ["sqlite:///", "sqlite:///:memory:"])
def test_an_empty_or_memory_sqlite_path_is_refused(url: str) -> None:
    """Before a fix both open an in-memory ledger (each process its own budget)."""
    with pytest.raises(ConfigurationError):
        open_ledger(url).close()
    with pytest.raises(ConfigurationError):
        open_replay_guard(url)
