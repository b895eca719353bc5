"""WAL checkpoints for the SQLite state, on a thread of their own instead of the event loop.

SQLite's automatic checkpoint runs inside the commit that crosses 1,000 WAL pages: that one
commit copies every page back into the database file and syncs both files, which took 2 to
40 ms on the benchmark machine (a record writes about six pages, so one commit in ~170), while
the gateway's single event loop, and every request on it, waited. Here the gateway's
connection never checkpoints itself (``wal_autocheckpoint=0``); a thread with its own
connection runs ``PRAGMA wal_checkpoint(PASSIVE)`` once ``RECORDS`` records were committed,
and every ``INTERVAL`` seconds (for the state's other writes; with nothing new it costs next
to nothing). A passive checkpoint takes no lock a writer needs, and the sqlite3 module lets go
of the GIL while it runs, so the loop keeps answering. Durability is unchanged: a record is
durable once its commit is in the WAL (``synchronous=NORMAL``), wherever the checkpoint happens.

The WAL starts over only at a write that finds every page of it copied. SQLite's own
checkpoint ran inside the writer, so the next write always did; here, under steady load, a
commit lands while the thread copies, no write ever does, and the WAL grew by every record
for as long as the load lasted (a host keeping the gateway busy filled the disk: 80 MB in
10 s at ~900 records/s). So once it holds more than ``WAL_LIMIT`` pages, the thread also asks
for a ``RESTART`` checkpoint: it holds the write lock while it copies the few pages committed
since its passive one, so the next write starts the WAL over (the file keeps its size, as
with SQLite's own); it never waits (no busy handler): a writer or reader in the way makes it
give up until the next round. (``TRUNCATE`` also empties the file, but held the lock two to
three times longer.)
"""

from __future__ import annotations

import sqlite3
import threading

from agentguard._logging import get_logger

__all__ = ["INTERVAL", "RECORDS", "WAL_LIMIT", "Checkpointer"]

log = get_logger("agentguard.network.state")

RECORDS = 128
"""Records committed before a checkpoint is asked for (~800 pages, SQLite's own pace)."""
INTERVAL = 1.0
"""Seconds between two checkpoints when fewer than ``RECORDS`` records come."""
WAL_LIMIT = 8000
"""WAL pages (~32 MB) past which the WAL is made to start over (SQLite's own checkpoints
kept it near 1,000: a forced start holds the write lock, so it should be rare)."""


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
                _, pages, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if pages > WAL_LIMIT:
                    db.execute("PRAGMA busy_timeout=0")  # never holds the write lock waiting
                    db.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                    db.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:  # ``note`` says so: SQLite checkpoints again by itself
            log.warning("state checkpoints stopped", error=str(exc))
        finally:
            if db is not None:
                db.close()
