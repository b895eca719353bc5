"""Running totals per (policy client, agent), in memory: the SQLite backend's books.

Each book mirrors the agent's counted records (loaded lazily from the file) plus the amounts
in flight, so a request costs O(1) amortized however many tasks an agent has. Its memory is
flat however many tasks it counts: what it counts is kept in buckets, one per second and
asset (a window drops whole seconds, so a bucket leaves a window at once, as its records
would); only a reservation still in flight is an object of its own (``_Entry``), so it can be
cancelled exactly and carried over to a rebuilt book.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from agentguard.network.state._model import WindowTotals


class _Entry:
    """One reservation: its amount counted in ``bucket`` of ``book`` while ``live``."""

    __slots__ = ("amount", "asset", "book", "bucket", "created_at", "live", "task_id")

    def __init__(self, task_id: str, created_at: int, asset: str, amount: int) -> None:
        self.task_id = task_id
        self.created_at = created_at
        self.asset = asset
        self.amount = amount
        self.live = True
        self.book: _Book | None = None  # the one book whose sums hold this entry
        self.bucket: _Bucket | None = None


class _Bucket:
    """What one book counts of one asset at one second (records and reservations)."""

    __slots__ = ("amount", "asset", "count", "created_at", "seq")

    def __init__(self, seq: int, created_at: int, asset: str) -> None:
        self.seq = seq
        self.created_at = created_at
        self.asset = asset
        self.count = 0
        self.amount = 0


class _Window:
    __slots__ = ("count", "seconds", "spent", "start")

    def __init__(self, seconds: int, start: int) -> None:
        self.seconds = seconds
        self.start = start  # seq of the oldest bucket possibly inside the window
        self.count = 0
        self.spent: dict[str, int] = {}

    def add(self, asset: str, amount: int) -> None:
        self.count += 1
        self.spent[asset] = self.spent.get(asset, 0) + amount

    def remove(self, asset: str, count: int, amount: int) -> None:
        if not count and not amount:
            return  # an emptied bucket
        self.count -= count
        left = self.spent.get(asset, 0) - amount
        if left:
            self.spent[asset] = left
        else:
            self.spent.pop(asset, None)


class _Book:
    """One agent's buckets (oldest first), its reservations in flight, a sum per window."""

    def __init__(self, windows: Iterable[int], floor: int = -(2**63)) -> None:
        self.buckets: deque[_Bucket] = deque()
        # No bucket of a second <= floor is known to hold all of that second's records (one
        # was dropped from ``buckets``, or the book was built without the older rows): a
        # give-back at such a second could only guess, so it gives back nothing (fail closed).
        self.floor = floor
        self.base = 0  # seq of buckets[0]
        self.next_seq = 0
        self.windows = {w: _Window(w, 0) for w in sorted(set(windows))}
        self.last_time = 0
        self.flight: dict[_Entry, None] = {}  # in flight, oldest first (an ordered set)
        self.recent: dict[str, _Bucket] = {}  # this second's bucket per asset

    @property
    def horizon(self) -> int:
        return max(self.windows)

    def add(self, task_id: str, created_at: int, asset: str, amount: int) -> _Entry:
        """A new reservation, counted as the newest."""
        return self.adopt(_Entry(task_id, created_at, asset, amount))

    def adopt(self, entry: _Entry) -> _Entry:
        """Count ``entry`` as in flight and the newest (a new one, or one from an old book)."""
        bucket = self._count(entry.created_at, entry.asset, entry.amount)
        entry.created_at = bucket.created_at  # clocks may step back
        entry.bucket = bucket
        entry.book = self
        self.flight[entry] = None
        return entry

    def load(self, created_at: int, asset: str, amount: int) -> None:
        """A record read from the file, counted as the newest."""
        self._count(created_at, asset, amount)

    def _count(self, created_at: int, asset: str, amount: int) -> _Bucket:
        if created_at > self.last_time:
            self.last_time = created_at
            self.recent.clear()
        created_at = self.last_time  # clocks may step back
        bucket = self.recent.get(asset)
        if bucket is None or any(bucket.seq < w.start for w in self.windows.values()):
            bucket = self.recent[asset] = _Bucket(self.next_seq, created_at, asset)
            self.next_seq += 1
            self.buckets.append(bucket)
        bucket.count += 1
        bucket.amount += amount
        for window in self.windows.values():
            window.add(asset, amount)
        return bucket

    def _uncount(self, bucket: _Bucket, amount: int) -> None:
        bucket.count -= 1
        bucket.amount -= amount
        for window in self.windows.values():
            if bucket.seq >= window.start:
                window.remove(bucket.asset, 1, amount)

    def remove(self, entry: _Entry) -> None:
        """The reservation is not allowed (or its record failed): it no longer counts."""
        if not entry.live or entry.book is not self or entry.bucket is None:
            return
        entry.live = False
        del self.flight[entry]
        self._uncount(entry.bucket, entry.amount)

    def settle(self, entry: _Entry) -> None:
        """The reservation is recorded in the file: it stays counted, no longer in flight."""
        if entry.live and entry.book is self:
            del self.flight[entry]
        entry.live = False  # counted for good: nothing cancels it any more
        entry.bucket = None

    def give_back(self, created_at: int, asset: str, amount: int) -> None:
        """A recorded task (at ``created_at``, as its file row says) no longer counts. The
        oldest bucket of that second and asset is taken: it is in no window the record's own
        bucket is not in (a bucket of a second can be reopened only once the older one left a
        window, when the clock steps back). Never one newer than a dropped bucket (``floor``)."""
        if created_at <= self.floor:  # its bucket is gone; a newer one of that second is not it
            return
        buckets = self.buckets
        i = bisect.bisect_left(buckets, created_at, key=_created_at)
        while i < len(buckets) and buckets[i].created_at == created_at:
            if buckets[i].asset == asset:
                self._uncount(buckets[i], amount)
                return
            i += 1

    def totals(self, now: int) -> dict[int, WindowTotals]:
        buckets, base = self.buckets, self.base
        for window in self.windows.values():
            cutoff = now - window.seconds
            while window.start < self.next_seq:
                bucket = buckets[window.start - base]
                if bucket.created_at > cutoff:
                    break
                window.remove(bucket.asset, bucket.count, bucket.amount)
                window.start += 1
        oldest = min(w.start for w in self.windows.values())
        while self.base < oldest:
            self.floor = max(self.floor, buckets.popleft().created_at)
            self.base += 1
        return {
            w.seconds: WindowTotals(count=w.count, spent=dict(w.spent))
            for w in self.windows.values()
        }


def _created_at(bucket: _Bucket) -> int:
    return bucket.created_at


@dataclass
class Reservation:
    """An amount counted as in flight while the operators evaluate. ``holder``: the token a
    shared backend's in-flight row carries, so only this reservation records or cancels it
    (empty: this request holds no row, e.g. a concurrent duplicate of the same task)."""

    key: tuple[str, str]
    entry: _Entry
    history: dict[int, WindowTotals]
    holder: str = ""
