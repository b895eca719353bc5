"""What a ``Guard`` hands its entry points when a call does not name it: the agent's signer,
chain, ledger, limits and audit log, set once (``Guard.connect(...)``, ``Guard.from_env()``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from web3 import Web3

    from agentguard._signer import Signer
    from agentguard.budget import Budget
    from agentguard.ledger import Ledger, Limits
    from agentguard.pipeline import AuditSink

__all__ = ["Defaults"]


@dataclass(frozen=True, slots=True)
class Defaults:
    """Everything optional; an entry point that needs a missing one raises ConfigurationError."""

    signer: Signer | None = None
    web3: Web3 | None = None
    ledger: Ledger | None = None
    limits: Limits | None = None
    audit: AuditSink | None = None
    vault: str | None = None
    chain_id: int = 8453
    budget: Budget | None = None
    """The ``Budget`` the limits came from, if any (its ``describe()`` is for people)."""

    @property
    def agent(self) -> str | None:
        """Whose budget it is: the vault if there is one, else the signer's address."""
        if self.vault is not None:
            return self.vault
        return None if self.signer is None else self.signer.address
