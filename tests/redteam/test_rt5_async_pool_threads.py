"""One ``AsyncPool`` (``agentguard/_http_client.py``) shared by callers on several threads,
each with its own event loop (an ``AsyncNewtonGateway`` used from ``asyncio.run`` in worker
threads)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import SupportsIndex

from agentguard._http_client import AsyncPool, Origin, TransportError, _AsyncConn


class _Checked(list[_AsyncConn]):
    """The idle list: the caller, about to take the connection it saw waiting, pauses while
    another thread's caller takes it first."""

    def __init__(self, seen: threading.Event, taken: threading.Event) -> None:
        super().__init__()
        self._seen, self._taken = seen, taken

    def pop(self, index: SupportsIndex = -1) -> _AsyncConn:
        if not self._seen.is_set():
            self._seen.set()
            assert self._taken.wait(10)
        return super().pop(index)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_threads_taking_the_last_idle_connection_get_typed_errors() -> None:
    """Attack (a race between two threads sharing the pool): both see one idle connection;
    the other thread takes it first. Before the fix this caller then popped an empty list and
    an ``IndexError`` escaped the transport (no ``TransportError``, so no typed gateway error
    and no retry decision). Now it opens a connection of its own (here: refused, which is a
    ``TransportError`` marked never sent)."""
    origin = Origin(f"http://127.0.0.1:{_closed_port()}/rpc", {})
    pool = AsyncPool(origin, connect_timeout=2.0)
    seen, taken = threading.Event(), threading.Event()
    idle = _Checked(seen, taken)
    idle.append(_AsyncConn(asyncio.new_event_loop()))
    pool._idle = idle
    failures: list[BaseException] = []

    def caller() -> None:
        try:
            asyncio.run(pool._acquire(time.monotonic() + 5))
        except BaseException as exc:  # what escapes is the point of the test
            failures.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    assert seen.wait(10)
    list.pop(idle)  # the other thread's caller takes the last idle connection
    taken.set()
    thread.join(10)
    assert len(failures) == 1
    assert isinstance(failures[0], TransportError), repr(failures[0])
    assert failures[0].sent is False
