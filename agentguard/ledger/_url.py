"""Choose where the ledger and the used-attestation record live, by URL.

    open_ledger("sqlite:////var/lib/agent/spend.db")   # one host: a SQLite file (or a bare path)
    open_ledger("redis://127.0.0.1:6379/0")            # many hosts: Redis (appendfsync always!)
    open_ledger("redis://127.0.0.1:6379/0", create=True)  # ...made once, in the setup step
    open_ledger("postgresql://agent@db.internal/agentguard")

``open_replay_guard`` takes the same URLs, so every ``Verifier`` of a fleet can share one record
of used attestations. ``?namespace=NAME`` (a lowercase identifier) keeps several ledgers apart in
one server: a Redis key prefix, a PostgreSQL schema. A URL's password is registered as a secret
(masked in every log line) and never appears in an error.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from agentguard._exceptions import ConfigurationError
from agentguard._verifier import MemoryReplayGuard, ReplayGuard
from agentguard.ledger._backend import LedgerBackend
from agentguard.ledger._ledger import Ledger

__all__ = ["open_ledger", "open_replay_guard"]

Kind = Literal["sqlite", "redis", "postgres"]
_DEFAULT = "agentguard"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")
_SCHEMES: dict[str, Kind] = {
    "sqlite": "sqlite",
    "redis": "redis",
    "rediss": "redis",
    "postgresql": "postgres",
    "postgres": "postgres",
}


def _parse(url: object) -> tuple[Kind, str, str]:
    """(kind, what the driver gets, namespace). A bare path is a SQLite file."""
    if not isinstance(url, str) or not url or "\x00" in url:
        raise ConfigurationError("a ledger URL must be a non-empty string")
    if "://" not in url:
        if _SCHEME.match(url):  # "redis:host", "sqlite:x.db": a mistyped URL, not a file name
            raise ConfigurationError("a ledger URL is SCHEME://…; did you mean sqlite:///PATH?")
        return "sqlite", url, _DEFAULT
    scheme = url.split("://", 1)[0].lower()
    kind = _SCHEMES.get(scheme)
    if kind is None:
        raise ConfigurationError(
            f"unknown ledger URL scheme {scheme[:20]!r}: use sqlite:///PATH, redis://HOST:PORT/DB "
            "or postgresql://USER@HOST/DB"
        )
    if kind == "sqlite":
        # SQLAlchemy's form: sqlite:///relative.db, sqlite:////absolute.db, sqlite:// = memory
        path = url.split("://", 1)[1]
        if path and not path.startswith("/"):
            raise ConfigurationError("a SQLite ledger URL is sqlite:///PATH (three slashes)")
        if path in ("/", "/:memory:"):
            # sqlite:///$UNSET would otherwise give each process a budget of its own
            raise ConfigurationError(
                "this SQLite ledger URL names no file (sqlite:/// or :memory:); write "
                "sqlite:///PATH, or exactly sqlite:// for a ledger held in this process's memory"
            )
        return kind, path[1:] or ":memory:", _DEFAULT
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    namespace = [v for k, v in query if k == "namespace"]
    rest = urlencode([(k, v) for k, v in query if k != "namespace"], quote_via=quote)
    if len(namespace) > 1:
        raise ConfigurationError("a ledger URL names its namespace at most once")
    return kind, urlunsplit(parts._replace(query=rest)), namespace[0] if namespace else _DEFAULT


def _backend(kind: Kind, target: str, namespace: str, create: bool) -> LedgerBackend:
    if kind == "redis":
        from agentguard.ledger._redis import RedisBackend

        return RedisBackend(target, namespace=namespace, create=create)
    if kind == "postgres":
        from agentguard.ledger._postgres import PostgresBackend

        return PostgresBackend(target, namespace=namespace)
    from agentguard.ledger._sqlite import SQLiteBackend

    return SQLiteBackend(target)


def open_ledger(
    url: str, *, clock: Callable[[], float] = time.time, create: bool = False
) -> Ledger:
    """A ``Ledger`` on the backend ``url`` names (see the module docstring).

    ``create``: a Redis namespace without its epoch is refused unless this is set, since a Redis
    that lost its data looks exactly like a new one. Set it once, in the step that sets the
    ledger up, never in every worker. SQLite and PostgreSQL create their tables either way."""
    return Ledger(backend=_backend(*_parse(url), create), clock=clock)


def open_replay_guard(url: str, *, create: bool = False) -> ReplayGuard:
    """The used-attestation record at ``url``: shared by every process that opens the same
    URL (an in-memory SQLite URL gives this process's own ``MemoryReplayGuard``). ``create``
    as for ``open_ledger`` (the two share the Redis namespace's epoch)."""
    kind, target, namespace = _parse(url)
    if kind == "redis":
        from agentguard.ledger._redis import RedisReplayGuard

        return RedisReplayGuard(target, namespace=namespace, create=create)
    if kind == "postgres":
        from agentguard.ledger._postgres import PostgresReplayGuard

        return PostgresReplayGuard(target, namespace=namespace)
    if target == ":memory:":
        return MemoryReplayGuard()
    from agentguard.ledger._replay import SQLiteReplayGuard

    return SQLiteReplayGuard(target)
