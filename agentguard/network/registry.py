"""An operator's own record of policy registrations, persisted in one SQLite file.

The operator checks every ``newt_evaluateAndSign`` against a registration it holds for the
policy client, never against what the gateway says the policy is. The gateway delivers
registrations (it cannot forge one: each is signed by the policy client's owner), and the
operator keeps the last ``MAX_VERSIONS`` it accepted across restarts (``versions_after``), so an
older one never becomes the newest again. Which one a task is evaluated under (``choose``): the
newest, except, given a chain RPC (``--chain-rpc``), for a vault, which is evaluated under the
registration whose policy id it pins onchain (``agentguard.network.pins``). Given a chain RPC
it also refuses a contract client's registration that is not signed by the
contract's ``owner()``. The same file keeps which task each human approval was used for
(``claim_approval``): one approval allows one task, also across a restart of the operator.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from agentguard._exceptions import ConfigurationError
from agentguard.network.pins import pinned_index
from agentguard.network.registration import Registration, versions_after

__all__ = ["Registry"]


class Registry:
    def __init__(
        self,
        path: str | Path,
        *,
        check_owner: Callable[[Registration], str | None] | None = None,
        pinned: Callable[[Registration], bytes | None] | None = None,
    ) -> None:
        """``check_owner`` (the chain's word on a vault's ``owner()``, see
        ``ChainUsageCheck.check_owner``) runs before a registration is held; it raises
        ``ConfigurationError`` to refuse it. ``pinned`` (``VaultPins.pinned``) is the policy id
        a vault pins now (``None``: cannot tell)."""
        self._check_owner = check_owner
        self._pinned = pinned
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS registration_versions (policy_client TEXT NOT NULL, "
            "version TEXT NOT NULL, registration TEXT NOT NULL, "
            "PRIMARY KEY (policy_client, version))"
        )
        # a registry written before versions: its one registration per client is the newest
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS registrations "
            "(policy_client TEXT PRIMARY KEY, registration TEXT NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS approvals_used (digest TEXT PRIMARY KEY, "
            "task_id TEXT NOT NULL, keep_until INTEGER NOT NULL)"
        )
        self._held: dict[bytes, list[Registration]] = {}
        rows = self._db.execute(
            "SELECT registration FROM registrations UNION ALL "
            "SELECT registration FROM registration_versions"
        )
        for (raw,) in rows:
            registration = Registration.from_json(json.loads(raw))
            held = self._held.setdefault(registration.policy_client, [])
            if registration not in held:
                held.append(registration)
        for held in self._held.values():
            held.sort(key=lambda r: r.version)
        self._db.execute("DELETE FROM registrations")
        for held in self._held.values():
            self._save(held)

    def get(self, policy_client: bytes) -> Registration | None:
        """The newest registration held for ``policy_client``."""
        held = self._held.get(policy_client)
        return held[-1] if held else None

    def versions(self, policy_client: bytes) -> tuple[Registration, ...]:
        """Every registration held for ``policy_client``, oldest first."""
        return tuple(self._held.get(policy_client, ()))

    def offer(self, registration: Registration) -> Registration:
        """Hold ``registration`` (see ``versions_after``): as the newest only if the owner
        signed it with a higher version; an older version only as history, and only while the
        vault pins its policy id (an operator that missed it, asked to evaluate under it)."""
        held = self._held.get(registration.policy_client, [])
        if registration in held:
            return registration
        chain_owner = self._check_owner(registration) if self._check_owner else None
        older = (
            self._pinned is not None
            and bool(held)
            and registration.version < held[-1].version
            and self._pinned(registration) == registration.policy_id
        )
        kept = versions_after(held, registration, chain_owner=chain_owner, older=older)
        if kept is not None:
            self._save(kept)
            self._held[registration.policy_client] = kept
        return registration

    def choose(self, registration: Registration) -> Registration:
        """The registration a task names, if this operator may evaluate under it: one it holds,
        the one a vault pins when the chain tells (``pinned``), else the newest. Without a
        chain RPC always the newest: then nothing but the newest is ever signed, so a gateway
        replaying an older, looser registration gets nothing, whatever checks the attestation."""
        held = self._held.get(registration.policy_client, [])
        # the owner's signature covers every field: comparing it is comparing the registration
        if not any(h.signature == registration.signature for h in held):
            raise ConfigurationError(
                f"registration: version {registration.version} of "
                f"{registration.policy_client_hex} is not held by this operator"
            )
        pin = self._pinned(registration) if self._pinned is not None else None
        if pin is None:
            if registration.signature != held[-1].signature:
                raise ConfigurationError(
                    f"registration: version {registration.version} of "
                    f"{registration.policy_client_hex} is not newer than the newest held "
                    f"(version {held[-1].version}); an older configuration is used only while "
                    "a vault pins it (and the operator can read the vault: --chain-rpc)"
                )
            return registration
        if registration.policy_id != pin:
            index = pinned_index(held, pin)
            pinned = "none held here" if index is None else f"version {held[index].version}"
            raise ConfigurationError(
                f"registration: vault {registration.policy_client_hex} pins policy id "
                f"0x{pin.hex()} ({pinned}), not 0x{registration.policy_id.hex()}; "
                "this operator signs only under the policy id the vault pins"
            )
        return registration

    def claim_approval(self, digest: bytes, task_id: bytes, keep_until: int, now: float) -> bool:
        """Whether task ``task_id`` may use the approval ``digest``: True for the first task
        that claims it (and that task again), False for any other until ``keep_until``. In the
        file, not in memory: an operator that restarted must not let a gateway that kept the
        approval spend it on a second task."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM approvals_used WHERE keep_until < ?", (int(now),))
            self._db.execute(
                "INSERT OR IGNORE INTO approvals_used (digest, task_id, keep_until) "
                "VALUES (?, ?, ?)",
                (digest.hex(), task_id.hex(), keep_until),
            )
            row = self._db.execute(
                "SELECT task_id FROM approvals_used WHERE digest = ?", (digest.hex(),)
            ).fetchone()
        return bool(row) and row[0] == task_id.hex()

    def _save(self, kept: list[Registration]) -> None:
        client = kept[0].policy_client_hex
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM registration_versions WHERE policy_client = ?", (client,))
            self._db.executemany(
                "INSERT INTO registration_versions (policy_client, version, registration) "
                "VALUES (?, ?, ?)",
                [(client, str(r.version), json.dumps(r.to_json())) for r in kept],
            )

    def close(self) -> None:
        self._db.close()
