"""No core dumps from a process that holds secrets.

A core file is the process's memory: an operator's key, the gateway's API keys, or (in a
policy probe's child, a fork of either) both. A crash a hostile policy causes on purpose must
not write them to disk. ``RLIMIT_CORE`` 0 stops a plain core file; ``PR_SET_DUMPABLE`` 0 also
stops a ``core_pattern`` pipe (which ignores that limit), as ssh-agent does. Only the soft limit
is lowered: the hard one stays, so a program this process starts later (a shell, a debugger
session) may still ask for dumps of its own; ``PR_SET_DUMPABLE`` is reset by ``exec`` anyway.
"""

from __future__ import annotations

import contextlib
import ctypes
import resource
import sys

__all__ = ["forbid_core_dumps"]

_PR_SET_DUMPABLE = 4
_prctl = None
if sys.platform.startswith("linux"):  # loaded here, in the parent: a forked child only calls
    with contextlib.suppress(OSError, AttributeError):
        _prctl = ctypes.CDLL(None, use_errno=True).prctl


def forbid_core_dumps() -> None:
    """For this process and the children it forks from now on (best effort off Linux)."""
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    if _prctl is not None:
        _prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
