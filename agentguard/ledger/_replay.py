"""The used-attestation record in a SQLite file: one claim per task id across every process on
the host that opens the file (a second ``Verifier`` in another process refuses a used one).

``claim`` is one ``INSERT OR IGNORE`` under ``BEGIN IMMEDIATE``: the first process to insert a
task id wins; every later claim, from any process, sees the row. Rows are kept a day past the
attestation's expiry (a verifier's clock a little behind cannot reopen one), or a day past the
claim when that expiry is not a future unix time (a Newton block number), then pruned.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable

from agentguard._exceptions import ConfigurationError, LedgerUnavailable

__all__ = ["SQLiteReplayGuard"]

_INT64_MAX = 2**63 - 1
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS used_attestations "
    "(task_id BLOB PRIMARY KEY, expires_at INTEGER NOT NULL) WITHOUT ROWID"
)


class SQLiteReplayGuard:
    """``ReplayGuard`` on a SQLite file (the ledger's file may hold it: its own table)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        keep: int = 86_400,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = 30.0,
    ) -> None:
        self.path = os.fspath(path)
        self._keep, self._clock, self._busy_timeout = keep, clock, busy_timeout
        self._next_prune = 0.0
        self._open()

    def _open(self) -> None:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigurationError(
                f"cannot open the used-attestation record {self.path!r}: {exc}"
            ) from None
        self._conn, self._pid, self._lock = conn, os.getpid(), threading.Lock()

    def claim(self, task_id: bytes, expires_at: int) -> bool:
        if os.getpid() != self._pid:  # a connection never crosses a fork
            self._open()
        now = self._clock()
        keep_until = min(max(int(expires_at), int(now)) + self._keep, _INT64_MAX)
        with self._lock:
            db = self._conn
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    if now >= self._next_prune:
                        db.execute(
                            "DELETE FROM used_attestations WHERE expires_at < ?", (int(now),)
                        )
                        self._next_prune = now + 60
                    cursor = db.execute(
                        "INSERT OR IGNORE INTO used_attestations VALUES (?, ?)",
                        (bytes(task_id), keep_until),
                    )
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise LedgerUnavailable(
                    f"the used-attestation record {self.path!r} failed ({type(exc).__name__})"
                ) from None
            return cursor.rowcount == 1

    def close(self) -> None:
        with self._lock:
            self._conn.close()
