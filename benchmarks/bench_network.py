"""Authorization through the reference network, this checkout side by side with a baseline ref.

    .venv/bin/python benchmarks/bench_network.py [--baseline f8ec757] [--rounds 3]
        [--sequential 100] [--requests 600] [--concurrency 32] [--soak 100000]
        [--soak-budget 240] [--json PATH] [--quick]

The baseline's ``agentguard/`` is unpacked with ``git archive`` into a temporary directory;
each side runs in its own driver process (``_network_side.py``) with ``PYTHONPATH`` and the
working directory set to its tree, so its gateway and operators import that tree's code, all
from the same virtualenv. Both sides' networks are up at once and measured in alternating
rounds (the side that goes first alternates too), so a noisy neighbour hits both alike.

Per setup (3 operators with ``agent_spend`` configured with two checks and with all 13 keys;
5 and 7 operators with two checks; a two-thirds quorum): sequential authorize latency from one
sync client (p50, p99 over every round's samples), throughput with ``--concurrency`` async
clients, and CPU time per authorization summed over ALL processes (the client, the gateway,
every operator; read from ``/proc``), which depends far less on how busy the machine is than
wall time. Then a soak: ``--soak`` authorizations per side in alternating chunks, gateway RSS
before and after; it stops early, and says so, once ``--soak-budget`` seconds are spent.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    FULL_13,
    ROOT,
    TWO_CHECKS,
    emit,
    machine,
    parser,
    percentile,
    stop_on_sigterm,
)

SIDE = Path(__file__).with_name("_network_side.py")
THRESHOLD = 66  # two thirds: 2 of 3, 4 of 5, 5 of 7
GROUPS: list[tuple[int, list[tuple[str, dict[str, Any]]]]] = [
    (3, [("2 checks", TWO_CHECKS), ("13 keys", FULL_13)]),
    (5, [("2 checks", TWO_CHECKS)]),
    (7, [("2 checks", TWO_CHECKS)]),
]


@dataclass
class Side:
    """A driver process running one tree's network."""

    label: str
    tree: Path
    proc: subprocess.Popen[str] | None = None
    imported: str = ""
    errors: list[str] = field(default_factory=list)

    def open(self) -> None:
        env = {**_env(), "PYTHONPATH": str(self.tree)}
        self.proc = subprocess.Popen(
            [sys.executable, str(SIDE)],
            cwd=self.tree,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, op: str, **args: Any) -> dict[str, Any] | None:
        """Send one command; None (and the error remembered) if it failed."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("@@ "):
                answer: dict[str, Any] = json.loads(line[3:])
                if "error" in answer:
                    self.errors.append(f"{op}: {answer['error']}")
                    return None
                return answer
        self.errors.append(f"{op}: the driver process exited")
        return None

    def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.ask("stop")
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def unpack(ref: str, into: Path) -> str:
    """The baseline's ``agentguard/`` into ``into``; returns the full commit id."""
    commit = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "agentguard"],
        check=True,
        capture_output=True,
    ).stdout
    with tempfile.TemporaryFile() as tmp:
        tmp.write(archive)
        tmp.seek(0)
        with tarfile.open(fileobj=tmp) as tar:
            tar.extractall(into, filter="data")
    return commit


@dataclass
class Figures:
    """What one side measured in one setup, over all rounds."""

    samples_ms: list[float] = field(default_factory=list)
    seq_cpu_ms: list[float] = field(default_factory=list)
    per_s: list[float] = field(default_factory=list)
    conc_cpu_ms: list[float] = field(default_factory=list)
    conc_client_ms: list[float] = field(default_factory=list)
    verify_ms: list[float] = field(default_factory=list)
    denied: int = 0
    failed: int = 0

    def add_sequential(self, a: dict[str, Any]) -> None:
        n = len(a["samples_ms"])
        self.samples_ms += a["samples_ms"]
        self.seq_cpu_ms.append(1000 * (a["cpu_client_s"] + a["cpu_network_s"]) / n)
        self.verify_ms.append(a["verify_ms"])
        self.denied += a["denied"]

    def add_concurrent(self, a: dict[str, Any]) -> None:
        self.failed += a["failed"]
        n = a["n"]
        if not n:
            return
        self.per_s.append(n / a["elapsed_s"])
        self.conc_cpu_ms.append(1000 * (a["cpu_client_s"] + a["cpu_network_s"]) / n)
        self.conc_client_ms.append(1000 * a["cpu_client_s"] / n)
        self.denied += a["denied"]

    def summary(self) -> dict[str, float | int | None]:
        def med(xs: list[float]) -> float | None:
            return round(statistics.median(xs), 3) if xs else None

        return {
            "sequential p50 (ms)": med(self.samples_ms),
            "sequential p99 (ms)": (
                round(percentile(self.samples_ms, 0.99), 3) if self.samples_ms else None
            ),
            "sequential CPU per authorization, all processes (ms)": med(self.seq_cpu_ms),
            "throughput, concurrent clients (/s)": med(self.per_s),
            "CPU per authorization under load, all processes (ms)": med(self.conc_cpu_ms),
            "of which the client process (ms)": med(self.conc_client_ms),
            "client verification per attestation (ms)": med(self.verify_ms),
            "concurrent requests that failed (timeouts)": self.failed,
        }


def side_by_side(
    setup: str, figures: dict[str, Figures], labels: list[str]
) -> list[dict[str, Any]]:
    summaries = {label: figures[label].summary() for label in labels}
    rows = []
    for figure in summaries[labels[-1]]:
        row: dict[str, Any] = {"setup": setup, "figure": figure}
        for label in labels:
            row[label] = summaries[label][figure]
        rows.append(_with_ratio(row))
    return rows


def _with_ratio(row: dict[str, Any]) -> dict[str, Any]:
    base, current = row.get("baseline"), row.get("current")
    row["ratio"] = round(current / base, 2) if base and current is not None else None
    return row


def run_group(
    sides: list[Side], operators: int, setups: list[tuple[str, dict[str, Any]]], args: Any
) -> list[dict[str, Any]]:
    """Start both sides' networks of ``operators``, measure every setup in rounds."""
    live = []
    for s in sides:
        answer = s.ask(
            "start", operators=operators, threshold=THRESHOLD, params=[p for _, p in setups]
        )
        if answer is not None:
            live.append(s)
            s.imported = answer["agentguard"]
            if answer["cwds"] != [str(s.tree)]:
                s.errors.append(f"its network processes ran in {answer['cwds']}, not its tree")
    figures = {(s.label, i): Figures() for s in sides for i in range(len(setups))}
    # more operators: half the requests (the cost per authorization is the figure there)
    scale = 1 if operators == 3 else 2
    sequential, requests = max(1, args.sequential // scale), max(1, args.requests // scale)
    for r in range(args.rounds):
        order = live if r % 2 == 0 else live[::-1]
        for i in range(len(setups)):
            for side in order:
                fig = figures[(side.label, i)]
                if (a := side.ask("sequential", n=sequential, client=i)) is not None:
                    fig.add_sequential(a)
            for side in order:
                fig = figures[(side.label, i)]
                a = side.ask("concurrent", n=requests, concurrency=args.concurrency, client=i)
                if a is not None:
                    fig.add_concurrent(a)
        print(f"  {operators} operators: round {r + 1}/{args.rounds} done", file=sys.stderr)
    rows = []
    for i, (name, _) in enumerate(setups):
        setup = f"{operators} operators, {name}"
        per_side = {s.label: figures[(s.label, i)] for s in sides}
        rows += side_by_side(setup, per_side, [s.label for s in sides])
        for s in sides:
            if denied := figures[(s.label, i)].denied:
                s.errors.append(f"{setup}: {denied} authorizations were denied")
    return rows


def soak(sides: list[Side], args: Any) -> tuple[list[dict[str, Any]], str]:
    """Alternate chunks on the 3-operator network until ``--soak`` each or the budget is spent."""
    before = {s.label: (s.ask("rss") or {}).get("gateway_rss_mib") for s in sides}
    done = dict.fromkeys(before, 0)
    chunk = max(1, min(args.soak, args.soak_chunk))
    started = time.monotonic()
    last_pair = 0.0
    pairs = 0
    stopped = ""
    while min(done.values()) < args.soak:
        spent = time.monotonic() - started
        if spent + last_pair > args.soak_budget:
            stopped = (
                f"The soak stopped after {min(done.values()):,} of {args.soak:,} authorizations "
                f"per side: its {args.soak_budget:.0f} s budget was spent."
            )
            break
        pair_started = time.monotonic()
        size = min(chunk, args.soak - min(done.values()))
        pairs += 1
        for s in sides if pairs % 2 else sides[::-1]:
            answer = s.ask("concurrent", n=size, concurrency=args.soak_concurrency, client=0)
            if answer is not None:
                done[s.label] += answer["n"]
        last_pair = time.monotonic() - pair_started
        print(
            f"  soak: {min(done.values()):,} per side, {last_pair:.0f} s a chunk", file=sys.stderr
        )
        if not any(s.proc and s.proc.poll() is None for s in sides):
            break
    after = {s.label: (s.ask("rss") or {}).get("gateway_rss_mib") for s in sides}
    growth: dict[str, float | None] = {}
    for k, a in after.items():
        b = before[k]
        growth[k] = round((a - b) * 1000 / done[k], 3) if a and b and done[k] else None
    rows = []
    for figure, values in (
        ("authorizations in the soak", done),
        ("gateway RSS before the soak (MiB)", _rounded(before)),
        ("gateway RSS after the soak (MiB)", _rounded(after)),
        ("gateway RSS growth per 1,000 authorizations (MiB)", growth),
    ):
        row: dict[str, Any] = {"setup": "3 operators, 2 checks: soak", "figure": figure}
        row.update(values)
        rows.append(_with_ratio(row))
    return rows, stopped


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in values.items()}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--baseline", default="f8ec757", help="git ref to compare with, or 'none'")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sequential", type=int, default=100, help="authorizations per round")
    p.add_argument("--requests", type=int, default=600, help="concurrent, per round")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--soak", type=int, default=100_000, help="authorizations per side")
    p.add_argument("--soak-budget", type=float, default=240.0, help="seconds, both sides")
    p.add_argument("--soak-chunk", type=int, default=2500)
    p.add_argument("--soak-concurrency", type=int, default=64)
    p.add_argument("--operators", type=int, nargs="*", default=None, help="groups to run")
    args = p.parse_args()
    stop_on_sigterm()
    if args.quick:
        args.rounds, args.sequential, args.requests, args.concurrency = 1, 10, 40, 8
        args.soak, args.soak_chunk, args.soak_concurrency = 100, 50, 8
        args.operators = args.operators or [3]
    started = machine()
    notes: list[str] = []
    current = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--", "agentguard"))
    with tempfile.TemporaryDirectory(prefix="agentguard-baseline-") as tmp:
        sides = []
        if args.baseline != "none":
            try:
                base = unpack(args.baseline, Path(tmp))
                sides.append(Side("baseline", Path(tmp)))
                notes.append(f"Baseline: `{args.baseline}` = `{base[:12]}`.")
                if not dirty and _git("rev-parse", f"{base}:agentguard") == _git(
                    "rev-parse", "HEAD:agentguard"
                ):
                    notes.append(
                        "The baseline's agentguard/ is identical to this checkout's: the ratios "
                        "show only the noise between two runs of the same code."
                    )
            except (subprocess.CalledProcessError, OSError, tarfile.TarError) as exc:
                notes.append(f"The baseline {args.baseline!r} could not be unpacked ({exc}).")
        sides.append(Side("current", ROOT))
        notes.append(f"Current: `{current[:12]}`{' with uncommitted changes' if dirty else ''}.")
        rows: list[dict[str, Any]] = []
        for operators, setups in GROUPS:
            if args.operators and operators not in args.operators:
                continue
            try:
                for s in sides:
                    s.open()
                rows += run_group(sides, operators, setups, args)
                if operators == 3 and args.soak > 0:
                    soaked, stopped = soak(sides, args)
                    rows += soaked
                    if stopped:
                        notes.append(stopped)
            finally:
                for s in sides:
                    s.close()
        for s in sides:
            if s.imported and Path(s.imported).parent != s.tree:
                s.errors.append(f"its processes imported agentguard from {s.imported}")
            notes += [f"{s.label} failed: {e}." for e in s.errors]
    notes.append(
        f"{args.rounds} rounds of {args.sequential} sequential and {args.requests} concurrent "
        f"authorizations ({args.concurrency} clients) per side and setup, half as many with 5 "
        "and 7 operators."
    )
    emit(args.json, "network", started, rows, " ".join(notes))


if __name__ == "__main__":
    main()
