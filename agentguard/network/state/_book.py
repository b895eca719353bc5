"""Running totals per (policy client, agent), in memory: the SQLite backend's books.

Each book mirrors the agent's counted records (loaded lazily from the file) plus the amounts
in flight, so a request costs O(1) amortized however many tasks an agent has.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from agentguard.network.state._model import WindowTotals


class _Entry:
    __slots__ = ("amount", "asset", "book", "created_at", "live", "seq", "task_id")

    def __init__(self, seq: int, task_id: str, created_at: int, asset: str, amount: int) -> None:
        self.seq = seq
        self.task_id = task_id
        self.created_at = created_at
        self.asset = asset
        self.amount = amount
        self.live = True
        self.book: _Book | None = None  # the one book whose sums hold this entry


class _Window:
    __slots__ = ("count", "seconds", "spent", "start")

    def __init__(self, seconds: int, start: int) -> None:
        self.seconds = seconds
        self.start = start  # seq of the oldest entry possibly inside the window
        self.count = 0
        self.spent: dict[str, int] = {}

    def add(self, entry: _Entry) -> None:
        self.count += 1
        self.spent[entry.asset] = self.spent.get(entry.asset, 0) + entry.amount

    def remove(self, entry: _Entry) -> None:
        self.count -= 1
        left = self.spent[entry.asset] - entry.amount
        if left:
            self.spent[entry.asset] = left
        else:
            del self.spent[entry.asset]


class _Book:
    """One agent's live entries (oldest first) and a running sum per window."""

    def __init__(self, windows: Iterable[int]) -> None:
        self.entries: deque[_Entry] = deque()
        self.base = 0  # seq of entries[0]
        self.next_seq = 0
        self.windows = {w: _Window(w, 0) for w in sorted(set(windows))}
        self.last_time = 0

    @property
    def horizon(self) -> int:
        return max(self.windows)

    def add(self, task_id: str, created_at: int, asset: str, amount: int) -> _Entry:
        return self.adopt(_Entry(0, task_id, created_at, asset, amount))

    def adopt(self, entry: _Entry) -> _Entry:
        """Append ``entry`` as the newest (a new one, or an in-flight one from an old book)."""
        entry.created_at = max(entry.created_at, self.last_time)  # clocks may step back
        self.last_time = entry.created_at
        entry.seq = self.next_seq
        entry.book = self
        self.next_seq += 1
        self.entries.append(entry)
        for window in self.windows.values():
            window.add(entry)
        return entry

    def remove(self, entry: _Entry) -> None:
        if not entry.live or entry.book is not self:
            return
        entry.live = False
        for window in self.windows.values():
            if entry.seq >= window.start:
                window.remove(entry)

    def totals(self, now: int) -> dict[int, WindowTotals]:
        entries, base = self.entries, self.base
        for window in self.windows.values():
            cutoff = now - window.seconds
            while window.start < self.next_seq:
                entry = entries[window.start - base]
                if entry.created_at > cutoff:
                    break
                if entry.live:
                    window.remove(entry)
                window.start += 1
        oldest = min(w.start for w in self.windows.values())
        while self.base < oldest:
            entries.popleft()
            self.base += 1
        return {
            w.seconds: WindowTotals(count=w.count, spent=dict(w.spent))
            for w in self.windows.values()
        }


@dataclass
class Reservation:
    """An amount counted as in flight while the operators evaluate. ``holder``: the token a
    shared backend's in-flight row carries, so only this reservation records or cancels it
    (empty: this request holds no row, e.g. a concurrent duplicate of the same task)."""

    key: tuple[str, str]
    entry: _Entry
    history: dict[int, WindowTotals]
    holder: str = ""
