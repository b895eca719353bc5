"""Profile every Python process started with this directory on ``PYTHONPATH``.

``bench_network.py --profile DIR`` starts the reference network's processes (the client
driver, the gateway, each operator) with ``PYTHONPATH`` including this directory and
``AGENTGUARD_PROFILE_DIR=DIR``; Python imports ``sitecustomize`` at start-up, so each of them
gets a ``cProfile`` profiler whose clock is the process's CPU time (``time.process_time``), not
wall time: a process waiting on a socket costs nothing in it, so the profile shows where the
CPU goes. The profiler starts on ``SIGUSR1`` (after warm-up) and stops and writes
``DIR/<role>-<pid>.prof`` on ``SIGUSR2`` or at exit (``role``: ``client``, ``gateway``,
``operator``, or the script's name). Only the main thread is profiled; the CPU clock counts
every thread of the process. Without ``AGENTGUARD_PROFILE_DIR`` this module does nothing.
"""

from __future__ import annotations

import os

_DIR = os.environ.get("AGENTGUARD_PROFILE_DIR", "")

if _DIR:
    import atexit
    import cProfile
    import signal
    import sys
    import time
    from pathlib import Path
    from typing import Any

    _profile = cProfile.Profile(time.process_time)
    _state = {"on": False, "written": False}

    def _role() -> str:
        script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
        name = script.parent.name if script.stem == "__main__" else script.stem
        return {"_network_side": "client"}.get(name, name)

    def _start(*_: Any) -> None:
        if not _state["on"]:
            _state["on"] = True
            _profile.enable()

    def _write(*_: Any) -> None:
        if _state["on"]:
            _profile.disable()
            _state["on"] = False
        if not _state["written"]:
            _state["written"] = True
            _profile.dump_stats(os.path.join(_DIR, f"{_role()}-{os.getpid()}.prof"))

    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _write)
    atexit.register(_write)
