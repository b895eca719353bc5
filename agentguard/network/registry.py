"""An operator's own record of policy registrations, persisted in one SQLite file.

The operator checks every ``newt_evaluateAndSign`` against the registration it holds for the
policy client, never against what the gateway says the policy is. The gateway delivers
registrations (it cannot forge one: each is signed by the policy client's owner), and the
operator keeps the newest it accepted across restarts, so an older one cannot be replayed.
Given a chain RPC (``--chain-rpc``), it also refuses a contract client's registration that is
not signed by the contract's ``owner()``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from agentguard.network.registration import Registration

__all__ = ["Registry"]


class Registry:
    def __init__(
        self,
        path: str | Path,
        *,
        check_owner: Callable[[Registration], str | None] | None = None,
    ) -> None:
        """``check_owner`` (the chain's word on a vault's ``owner()``, see
        ``ChainUsageCheck.check_owner``) runs before a registration is held; it raises
        ``ConfigurationError`` to refuse it."""
        self._check_owner = check_owner
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS registrations "
            "(policy_client TEXT PRIMARY KEY, registration TEXT NOT NULL)"
        )
        self._held: dict[bytes, Registration] = {}
        for (raw,) in self._db.execute("SELECT registration FROM registrations"):
            registration = Registration.from_json(json.loads(raw))
            self._held[registration.policy_client] = registration

    def get(self, policy_client: bytes) -> Registration | None:
        return self._held.get(policy_client)

    def offer(self, registration: Registration) -> Registration:
        """Hold ``registration`` if it replaces the one held (see ``Registration.replaces``)."""
        held = self._held.get(registration.policy_client)
        if held is not None and held.digest() == registration.digest():
            return held
        chain_owner = self._check_owner(registration) if self._check_owner else None
        if not registration.replaces(held, chain_owner=chain_owner):
            return held or registration
        self._db.execute(
            "INSERT OR REPLACE INTO registrations (policy_client, registration) VALUES (?, ?)",
            (registration.policy_client_hex, json.dumps(registration.to_json())),
        )
        self._held[registration.policy_client] = registration
        return registration

    def close(self) -> None:
        self._db.close()
