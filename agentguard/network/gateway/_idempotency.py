"""``newt_createTask`` is idempotent by (API key, JSON-RPC id): a retry gets the first answer.

The cache holds, per key, only what answering a retry needs: the request's fingerprint (a
reused id with a different request is refused) and, for an ``allow``, the task id: the answer
is rebuilt from the durable record (``State.stored_result``, which gives back exactly the dict
that was answered, so the same bytes). An answer the state does not hold (a ``deny``, an
``approval_required``) is kept as the compact JSON bytes that were sent. The cache is bounded
by the bytes it is counted at, not by a count of entries, so its memory is flat once it is
full however many authorizations pass; entries live ``ttl`` seconds; the oldest go first. A
request still in flight is held as a future its concurrent retries wait on. What falls out of
the cache is still deduplicated by the durable task record, only without the check that the
retry is the same request; a deny that fell out (or a restart) is evaluated afresh, as a
request with a new id would be (``docs/architecture.md``, "Idempotency").
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from agentguard.network._rpc import encode
from agentguard.network.gateway._params import invalid

__all__ = ["ENTRY_OVERHEAD", "IdempotencyCache"]

ENTRY_OVERHEAD = 384
"""Bytes counted per entry besides its key and value: the entry tuple, its time, the
fingerprint, the dict slot and node (measured with ``tracemalloc``: see the tests)."""

_Key = tuple[str, str]
# (time, fingerprint, answer bytes | recorded task id | in-flight future, bytes counted)
_Entry = tuple[float, bytes, "bytes | str | asyncio.Future[bytes]", int]


class IdempotencyCache:
    def __init__(
        self,
        *,
        max_bytes: int,
        ttl: float,
        clock: Callable[[], float],
        recorded: Callable[[str], Mapping[str, Any] | None],
    ) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._clock = clock
        self._recorded = recorded  # a recorded task's answer (``State.stored_result``)
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
        value = entry[2]
        if isinstance(value, str):
            stored = self._recorded(value)
            return None if stored is None else encode(stored)
        return value

    def begin(self, key: _Key, fingerprint: bytes) -> asyncio.Future[bytes]:
        """Hold ``key`` as in flight; its retries wait on the returned future."""
        now = self._clock()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._put(key, (now, fingerprint, future, _cost(key, "")))
        self._trim(now)
        return future

    def keep(self, key: _Key, answer: bytes, result: Mapping[str, Any]) -> None:
        """The answer for ``key`` (an in-flight entry), kept for its retries: by its task id
        if it is an ``allow`` (the state holds it durably), else as ``answer``."""
        entry = self._entries.get(key)
        if entry is None:  # pushed out while in flight
            return
        attestation = result.get("attestation")
        value: bytes | str = answer
        if isinstance(attestation, Mapping) and attestation.get("decision") == "allow":
            value = result["task_id"]
        cost = _cost(key, value)
        self._entries[key] = (entry[0], entry[1], value, cost)  # keeps its place in line
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


def _cost(key: _Key, value: bytes | str) -> int:
    return ENTRY_OVERHEAD + len(key[0]) + len(key[1]) + len(value)
