"""Nonces that survive concurrent sends: one lock from allocation to broadcast.

The pipeline prepares (allocates), signs, records and sends in separate steps, so the lock is
held by a ``Lease`` across them and released by exactly one ``done`` (or, if an interrupt lost
the lease before anyone could call it, when the lease is dropped). The chain's pending count
is read once and then tracked locally; a lease that did not end in a clean broadcast drops the
local view, so the next send re-reads the chain instead of leaving a gap or reusing a nonce the
node may already hold.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

__all__ = ["Lease", "NonceManager"]


class Lease:
    """One allocated nonce; the manager stays locked until ``done`` is called once."""

    __slots__ = ("_manager", "_open", "nonce")

    def __init__(self, manager: NonceManager, nonce: int) -> None:
        self._manager, self.nonce, self._open = manager, nonce, True

    def done(self, *, broadcast: bool) -> None:
        """``broadcast``: the node accepted it, so the next nonce is this one + 1."""
        if not self._open:
            return
        self._open = False
        self._manager._finish(self.nonce + 1 if broadcast else None)

    def __del__(self) -> None:
        # Dropped without ``done``: an interrupt (Ctrl-C, a cancellation) landed between the
        # allocation and the runner taking note of it. Nothing was broadcast under it that the
        # node confirmed, so give the lock back rather than stall every later send forever.
        if getattr(self, "_open", False):
            self.done(broadcast=False)


class NonceManager:
    def __init__(self, chain_pending_count: Callable[[], int]) -> None:
        self._read = chain_pending_count
        self._next: int | None = None
        self._lock = threading.Lock()

    def acquire(self) -> Lease:
        self._lock.acquire()
        return self._leased()

    async def acquire_async(self) -> Lease:
        """Waits without holding a worker thread: a waiter parked in a thread could starve the
        lease holder's own steps of threads (the default executor is small)."""
        while not self._lock.acquire(blocking=False):
            await asyncio.sleep(0.005)
        try:  # cancelled while reading the chain: the lock is given back
            if self._next is None:
                self._next = await asyncio.to_thread(self._read)
            return Lease(self, self._next)
        except BaseException:
            self._lock.release()
            raise

    def _leased(self) -> Lease:
        try:
            if self._next is None:
                self._next = self._read()
            return Lease(self, self._next)
        except BaseException:
            self._lock.release()
            raise

    def _finish(self, next_nonce: int | None) -> None:
        self._next = next_nonce
        self._lock.release()
