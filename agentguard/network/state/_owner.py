"""One gateway process per SQLite state file, enforced.

A SQLite state keeps its running totals and in-flight amounts in the gateway's memory, so two
gateways on one file would each let the same money through under a cap (and miss each other's
approvals). The gateway process holds an exclusive ``flock`` on ``<file>.lock`` for its life;
a second one is refused before it serves anything. Replicas share PostgreSQL instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from agentguard._exceptions import ConfigurationError
from agentguard.network.state._spec import parse_spec

__all__ = ["own_state"]


def own_state(spec: str | Path) -> int | None:
    """Take the file's ownership lock: the open descriptor to keep (closed or at exit, the lock
    goes with it), or None where there is no file to own (PostgreSQL, ``:memory:``)."""
    kind, target, _ = parse_spec(spec)
    if kind != "sqlite" or target in ("", ":memory:") or target.startswith("file::memory:"):
        return None
    lock = f"{target}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigurationError(
            f"another gateway process serves this state file (it holds {lock}); one gateway "
            "owns a SQLite state: stop it first, or share a PostgreSQL state between replicas"
        ) from None
    except OSError:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return fd
