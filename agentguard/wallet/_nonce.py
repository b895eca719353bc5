"""Nonces that survive concurrent sends: one lock from allocation to broadcast.

The chain's pending count is read once and then tracked locally; any failed broadcast drops
the local view so the next send re-reads the chain instead of leaving a gap.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["NonceManager"]


class NonceManager:
    def __init__(self, chain_pending_count: Callable[[], int]) -> None:
        self._read = chain_pending_count
        self._next: int | None = None
        self._lock = threading.Lock()

    @contextmanager
    def reserve(self) -> Iterator[int]:
        """Holds the lock; the nonce is consumed only if the body returns normally."""
        with self._lock:
            if self._next is None:
                self._next = self._read()
            nonce = self._next
            try:
                yield nonce
            except BaseException:
                self._next = None
                raise
            self._next = nonce + 1
