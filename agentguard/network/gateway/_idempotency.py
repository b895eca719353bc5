"""``newt_createTask`` is idempotent by (API key, JSON-RPC id): a retry gets the first answer.

The cache holds each successful answer as the compact JSON bytes that were sent (encoded
once), bounded by the bytes it holds, not by a count of entries: a flood of large answers
cannot grow the gateway's memory past ``max_bytes``, and an hour of small ones is not thrown
away for nothing. Entries live ``ttl`` seconds; the oldest go first. A request still in flight
is held as a future its concurrent retries wait on. What falls out of the cache is still
deduplicated by the durable task record (``State.stored_result``), only without the check
that the retry is the same request.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

from agentguard.network.gateway._params import invalid

__all__ = ["ENTRY_OVERHEAD", "IdempotencyCache"]

ENTRY_OVERHEAD = 256
"""Bytes counted per entry besides its answer: key strings, fingerprint, tuple, dict slot."""

_Key = tuple[str, str]
_Entry = tuple[float, bytes, "bytes | asyncio.Future[bytes]", int]


class IdempotencyCache:
    def __init__(self, *, max_bytes: int, ttl: float, clock: Callable[[], float]) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        self.bytes = 0  # what the entries are counted at, in total

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: _Key, fingerprint: bytes) -> bytes | asyncio.Future[bytes] | None:
        """The first answer (or the future of it) for ``key``; ``RPCError`` if ``key`` was
        used for a different request."""
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._clock() - self.ttl:
            return None
        if entry[1] != fingerprint:
            raise invalid(
                f"JSON-RPC id {key[1]} was already used for a different request; "
                "use a fresh UUID per task"
            )
        return entry[2]

    def begin(self, key: _Key, fingerprint: bytes) -> asyncio.Future[bytes]:
        """Hold ``key`` as in flight; its retries wait on the returned future."""
        now = self._clock()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._put(key, (now, fingerprint, future, _cost(key, b"")))
        self._trim(now)
        return future

    def keep(self, key: _Key, answer: bytes) -> None:
        """The answer for ``key`` (an in-flight entry), kept for its retries."""
        entry = self._entries.get(key)
        if entry is None:  # pushed out while in flight
            return
        cost = _cost(key, answer)
        self._entries[key] = (entry[0], entry[1], answer, cost)  # keeps its place in line
        self.bytes += cost - entry[3]
        self._trim(self._clock())

    def drop(self, key: _Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[3]

    def _put(self, key: _Key, entry: _Entry) -> None:
        self.drop(key)
        self._entries[key] = entry
        self.bytes += entry[3]

    def _trim(self, now: float) -> None:
        entries = self._entries
        while entries:
            oldest = next(iter(entries.values()))
            if self.bytes <= self.max_bytes and oldest[0] > now - self.ttl:
                return
            self.bytes -= entries.popitem(last=False)[1][3]


def _cost(key: _Key, answer: bytes) -> int:
    return ENTRY_OVERHEAD + len(key[0]) + len(key[1]) + len(answer)
