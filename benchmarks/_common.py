"""What every benchmark shares: the machine it ran on, the ``--json``/``--quick`` flags, the
report's JSON shape, percentiles, and CPU time of other processes read from ``/proc``.

Each ``benchmarks/bench_*.py`` writes, with ``--json PATH``::

    {"name": str, "command": str, "machine": {...}, "rows": [{...}, ...], "notes": str}

and may add tables of its own beside ``rows`` (``bench_network.py``: ``cpu_split``,
``scaling``), each a list of rows of scalars.

``benchmarks/report.py`` renders those files into ``docs/performance.md``. A benchmark never
fails on a number: it reports what it measured.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import signal
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")

# Amounts every benchmark intent stays far below; the Base USDC token and a payee.
USDC = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
PAYEE = "0x2222222222222222222222222222222222222222"
# The common two-check ``agent_spend`` configuration: a per-transaction cap and a recipient list.
TWO_CHECKS: dict[str, Any] = {"max_per_tx": {USDC: "1000000000000"}, "allowed_recipients": [PAYEE]}
# Every one of ``agent_spend``'s 13 checks configured, each set so a benchmark intent (a USDC
# transfer of a few atomic units to PAYEE on Base) passes all of them at any hour.
FULL_13: dict[str, Any] = {
    "max_per_tx": {USDC: "100000000000", "0x0000000000000000000000000000000000000000": "1"},
    "window_caps": [{"asset": USDC, "window_seconds": 86400, "max_amount": "10" + "0" * 30}],
    "rate_limits": [{"window_seconds": 3600, "max_count": 1_000_000_000}],
    "allowed_recipients": [PAYEE],
    "denied_recipients": ["0x000000000000000000000000000000000000dEaD"],
    "allowed_contracts": [USDC],
    "denied_contracts": ["0x000000000000000000000000000000000000bEEF"],
    "allowed_functions": ["transfer(address,uint256)"],
    "allow_plain_transfers": True,
    "allowed_assets": [USDC],
    "allowed_chains": ["8453"],
    "time_windows": [{"days": [0, 1, 2, 3, 4, 5, 6], "start": "00:00", "end": "24:00"}],
    "approval_above": {USDC: "100000000000"},
}


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so ``finally`` blocks stop the processes a benchmark
    started (``report.py`` sends it to a benchmark that overruns its time)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def machine() -> dict[str, Any]:
    """What the figures depend on: CPU model, cores, RAM, Python, the load, the date."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "load_start": load_average(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the flags every benchmark takes."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", type=Path, default=None, help="write the figures here (JSON)")
    p.add_argument("--quick", action="store_true", help="a tiny run that proves it works")
    return p


def command() -> str:
    """This run's command line as someone would type it from the repository root (without
    ``--json PATH``, which only says where the figures went)."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(ROOT))
    except ValueError:
        shown = str(script)
    args, rest = [], iter(sys.argv[1:])
    for arg in rest:
        if arg == "--json":
            next(rest, None)
        elif not arg.startswith("--json="):
            args.append(arg)
    return shlex.join([".venv/bin/python", shown, *args])


def emit(
    path: Path | None,
    name: str,
    started: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    notes: str = "",
    tables: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Print the rows and, with ``--json``, write the report (``started`` is ``machine()``
    taken at the start; the load at the end is added here; ``tables`` go in beside ``rows``)."""
    report: dict[str, Any] = {
        "name": name,
        "command": command(),
        "machine": {**started, "load_end": load_average()},
        "rows": list(rows),
        "notes": notes,
        **(tables or {}),
    }
    for row in rows:
        print(json.dumps(row))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def percentile(samples: Iterable[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one live process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` (its own and its reaped children's) and of its live children:
    a server that forks a process per connection (PostgreSQL) is counted whole."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        this, parent = int(stat.parent.name), int(fields[1])
        if this == pid:
            total += sum(int(x) for x in fields[11:15]) / _TICK  # utime stime cutime cstime
        elif parent == pid:
            total += sum(int(x) for x in fields[11:13]) / _TICK
    return total


def rss_mib(pid: int) -> float:
    """Resident memory of one live process, MiB (0 if it is gone)."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * _PAGE / 2**20


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def serve_rounds(round_of: Any) -> None:
    """A benchmark's ``--child`` side of ``interleaved``: names the ``agentguard`` it imported,
    then answers each ``{"n": N}`` line with ``round_of(N)``'s figures as one JSON line."""
    import agentguard

    print(json.dumps({"agentguard": agentguard.__file__}), flush=True)
    for line in sys.stdin:
        print(json.dumps(round_of(json.loads(line)["n"])), flush=True)


def ab_rows(
    ref: str, commit: str, got: dict[str, list[dict[str, float]]], labels: dict[str, str]
) -> list[dict[str, Any]]:
    """Rows of an ``interleaved`` A/B: per figure (``labels``: key -> what it is), medians
    of both sides, their ratio, and the median of per-round ratios."""
    rows = []
    for key, what in labels.items():
        base = [x[key] for x in got["baseline"]]
        cur = [x[key] for x in got["current"]]
        rows.append(
            {
                "what": what,
                "baseline": f"{ref} = {commit[:10]}",
                "baseline_us": round(statistics.median(base), 1),
                "current_us": round(statistics.median(cur), 1),
                "ratio": round(statistics.median(cur) / statistics.median(base), 3),
                # each round's pair ran back to back: their ratio shares the box's noise
                "paired_ratio": round(
                    statistics.median(c / b for b, c in zip(base, cur, strict=True)), 3
                ),
                "rounds": len(base),
            }
        )
    return rows


def interleaved(
    script: str, ref: str, n: int, rounds: int
) -> tuple[str, dict[str, list[dict[str, float]]]]:
    """A/B of a benchmark's ``--child`` mode: a child on ``ref``'s ``agentguard`` (unpacked with
    ``git archive``) and one on this checkout's, each asked for a round of ``n`` ops in turn
    (ABBA…), so both share the box's noise. The child prints ``{"agentguard": path}`` once, then
    one JSON object of figures per ``{"n": n}`` line it reads. Returns the baseline's commit and
    each side's rounds (``baseline``, ``current``)."""
    import subprocess
    import tempfile

    from bench_network import unpack

    with tempfile.TemporaryDirectory(prefix="agentguard-ab-") as tmp:
        commit = unpack(ref, Path(tmp))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        trees = {"baseline": Path(tmp), "current": ROOT}
        children = {
            label: subprocess.Popen(
                [sys.executable, script, "--child"],
                cwd=tree,
                env={**env, "PYTHONPATH": str(tree)},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for label, tree in trees.items()
        }
        got: dict[str, list[dict[str, float]]] = {k: [] for k in children}
        try:
            for label, proc in children.items():
                assert proc.stdout is not None
                imported = json.loads(proc.stdout.readline())["agentguard"]
                assert imported.startswith(str(trees[label])), (label, imported)
            for r in range(rounds):
                order = list(children) if r % 2 == 0 else list(children)[::-1]
                for label in order:
                    proc = children[label]
                    assert proc.stdin is not None and proc.stdout is not None
                    proc.stdin.write(json.dumps({"n": n}) + "\n")
                    proc.stdin.flush()
                    got[label].append(json.loads(proc.stdout.readline()))
        finally:
            for proc in children.values():
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.wait(30)
    return commit, got


def bound_task(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` (an operator request) with a fresh ``request_id`` and the task id the
    operators derive from it (``agentguard._task_id``); a tree without that derivation (an
    older baseline) gets a random id, which it accepts."""
    rid = os.urandom(16).hex()
    try:
        from agentguard._task_id import task_id
    except ImportError:
        params["task_id"] = "0x" + os.urandom(32).hex()
        return params
    from agentguard._intent import TransactionIntent

    intent = TransactionIntent.from_wire(params["intent"])
    derived = task_id(params["policy_client"], intent.intent_hash, params["wasm"].get("x402"), rid)
    params["request_id"], params["task_id"] = rid, "0x" + derived.hex()
    return params
