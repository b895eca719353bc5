"""Every ledger test that takes ``ledger_url`` / ``open_shared`` runs on SQLite, Redis and
PostgreSQL: real servers on 127.0.0.1, started once per session (``servers.py``) and stopped
by PID at its end, unless ``AGENTGUARD_TEST_REDIS_URL`` / ``AGENTGUARD_TEST_POSTGRES_URL``
name running ones. A server that cannot start skips its tests with the reason, and the run's
summary lists them (never silently)."""

from __future__ import annotations

import atexit
import os
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from agentguard.ledger import Ledger, open_ledger
from tests.ledger.servers import Server, ServerUnavailable, start_postgres, start_redis

BACKENDS = ["sqlite", "redis", "postgres"]
_ENV = {"redis": "AGENTGUARD_TEST_REDIS_URL", "postgres": "AGENTGUARD_TEST_POSTGRES_URL"}
# the session's PostgreSQL skips fsync (servers.py says why nothing a test proves changes)
_STARTERS: dict[str, Callable[[], Server]] = {
    "redis": start_redis,
    "postgres": partial(start_postgres, durable=False),
}
_servers: dict[str, Server | str] = {}  # a running server, or why it could not start
_skipped: dict[str, list[str]] = {}


def server(kind: str) -> Server | None:
    """The session's server of ``kind`` (None: an external one named by the environment)."""
    if kind not in _servers:
        try:
            started = _servers[kind] = _STARTERS[kind]()
            atexit.register(started.close)  # also if the session ends without its finish hook
        except ServerUnavailable as exc:
            _servers[kind] = str(exc)
    found = _servers[kind]
    if isinstance(found, str):
        raise ServerUnavailable(found)
    return found


def base_url(kind: str, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return ""
    if os.environ.get(_ENV[kind]):
        return os.environ[_ENV[kind]]
    try:
        found = server(kind)
    except ServerUnavailable as exc:
        _skipped.setdefault(f"{kind}: {exc}", []).append(request.node.nodeid)
        pytest.skip(f"no {kind} server on this machine: {exc}")
    assert found is not None
    return found.url


def fresh_url(kind: str, base: str, tmp_path: Path) -> str:
    """A URL no other test uses: its own SQLite file, Redis key prefix or PostgreSQL schema."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/ledger-{uuid.uuid4().hex[:8]}.db"
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}namespace=t{uuid.uuid4().hex[:16]}"


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def ledger_url(backend_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty ledger's URL on each backend in turn."""
    return fresh_url(backend_kind, base_url(backend_kind, request), tmp_path)


@pytest.fixture
def open_shared(ledger_url: str) -> Iterator[Callable[..., Ledger]]:
    """Opens (another handle on) the test's ledger; every handle is closed after the test."""
    opened: list[Ledger] = []

    def make(**kw: Any) -> Ledger:
        ledger = open_ledger(ledger_url, create=True, **kw)
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        ledger.close()


def pytest_sessionfinish(session: pytest.Session) -> None:
    for found in _servers.values():
        if not isinstance(found, str):
            found.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _skipped:
        return
    terminalreporter.section("ledger backends that could not start")
    for reason, tests in _skipped.items():
        terminalreporter.write_line(f"{reason}; skipped {len(tests)} test(s):")
        for test in tests:
            terminalreporter.write_line(f"    {test}")
