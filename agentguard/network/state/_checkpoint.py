"""WAL checkpoints for the SQLite state, on a thread of their own instead of the event loop.

SQLite's automatic checkpoint runs inside the commit that crosses 1,000 WAL pages: that one
commit copies every page back into the database file and syncs both files, which took 2 to
40 ms on the benchmark machine (a record writes about six pages, so one commit in ~170), while
the gateway's single event loop, and every request on it, waited. Here the gateway's
connection never checkpoints itself (``wal_autocheckpoint=0``); a thread with its own
connection runs ``PRAGMA wal_checkpoint(PASSIVE)`` once ``RECORDS`` records were committed,
and every ``INTERVAL`` seconds (for the state's other writes; with nothing new it costs next
to nothing). A passive checkpoint takes no lock a writer needs, and the sqlite3 module lets go
of the GIL while it runs, so the loop keeps answering. The next write after a complete
checkpoint starts the WAL over, as before. Durability is unchanged: a record is durable once
its commit is in the WAL (``synchronous=NORMAL``), wherever the checkpoint happens.
"""

from __future__ import annotations

import sqlite3
import threading

from agentguard._logging import get_logger

__all__ = ["INTERVAL", "RECORDS", "Checkpointer"]

log = get_logger("agentguard.network.state")

RECORDS = 128
"""Records committed before a checkpoint is asked for (~800 pages, SQLite's own pace)."""
INTERVAL = 1.0
"""Seconds between two checkpoints when fewer than ``RECORDS`` records come."""


class Checkpointer:
    """Checkpoints ``path``'s WAL on a daemon thread; ``note`` counts committed records."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._pending = 0  # records committed since the last checkpoint was asked for
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(
            target=self._run, name="agentguard-state-checkpoint", daemon=True
        )
        self._thread.start()

    def note(self, records: int) -> bool:
        """``records`` more are committed (called on the loop: a counter and, at most once per
        ``RECORDS``, an event set); False once the thread has stopped checkpointing, so the
        caller can hand checkpoints back to SQLite."""
        if not self._thread.is_alive():
            return False
        self._pending += records
        if self._pending >= RECORDS:
            self._pending = 0
            self._wake.set()
        return True

    def stop(self) -> None:
        """Let the thread end (after a checkpoint under way), without waiting for it."""
        self._stop = True
        self._wake.set()

    def close(self) -> None:
        """Stop the thread and wait for it; SQLite checkpoints at the last connection's close
        anyway."""
        self.stop()
        self._thread.join()

    def _run(self) -> None:
        db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
            while True:
                self._wake.wait(INTERVAL)
                self._wake.clear()
                if self._stop:
                    return
                db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # ``note`` says so: SQLite checkpoints again by itself
            log.warning("state checkpoints stopped", error=str(exc))
        finally:
            if db is not None:
                db.close()
