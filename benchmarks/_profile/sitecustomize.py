"""Profile every Python process started with this directory on ``PYTHONPATH``.

``bench_network.py --profile DIR`` starts the reference network's processes (the client
driver, the gateway, each operator) with ``PYTHONPATH`` including this directory and
``AGENTGUARD_PROFILE_DIR=DIR``; Python imports ``sitecustomize`` at start-up, so each of them
gets a profiler whose clock is the process's CPU time, not wall time: a process waiting on a
socket costs nothing in it, so the profile shows where the CPU goes. The profiler starts on
``SIGUSR1`` (after warm-up) and stops and writes ``DIR/<role>-<pid>.prof`` (``pstats``) on
``SIGUSR2`` or at exit (``role``: ``client``, ``gateway``, ``operator``, or the script's name).
Only the main thread is profiled; the CPU clock counts every thread of the process.

Two profilers (``AGENTGUARD_PROFILE_MODE``):

* ``cprofile`` (the default): ``cProfile`` with ``time.process_time`` as its clock: exact call
  counts, but a clock read at every call and return, which inflates small Python functions
  several times over next to C code (rego-cpp, libsecp256k1, SQLite);
* ``sample``: a ``SIGPROF`` timer on the process's CPU time; each tick records the main
  thread's stack, so each function's share of the samples is its share of the CPU, at a
  few per cent of overhead. Written in the same ``pstats`` shape: own and inclusive time are
  the process's CPU time while profiled, split by samples; "calls" are samples. CPU spent in
  C code without a Python frame of its own (the event loop's) lands on the next Python
  function to run, and the timer ticks at the kernel's scheduler rate (a few ms): run enough
  authorizations for a few thousand samples.

Without ``AGENTGUARD_PROFILE_DIR`` this module does nothing.
"""

from __future__ import annotations

import os

_DIR = os.environ.get("AGENTGUARD_PROFILE_DIR", "")

if _DIR:
    import atexit
    import cProfile
    import marshal
    import signal
    import sys
    import time
    from collections import Counter
    from pathlib import Path
    from types import FrameType
    from typing import Any

    _SAMPLE = os.environ.get("AGENTGUARD_PROFILE_MODE", "cprofile") == "sample"
    _profile = cProfile.Profile(time.process_time)
    _state: dict[str, Any] = {"on": False, "written": False, "cpu": 0.0}
    _stacks: Counter[tuple[tuple[str, int, str], ...]] = Counter()

    def _role() -> str:
        script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
        name = script.parent.name if script.stem == "__main__" else script.stem
        return {"_network_side": "client"}.get(name, name)

    def _tick(_: int, frame: FrameType | None) -> None:
        stack = []
        while frame is not None:
            code = frame.f_code
            stack.append((code.co_filename, code.co_firstlineno, code.co_name))
            frame = frame.f_back
        _stacks[tuple(stack)] += 1

    def _sampled() -> dict[Any, Any]:
        """The samples as ``pstats`` reads them: own and inclusive CPU seconds per function."""
        seconds = _state["cpu"] / max(1, sum(_stacks.values()))
        own: Counter[tuple[str, int, str]] = Counter()
        inclusive: Counter[tuple[str, int, str]] = Counter()
        for stack, n in _stacks.items():
            own[stack[0]] += n
            for function in set(stack):
                inclusive[function] += n
        return {
            f: (n, n, own[f] * seconds, inclusive[f] * seconds, {}) for f, n in inclusive.items()
        }

    def _start(*_: Any) -> None:
        if not _state["on"]:
            _state["on"] = True
            if _SAMPLE:
                _state["cpu"] = -time.process_time()
                signal.signal(signal.SIGPROF, _tick)
                signal.setitimer(signal.ITIMER_PROF, 0.001, 0.001)
            else:
                _profile.enable()

    def _write(*_: Any) -> None:
        if _state["on"]:
            if _SAMPLE:
                signal.setitimer(signal.ITIMER_PROF, 0, 0)
                _state["cpu"] += time.process_time()
            else:
                _profile.disable()
            _state["on"] = False
        if not _state["written"]:
            _state["written"] = True
            path = os.path.join(_DIR, f"{_role()}-{os.getpid()}.prof")
            if _SAMPLE:
                with open(path, "wb") as out:
                    marshal.dump(_sampled(), out)
            else:
                _profile.dump_stats(path)

    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _write)
    atexit.register(_write)
