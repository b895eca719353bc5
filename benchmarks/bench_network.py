"""Authorization through the reference network, this checkout side by side with a baseline ref.

    .venv/bin/python benchmarks/bench_network.py [--baseline a179a10] [--rounds 3]
        [--sequential 100] [--requests 600] [--concurrency 32] [--operators 3 5 7]
        [--soak 100000] [--baseline-soak 20000] [--soak-budget 480] [--json PATH] [--quick]
        [--hosted with|only|none] [--interleaved-rounds 3]
    .venv/bin/python benchmarks/bench_network.py --profile DIR [--profile-keys 13]
        [--operators 5] [--requests 2000] [--top 20] [--hosted only] [--profile-mode sample]

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
wall time, split by process (``cpu_split`` in the JSON) so one sees where the CPU goes, and
set against the operators asked per authorization (``scaling``).

That CPU still follows how busy the machine is (on 2 shared cores an operator's evaluation
cost 0.8 ms on a quiet machine, 1.4-1.6 ms on a busy one, the same code), and the setups run
minutes apart, so ``scaling`` also has a same-run ratio: this checkout's networks of each
operator count (two checks) up at once, measured in rotating rounds
(``--interleaved-rounds``, 0 for none); that is the ratio to hold against the linear bound.

With 3 operators, one more setup: ``3 operators on 1 host, 2 checks``, this checkout's 3
operator keys in one operator host process (``ReferenceNetwork(hosts=1)``: one evaluation and
one hop per authorization where separate operators take two of each), against the baseline's
ordinary 3-operator network (it has no operator hosts). ``--hosted only`` runs just that
setup, ``--hosted none`` leaves it out.

Then a soak of the 3-operator networks through a lean keep-alive driver (``_soak_driver.py``,
the SDK's own request body, so the driver costs little next to the network): ``--soak``
authorizations for this checkout, ``--baseline-soak`` for the baseline, in alternating chunks
while both run; the gateway's RSS before, after the ``--soak-warmup``, at every
``--soak-every`` and after, and its growth per 1,000 after the warm-up and over the second
half. It stops early, and says so, once ``--soak-budget`` seconds are spent.

Where the CPU goes without the baseline or the soak, in about a minute::

    .venv/bin/python benchmarks/bench_network.py --baseline none --operators 3 --rounds 1 --soak 0

``--profile DIR`` measures nothing side by side: it runs this checkout's network alone with
every process under a CPU-time profiler (``_profile/sitecustomize.py``) and prints each
process's top functions per authorization, so anyone can see the hot path; with
``--hosted only`` its operator keys run in one operator host. ``--profile-mode sample``
samples the CPU time instead of timing every call: cProfile's clock reads inflate small Python
functions several times over next to C code (rego-cpp, libsecp256k1, SQLite), so shares are
read from samples ("calls" are then samples per authorization); 2,000 authorizations or more.
"""

from __future__ import annotations

import json
import os
import pstats
import re
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
PROFILE_SITE = Path(__file__).with_name("_profile")  # its sitecustomize.py profiles each process
BASELINE = "a179a10"  # main before issue 11: the design the speed work replaces
THRESHOLD = 66  # two thirds: 2 of 3, 4 of 5, 5 of 7
MAIN = "3 operators, 2 checks"
HOSTED = "3 operators on 1 host, 2 checks"
GROWTH = "gateway RSS growth per 1,000 authorizations after warm-up (MiB)"
LATE = "gateway RSS growth per 1,000 over the soak's second half (MiB)"
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
    env: dict[str, str] = field(default_factory=dict)  # added to the driver's environment
    proc: subprocess.Popen[str] | None = None
    imported: str = ""
    errors: list[str] = field(default_factory=list)

    def open(self) -> None:
        env = {**_env(), "PYTHONPATH": str(self.tree), **self.env}
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

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

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
    loaded: list[dict[str, Any]] = field(default_factory=list)  # each concurrent round
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
        if not a["n"]:
            return
        self.per_s.append(a["n"] / a["elapsed_s"])
        self.loaded.append(a)
        self.denied += a["denied"]

    def split(self) -> dict[str, float]:
        """CPU ms per authorization by process, of the concurrent round whose all-process
        figure is the median (the lower one of an even count): its parts add up to it."""
        if not self.loaded:
            return {}
        a = sorted(self.loaded, key=lambda a: (a["cpu_client_s"] + a["cpu_network_s"]) / a["n"])[
            (len(self.loaded) - 1) // 2
        ]
        return {role: 1000 * s / a["n"] for role, s in a["cpu_s"].items()}

    def per_task(self, figure: str, scale: int = 1) -> float | None:
        """The gateway's count of ``figure`` per task under load, over every round (a sum of
        reasons for ``widened``), or ``None`` from a tree that does not count it."""
        stats = [a.get("gateway_stats") for a in self.loaded]
        if not stats or any(not s for s in stats):
            return None
        tasks = sum(s["tasks"] for s in stats)
        count = sum(
            sum(s[figure].values()) if isinstance(s[figure], dict) else s[figure] for s in stats
        )
        return round(scale * count / tasks, 3) if tasks else None

    def summary(self) -> dict[str, float | int | None]:
        def med(xs: list[float]) -> float | None:
            return round(statistics.median(xs), 3) if xs else None

        split = self.split()
        operators = sum(ms for role, ms in split.items() if role.startswith("operator"))
        answered = sum(a["n"] for a in self.loaded)
        return {
            "sequential p50 (ms)": med(self.samples_ms),
            "sequential p99 (ms)": (
                round(percentile(self.samples_ms, 0.99), 3) if self.samples_ms else None
            ),
            "sequential CPU per authorization, all processes (ms)": med(self.seq_cpu_ms),
            "throughput, concurrent clients (/s)": med(self.per_s),
            "CPU per authorization under load, all processes (ms)": (
                round(sum(split.values()), 3) if split else None
            ),
            "of which the client process (ms)": _r(split.get("client")),
            "of which the gateway (ms)": _r(split.get("gateway")),
            "of which the operators, together (ms)": _r(operators) if split else None,
            "signatures per attestation": (
                round(sum(a["signatures"] for a in self.loaded) / answered, 2) if answered else None
            ),
            "operator evaluations per authorization": self.per_task("evaluations"),
            "tasks widened past the quorum asked first (%)": self.per_task("widened", 100),
            "client verification per attestation (ms)": med(self.verify_ms),
            "concurrent requests that failed (timeouts)": self.failed,
        }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


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


def split_rows(setup: str, figures: dict[str, Figures]) -> list[dict[str, Any]]:
    """The per-process table: CPU ms per authorization under load, each process on its own."""
    rows = []
    for label, fig in figures.items():
        split = fig.split()
        if not split:
            continue
        ops = [round(ms, 3) for role, ms in split.items() if role.startswith("operator")]
        rows.append(
            {
                "setup": setup,
                "side": label,
                "client": round(split["client"], 3),
                "gateway": _r(split.get("gateway")),
                "each operator": ops,
                "operators together": round(sum(ops), 3),
                "other processes": round(split.get("other", 0.0), 3),
                "all processes": round(sum(split.values()), 3),
            }
        )
    return rows


def _with_ratio(row: dict[str, Any]) -> dict[str, Any]:
    base, current = row.get("baseline"), row.get("current")
    numbers = isinstance(base, int | float) and isinstance(current, int | float)
    row["ratio"] = round(current / base, 2) if numbers and base else None
    return row


def asked(operators: int) -> int:
    """Operators a two-thirds quorum needs, which the gateway asks first (rounded up)."""
    return -(-operators * THRESHOLD // 100)


def scaling(
    rows: list[dict[str, Any]], labels: list[str], same_run: dict[int, float] | None = None
) -> list[dict[str, Any]]:
    """CPU per authorization against the operators asked, each setup relative to 3 operators
    with two checks: cost at most linear in the operators asked means the CPU ratio stays at
    or below the ratio of operators asked. ``same_run``: ``interleaved``'s figures, the ratio
    to read (the others come from setups measured minutes apart)."""
    cpu = "CPU per authorization under load, all processes (ms)"
    by = {(r["setup"], r["figure"]): r for r in rows}
    base = by.get(("3 operators, 2 checks", cpu), {})
    out = []
    for operators, setups in GROUPS:
        for name, _ in setups:
            setup = f"{operators} operators, {name}"
            row = by.get((setup, cpu))
            if row is None:
                continue
            sigs = by.get((setup, "signatures per attestation"), {})
            entry: dict[str, Any] = {
                "setup": setup,
                "operators": operators,
                "asked first (quorum)": asked(operators),
                "signatures per attestation": sigs.get("current"),
                # the 13-key policy asks as many operators: its ratio is the policy's own cost
                "linear bound": round(asked(operators) / asked(3), 2)
                if name == "2 checks"
                else None,
            }
            for label in labels:
                value, three = row.get(label), base.get(label)
                entry[f"{label} CPU (ms)"] = value
                entry[f"{label} / 3 operators"] = (
                    round(value / three, 2) if value and three else None
                )
                entry[f"{label} CPU per operator asked (ms)"] = (
                    round(value / asked(operators), 3) if value else None
                )
            if same_run:
                value = same_run.get(operators) if name == "2 checks" else None
                three = same_run.get(3)
                entry["current, same run: CPU (ms)"] = value
                entry["current, same run: / 3 operators"] = (
                    round(value / three, 2) if value and three else None
                )
            out.append(entry)
    return out


def interleaved(args: Any) -> tuple[dict[int, float], list[str]]:
    """This checkout's CPU per authorization under load (ms, median round) with each operator
    count, two checks, every network up at once and measured in rotating rounds: the setups
    above run minutes apart, and the CPU an evaluation costs on a small shared machine follows
    how busy it is then (a quiet machine made 3 operators' evaluations half as costly as 7's
    measured later), so only a same-run ratio says how cost grows with the operators asked."""
    counts = sorted({n for n, _ in GROUPS if not args.operators or n in args.operators})
    if 3 not in counts or len(counts) < 2 or args.interleaved_rounds < 1:
        return {}, []
    sides = {n: Side(f"{n} operators", ROOT) for n in counts}
    cpu: dict[int, list[float]] = {n: [] for n in counts}
    try:
        for s in sides.values():
            s.open()
        live = [
            n
            for n, s in sides.items()
            if s.ask("start", operators=n, threshold=THRESHOLD, params=[TWO_CHECKS]) is not None
        ]
        for r in range(args.interleaved_rounds):
            for n in live[r % len(live) :] + live[: r % len(live)]:
                a = sides[n].ask("concurrent", n=args.requests, concurrency=args.concurrency)
                if a is not None and a["n"]:
                    cpu[n].append(1000 * (a["cpu_client_s"] + a["cpu_network_s"]) / a["n"])
            print(f"  same run: round {r + 1}/{args.interleaved_rounds} done", file=sys.stderr)
    finally:
        for s in sides.values():
            s.close()
    notes = [f"same run, {s.label}, failed: {e}." for s in sides.values() for e in s.errors]
    notes.append(
        f"Same run: this checkout's networks of {', '.join(map(str, counts))} operators (two "
        f"checks) up at once, {args.interleaved_rounds} rounds of {args.requests} concurrent "
        "authorizations each, the order rotating every round; the median round's CPU."
    )
    return {n: round(statistics.median(v), 3) for n, v in cpu.items() if v}, notes


def _has_hosts(tree: Path) -> bool:
    """Whether the checkout at ``tree`` has operator hosts (``agentguard_evaluateForKeys``)."""
    rpc = tree / "agentguard" / "network" / "_rpc.py"
    return rpc.is_file() and "EVALUATE_FOR_KEYS" in rpc.read_text()


def run_group(
    sides: list[Side],
    operators: int,
    setups: list[tuple[str, dict[str, Any]]],
    args: Any,
    hosts: int | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Start both sides' networks of ``operators``, measure every setup in rounds; the rows
    and the per-process split. ``hosts``: each side's keys run in that many operator host
    processes; a baseline without operator hosts runs its ordinary network."""
    live = []
    for s in sides:
        more = {"hosts": hosts} if hosts is not None and _has_hosts(s.tree) else {}
        answer = s.ask(
            "start",
            operators=operators,
            threshold=THRESHOLD,
            params=[p for _, p in setups],
            **more,
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
    rows, split = [], []
    where = "" if hosts is None else f" on {hosts} host{'s' * (hosts > 1)}"
    for i, (name, _) in enumerate(setups):
        setup = f"{operators} operators{where}, {name}"
        per_side = {s.label: figures[(s.label, i)] for s in sides}
        rows += side_by_side(setup, per_side, [s.label for s in sides])
        split += split_rows(setup, per_side)
        for s in sides:
            if denied := figures[(s.label, i)].denied:
                s.errors.append(f"{setup}: {denied} authorizations were denied")
    return rows, split


@dataclass
class Soak:
    """One side's soak: its quota, what it did, the gateway's RSS along the way."""

    quota: int
    sent: int = 0  # requests sent: the soak's progress (RSS readings are keyed by it)
    done: int = 0  # of which answered with a result
    failed: int = 0
    denied: int = 0
    elapsed_s: float = 0.0
    network_cpu_s: float = 0.0
    driver_cpu_s: float = 0.0
    rss: list[tuple[int, float]] = field(default_factory=list)  # (sent, MiB)

    def at(self, n: int) -> float | None:
        """RSS when ``n`` requests were sent (the first reading at or after it)."""
        return next((mib for done, mib in self.rss if done >= n), None)

    def growth(self, start: int, end: int) -> float | None:
        """MiB per 1,000 authorizations between two readings."""
        a, b = self.at(start), self.at(end)
        n = (self._done_at(end) or 0) - (self._done_at(start) or 0)
        return round((b - a) * 1000 / n, 3) if a and b and n > 0 else None

    def _done_at(self, n: int) -> int | None:
        return next((done for done, _ in self.rss if done >= n), None)


def soak(sides: list[Side], args: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Soak the 3-operator networks through the lean driver: each side to its quota (the
    current side ``--soak``, the baseline ``--baseline-soak``), in alternating chunks while
    both run, the gateway's RSS after each chunk; stops, and says so, once ``--soak-budget``
    seconds are spent."""
    quotas = {"baseline": args.baseline_soak, "current": args.soak}
    runs = {s.label: Soak(quotas[s.label]) for s in sides}
    for s in sides:
        runs[s.label].rss.append((0, (s.ask("rss") or {}).get("gateway_rss_mib") or 0.0))
    warm = args.soak_warmup
    started = time.monotonic()
    notes: list[str] = []
    turn = 0
    while active := [s for s in sides if runs[s.label].sent < runs[s.label].quota and s.alive()]:
        if time.monotonic() - started > args.soak_budget:
            notes.append(
                f"The soak stopped after its {args.soak_budget:.0f} s budget: "
                + ", ".join(
                    f"{s.label} {runs[s.label].sent:,} of {runs[s.label].quota:,}" for s in active
                )
                + "."
            )
            break
        turn += 1
        for s in active if turn % 2 else active[::-1]:
            run = runs[s.label]
            # RSS is read at the warm-up, every --soak-every, and each side's end, so both
            # sides have readings at the same counts
            stop = min(
                [x for x in (warm, *quotas.values()) if x > run.sent]
                + [(run.sent // args.soak_every + 1) * args.soak_every]
            )
            a = s.ask("soak", n=min(stop, run.quota) - run.sent, connections=args.soak_connections)
            if a is None:
                continue
            run.sent += a["n"] + a["failed"]
            run.done += a["n"]
            run.failed += a["failed"]
            run.denied += a["denied"]
            run.elapsed_s += a["elapsed_s"]
            run.network_cpu_s += a["cpu_network_s"]
            run.driver_cpu_s += a["cpu_client_s"]
            run.rss.append((run.sent, a["gateway_rss_mib"]))
        print("  soak: " + ", ".join(f"{k} {v.sent:,}" for k, v in runs.items()), file=sys.stderr)
    common = min(r.sent for r in runs.values())
    table: list[tuple[str, dict[str, Any]]] = [
        ("authorizations in the soak", {k: r.done for k, r in runs.items()}),
        ("gateway RSS before the soak (MiB)", {k: r.at(0) for k, r in runs.items()}),
        (f"gateway RSS after {warm:,} (warm-up) (MiB)", {k: r.at(warm) for k, r in runs.items()}),
        ("gateway RSS after the soak (MiB)", {k: r.rss[-1][1] for k, r in runs.items()}),
        (GROWTH, {k: r.growth(warm, r.sent) for k, r in runs.items()}),
        (LATE, {k: r.growth(max(warm, r.sent // 2), r.sent) for k, r in runs.items()}),
        (
            f"gateway RSS growth per 1,000 from {warm:,} to {common:,}, both sides (MiB)",
            {k: r.growth(warm, common) for k, r in runs.items()},
        ),
        (
            f"gateway RSS at every {args.soak_every:,} authorizations and at the end (MiB)",
            {
                k: [round(m, 1) for d, m in r.rss if d % args.soak_every == 0 or d == r.sent][1:]
                for k, r in runs.items()
            },
        ),
        (
            "CPU per authorization in the soak, gateway and operators (ms)",
            {
                k: round(1000 * r.network_cpu_s / r.done, 3) if r.done else None
                for k, r in runs.items()
            },
        ),
        (
            "soak driver CPU per authorization (ms)",
            {
                k: round(1000 * r.driver_cpu_s / r.done, 3) if r.done else None
                for k, r in runs.items()
            },
        ),
        (
            "soak throughput (/s)",
            {k: round(r.done / r.elapsed_s, 1) if r.elapsed_s else None for k, r in runs.items()},
        ),
        ("soak requests that failed", {k: r.failed for k, r in runs.items()}),
    ]
    rows = []
    for figure, values in table:
        row: dict[str, Any] = {"setup": f"{MAIN}: soak", "figure": figure}
        rss = figure.startswith("gateway RSS") and "growth" not in figure
        row.update(_rounded(values) if rss else values)
        rows.append(_with_ratio(row))
    for k, r in runs.items():
        if r.denied:
            notes.append(f"The {k} soak saw {r.denied} denials among the answers it decoded.")
    return rows, notes


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in values.items()}


def profile(args: Any) -> None:
    """``--profile DIR``: the current tree's network alone, every process under a CPU-time
    cProfile (``_profile/sitecustomize.py``) during ``--requests`` concurrent authorizations;
    prints the top functions of each process, per authorization, and leaves the ``.prof``
    files in DIR (``python -m pstats DIR/gateway-<pid>.prof`` to explore one)."""
    out = args.profile.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.prof"):
        old.unlink()
    site = f"{ROOT}{os.pathsep}{PROFILE_SITE}"
    env = {"PYTHONPATH": site, "AGENTGUARD_PROFILE_DIR": str(out)}
    side = Side("current", ROOT, env | {"AGENTGUARD_PROFILE_MODE": args.profile_mode})
    operators = (args.operators or [3])[0]
    params = FULL_13 if args.profile_keys == 13 else TWO_CHECKS
    try:
        side.open()
        hosted = {"hosts": 1} if args.hosted == "only" else {}
        answer = side.ask(
            "start", operators=operators, threshold=THRESHOLD, params=[params], **hosted
        )
        started = side.ask("profile", action="start")
        loaded = side.ask("concurrent", n=args.requests, concurrency=args.concurrency, client=0)
        side.ask("profile", action="stop")
    finally:
        side.close()
    if answer is None or started is None or loaded is None or not loaded["n"]:
        sys.exit("profiling failed: " + "; ".join(side.errors))
    n = loaded["n"]
    print(
        f"{n} authorizations, {operators} operators"
        f"{' on one host' if args.hosted == 'only' else ''}, agent_spend with "
        f"{'all 13 keys' if args.profile_keys == 13 else 'two checks'}, "
        f"{args.concurrency} concurrent clients, under the profiler ({args.profile_mode}, "
        "which adds its own cost)."
    )
    print(
        "CPU per authorization by process (ms, /proc): "
        + ", ".join(f"{role} {1000 * s / n:.3f}" for role, s in loaded["cpu_s"].items())
    )
    roles = {int(pid): role for pid, role in started["roles"].items()}
    roles[started["pids"][0]] = "client"
    for pid in sorted(roles, key=lambda pid: (roles[pid] != "client", roles[pid])):
        path = next(out.glob(f"*-{pid}.prof"), None)
        if path is not None:
            print()
            print(top_functions(path, roles[pid], n, args.top))


def top_functions(path: Path, role: str, n: int, top: int) -> str:
    """The ``top`` functions of one profile by their own CPU time, per authorization."""
    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    total = sum(tt for _, _, tt, _ in (v[:4] for v in stats.values()))
    lines = [
        f"== {role} ({path.name}): {1000 * total / n:.3f} ms of CPU per authorization profiled",
        f"{'own ms':>8} {'with callees':>12} {'calls':>7}  function (per authorization)",
    ]
    ranked = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    for (file, line, name), (_, calls, tt, ct, _) in ranked:
        where = _short(file)
        lines.append(
            f"{1000 * tt / n:8.4f} {1000 * ct / n:12.4f} {calls / n:7.2f}  {where}:{line}({name})"
        )
    return "\n".join(lines)


def _short(file: str) -> str:
    """A profiled function's file, from its package (the standard library's, a dependency's
    or this checkout's)."""
    if file.startswith(f"{ROOT}/"):
        return file.removeprefix(f"{ROOT}/")
    return re.sub(r"^.*/lib/python3\.\d+/(site-packages/)?", "", file)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--baseline", default=BASELINE, help="git ref to compare with, or 'none'")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sequential", type=int, default=100, help="authorizations per round")
    p.add_argument("--requests", type=int, default=600, help="concurrent, per round")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument(
        "--interleaved-rounds",
        type=int,
        default=3,
        help="rounds of this checkout's networks of each operator count at once (0: none)",
    )
    p.add_argument("--soak", type=int, default=100_000, help="the current side's soak")
    p.add_argument("--baseline-soak", type=int, default=20_000, help="the baseline's soak")
    p.add_argument("--soak-warmup", type=int, default=5_000, help="growth is counted after it")
    p.add_argument("--soak-every", type=int, default=10_000, help="RSS read at each multiple")
    p.add_argument("--soak-connections", type=int, default=32)
    p.add_argument("--soak-budget", type=float, default=480.0, help="seconds, both sides")
    p.add_argument("--operators", type=int, nargs="*", default=None, help="groups to run")
    p.add_argument("--profile", type=Path, default=None, metavar="DIR", help="profile instead")
    p.add_argument("--profile-keys", type=int, choices=(2, 13), default=2)
    p.add_argument(
        "--profile-mode",
        choices=("cprofile", "sample"),
        default="cprofile",
        help="cprofile: exact calls, small functions inflated; sample: CPU-time samples",
    )
    p.add_argument("--top", type=int, default=20, help="functions shown per process")
    p.add_argument(
        "--hosted",
        choices=("with", "only", "none"),
        default="with",
        help=f"the setup {HOSTED!r}: with the others, alone, or not",
    )
    args = p.parse_args()
    stop_on_sigterm()
    if args.quick:
        args.rounds, args.sequential, args.requests, args.concurrency = 1, 10, 40, 8
        args.soak, args.baseline_soak, args.soak_warmup, args.soak_every = 300, 200, 100, 100
        args.soak_connections = 4
        args.operators = args.operators or [3]
    if args.profile is not None:
        profile(args)
        return
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
        split: list[dict[str, Any]] = []
        for operators, setups in GROUPS:
            if (args.operators and operators not in args.operators) or args.hosted == "only":
                continue
            try:
                for s in sides:
                    s.open()
                measured, parts = run_group(sides, operators, setups, args)
                rows += measured
                split += parts
                if operators == 3 and args.soak > 0:
                    soaked, said = soak(sides, args)
                    rows += soaked
                    notes += said
            finally:
                for s in sides:
                    s.close()
        if args.hosted != "none" and (not args.operators or 3 in args.operators):
            try:
                for s in sides:
                    s.open()
                measured, parts = run_group(sides, 3, [("2 checks", TWO_CHECKS)], args, hosts=1)
                rows += measured
                split += parts
            finally:
                for s in sides:
                    s.close()
            notes.append(
                f"{HOSTED}: the current side's 3 operator keys in one operator host process "
                "(one evaluation, one hop per authorization); a baseline without operator "
                "hosts runs its ordinary network of 3 separate operators there."
            )
        for s in sides:
            if s.imported and Path(s.imported).parent != s.tree:
                s.errors.append(f"its processes imported agentguard from {s.imported}")
            notes += [f"{s.label} failed: {e}." for e in s.errors]
    notes.append(
        f"{args.rounds} rounds of {args.sequential} sequential and {args.requests} concurrent "
        f"authorizations ({args.concurrency} clients) per side and setup, half as many with 5 "
        "and 7 operators. The CPU figures under load are those of the median round; the "
        "per-process split below is that round's, so its parts add up to the all-process "
        "figure."
    )
    if args.soak > 0:
        notes.append(
            f"Soak: the current side {args.soak:,} authorizations, the baseline "
            f"{args.baseline_soak:,} (enough to show its slope), "
            f"in alternating chunks while both run, through a lean keep-alive driver over "
            f"{args.soak_connections} connections that sends the SDK's own request; growth is "
            f"counted after the first {args.soak_warmup:,} (warm-up: pools, caches, allocator)."
        )
    same_run, said = interleaved(args) if args.hosted != "only" else ({}, [])
    notes += said
    labels = [s.label for s in sides]
    tables = {"cpu_split": split, "scaling": scaling(rows, labels, same_run)}
    emit(args.json, "network", started, rows, " ".join(notes), tables)


if __name__ == "__main__":
    main()
