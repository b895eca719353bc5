"""Run every benchmark and write ``docs/performance.md`` and ``docs/performance.json``.

    .venv/bin/python benchmarks/report.py [--quick] [--only NAME ...] [--out docs]
    .venv/bin/python benchmarks/report.py --render       # re-render docs/performance.json

``make bench`` runs this. Each ``benchmarks/bench_*.py`` runs in its own process with
``--json`` (and ``--quick`` if given); a benchmark that crashes or times out is reported as
such and the others still run (the command then exits 1 after writing the report). Nothing
here judges a number by failing: targets are printed as met or missed.

Every section of the Markdown says what is measured, the command, a table, and a reading
that is either computed from the figures of this run or a fixed explanation without figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import ROOT, machine

HERE = Path(__file__).resolve().parent
X = "\N{MULTIPLICATION SIGN}"
Report = dict[str, Any]
Rows = list[dict[str, Any]]


@dataclass
class Section:
    """How one benchmark is run and shown."""

    name: str
    title: str
    what: str
    args: list[str] = field(default_factory=list)  # the full run's arguments
    timeout: float = 900.0
    columns: list[tuple[str, str]] | None = None  # (row key, header); None: every scalar key
    reading: Callable[[Rows], str] | None = None
    fixed: str = ""  # a fixed explanation, no figures
    tables: Callable[[Report], str] | None = None  # more tables from the report, after rows


def _f(x: Any, digits: int = 2) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:,.{0 if abs(x) >= 1000 else 1 if abs(x) >= 100 else digits}f}"
    if isinstance(x, list):
        return ", ".join(_f(v) for v in x)
    return str(x).replace("|", "\\|")


def _met(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "**missed**")


def _find(rows: Rows, **match: Any) -> dict[str, Any] | None:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


# -- readings computed from this run's figures ------------------------------------------------


def _net(rows: Rows, setup: str, figure: str, side: str = "current") -> float | None:
    row = _find(rows, setup=setup, figure=figure)
    value = row.get(side) if row else None
    return value if isinstance(value, int | float) else None


MAIN = "3 operators, 2 checks"
HOSTED = "3 operators on 1 host, 2 checks"
P50, P99 = "sequential p50 (ms)", "sequential p99 (ms)"
RATE = "throughput, concurrent clients (/s)"
CPU = "CPU per authorization under load, all processes (ms)"
GROWTH = "gateway RSS growth per 1,000 authorizations after warm-up (MiB)"
LATE = "gateway RSS growth per 1,000 over the soak's second half (MiB)"
SOAKED = "authorizations in the soak"
SOAK = f"{MAIN}: soak"


def _asked(operators: int) -> int:
    """Operators the gateway asks first: a two-thirds quorum (66 %), rounded up."""
    return -(-operators * 66 // 100)


def _rss(rows: Rows, side: str) -> str:
    before = _net(rows, SOAK, "gateway RSS before the soak (MiB)", side)
    after = _net(rows, SOAK, "gateway RSS after the soak (MiB)", side)
    growth, soaked = _net(rows, SOAK, GROWTH, side), _net(rows, SOAK, SOAKED, side)
    late = _net(rows, SOAK, LATE, side)
    if soaked is None:
        return "—"
    return (
        f"RSS {_f(before, 1)} → {_f(after, 1)} MiB over {_f(soaked)}; per 1,000: "
        f"{_f(growth, 3)} MiB after warm-up, {_f(late, 3)} MiB over the second half"
    )


def network_targets(
    rows: Rows, scaling: Rows | None = None
) -> list[tuple[str, str, str, bool | None]]:
    """(target, measured, baseline, met) for the authorization network's targets. The
    scaling targets are judged on ``scaling``'s same-run ratio when it has one: the setups'
    own figures were measured minutes apart, and an evaluation's CPU follows how busy the
    machine is then."""
    out: list[tuple[str, str, str, bool | None]] = []
    # The targets for 3 operator processes, then for the same 3 keys in one operator host
    # (one evaluation, each key signing; a deployment's choice with a trust trade, reported
    # beside, never instead of, the separate processes).
    for setup, where in ((MAIN, ""), (HOSTED, ", 3 operator keys on one host")):
        if setup == HOSTED and _find(rows, setup=HOSTED, figure=CPU) is None:
            continue
        for label, figure, limit, above, unit in (
            ("sequential authorize p50 ≤ 2 ms", P50, 2.0, False, "ms"),
            ("sequential authorize p99 ≤ 6 ms", P99, 6.0, False, "ms"),
            ("≥ 1,500 authorizations/s, 32 concurrent clients", RATE, 1500.0, True, "/s"),
            ("CPU per authorization ≤ 1.3 ms, all processes", CPU, 1.3, False, "ms"),
        ):
            value = _net(rows, setup, figure)
            met = None if value is None else (value >= limit if above else value <= limit)
            base = _net(rows, setup, figure, "baseline")
            out.append((label + where, f"{_f(value)} {unit}", f"{_f(base)} {unit}", met))
    growth, soaked = _net(rows, SOAK, GROWTH), _net(rows, SOAK, SOAKED)
    late = _net(rows, SOAK, LATE)
    out.append(
        (
            "gateway memory flat under a 100,000-authorization soak (all 100,000 answered; "
            "< 0.1 MiB per 1,000 after warm-up and < 0.05 over the second half)",
            _rss(rows, "current"),
            _rss(rows, "baseline"),
            None
            if growth is None or late is None or soaked is None
            else growth < 0.1 and late < 0.05 and soaked >= 100_000,
        )
    )
    for n in (5, 7):
        linear = _asked(n) / _asked(3)
        found = []
        for side in ("current", "baseline"):
            three, more = (
                _net(rows, MAIN, CPU, side),
                _net(rows, f"{n} operators, 2 checks", CPU, side),
            )
            found.append(more / three if more and three else None)
        now, base = found
        measured = f"{_f(now)}{X} of 3 operators'" if now else "—"
        same = _find(scaling or [], setup=f"{n} operators, 2 checks")
        ratio = same.get("current, same run: / 3 operators") if same else None
        if ratio is not None:
            measured = f"{_f(ratio)}{X} of 3 operators', same run ({_f(now)}{X} measured apart)"
            now = ratio
        out.append(
            (
                f"CPU per authorization with {n} operators at most linear in the operators "
                f"asked ({_asked(n)} against {_asked(3)}: {_f(linear)}{X})",
                measured,
                f"{_f(base)}{X}" if base else "—",
                None if now is None else now <= linear,
            )
        )
    return out


def network_reading(rows: Rows) -> str:
    parts = []
    setups = [r["setup"] for r in rows if not r["setup"].endswith("soak")]
    for setup in dict.fromkeys(setups):
        p50, rate, cpu = (_find(rows, setup=setup, figure=f) or {} for f in (P50, RATE, CPU))
        if p50.get("ratio") is not None:
            parts.append(
                f"{setup}: p50 {_f(p50.get('ratio'))}{X}, throughput {_f(rate.get('ratio'))}{X}, "
                f"CPU per authorization {_f(cpu.get('ratio'))}{X} the baseline's"
            )
        elif cpu.get("current") is not None:
            parts.append(f"{setup}: CPU per authorization {_f(cpu.get('current'))} ms")
    text = "Current against the baseline, same run: " + "; ".join(parts) + "." if parts else ""
    three, seven = _net(rows, MAIN, CPU), _net(rows, "7 operators, 2 checks", CPU)
    if three and seven:
        text += (
            f" From 3 to 7 operators the CPU per authorization grows {_f(seven / three)}{X} "
            f"(the operators asked first grow {_f(_asked(7) / _asked(3))}{X}, the network "
            f"{_f(7 / 3)}{X})."
        )
    return text


def network_tables(report: Report) -> str:
    """Where the CPU goes (each process, per authorization) and how it scales with the
    operators asked: ``bench_network.py``'s ``cpu_split`` and ``scaling`` tables."""
    out = []
    split = report.get("cpu_split") or []
    if split:
        out += [
            "CPU per authorization under load by process (ms; the median round's, so the "
            "parts add up to the all-process figure):",
            "",
            table(split, None),
            "",
        ]
    scaling = report.get("scaling") or []
    if scaling:
        out += [
            "Cost against the operators asked: each setup's CPU per authorization relative to "
            "3 operators with two checks, beside the ratio of operators a two-thirds quorum "
            "asks first (the linear bound); signatures per attestation as measured:",
            "",
            table(scaling, None),
            "",
        ]
    return "\n".join(out).rstrip()


def side_ratio_reading(key: str, base_index: int, what: str) -> Callable[[Rows], str]:
    def reading(rows: Rows) -> str:
        if len(rows) <= base_index:
            return ""
        base = rows[base_index]
        return "Relative to {}: {}.".format(
            base.get("case", what),
            "; ".join(f"{r['case']} {_f(r[key])}{X}" for r in rows if r is not base and key in r),
        )

    return reading


def ledger_reading(rows: Rows) -> str:
    full = _find(rows, case="ledger reserve + commit in full")
    bare = next((r for r in rows if r["case"].startswith("bare")), None)
    if not full or not bare:
        return ""
    rate = full["pairs_per_s"]
    return (
        f"The ledger reaches {_f(rate / bare['pairs_per_s'])}{X} the bare two-transaction "
        f"ceiling of the same disk; target ≥ 5,000 pairs/s: {_met(rate >= 5000)}."
    )


def wallet_reading(rows: Rows) -> str:
    guarded = _find(rows, case="guarded verify + reserve + sign + commit")
    if not guarded:
        return ""
    ratio = guarded["x_bare"]
    return f"Guarded / bare: {_f(ratio)}{X}; target ≤ 2{X}: {_met(ratio <= 2)}."


def backends_reading(rows: Rows) -> str:
    parts = []
    for procs in sorted({r["processes"] for r in rows}):
        ratios = [
            f"{r['backend']} {_f(r['x_sqlite'])}{X}"
            for r in rows
            if r["processes"] == procs and r["backend"] != "sqlite"
        ]
        parts.append(f"{procs} process{'es' if procs > 1 else ''}: " + ", ".join(ratios))
    return "Throughput relative to SQLite, " + "; ".join(parts) + "."


def policy_reading(rows: Rows) -> str:
    two = next((r for r in rows if r["case"].startswith("agent_spend (2")), None)
    full = next((r for r in rows if r["case"].startswith("agent_spend (all")), None)
    fresh = next((r for r in rows if r["case"].startswith("rejected")), None)
    if not two or not full:
        return ""
    text = f"All 13 keys cost {_f(full['cpu_us'] / two['cpu_us'])}{X} two checks."
    if fresh:
        text += f" Compiling per call would cost {_f(fresh['cpu_us'] / two['cpu_us'])}{X} more."
    return text


def bls_reading(rows: Rows) -> str:
    local = next((r for r in rows if "py_ecc" in r["step"]), None)
    chain = next((r for r in rows if "precompile" in r["step"]), None)
    if not local or not chain or not chain["cpu_ms"]:
        return ""
    return f"The precompile pairing costs 1/{_f(local['cpu_ms'] / chain['cpu_ms'], 0)} of py_ecc's CPU."


X402_LAYER = "agentguard X402Auth, authorization excluded"
X402_AUTHORIZED = ("authorization included, official server", "agentguard X402Auth")


def x402_targets(rows: Rows) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for the x402 client's two targets, from this run's ratios."""
    out: list[tuple[str, str, bool | None]] = []
    layer = _find(rows, client=X402_LAYER)
    if layer and "layer_ratio_median" in layer:
        ratio = layer["layer_ratio_median"]
        out.append(
            (
                f"x402 payment layer, authorization excluded ≤ 0.5{X} the official client's",
                f"{_f(ratio)}{X} ({_f(layer['layer_cpu_us_median'])} µs)",
                ratio <= 0.5,
            )
        )
    authorized = _find(rows, setting=X402_AUTHORIZED[0], client=X402_AUTHORIZED[1])
    if authorized and "ratio_median" in authorized:
        ratio = authorized["ratio_median"]
        out.append(
            (
                f"x402 client CPU, authorization included ≤ 1.2{X} the official client's",
                f"{_f(ratio)}{X} ({_f(authorized['cpu_us_median'])} µs)",
                ratio <= 1.2,
            )
        )
    return out


def x402_reading(rows: Rows) -> str:
    """The two targets, computed from this run's ratios against the official client."""
    found = x402_targets(rows)
    return " ".join(f"{label}: {value}, {_met(met)}." for label, value, met in found)


SECTIONS = [
    Section(
        "network",
        "Authorization through the reference network, side by side with the baseline",
        "A gateway and its operator processes on loopback with a two-thirds quorum, for this "
        "checkout and for the baseline ref (its `agentguard/` unpacked from git), both up at "
        "once and measured in alternating rounds: 3 operators with `agent_spend` configured "
        "with two checks and with all 13 keys, 5 and 7 operators with two checks. Latency from "
        "one sync client; throughput from 32 concurrent async clients; CPU time per "
        "authorization summed over every process (client, gateway, operators) and split by "
        "process. Then a soak on the 3-operator networks through a lean keep-alive driver "
        "sending the SDK's own request, with the gateway's RSS before, along the way and after. "
        "`--profile DIR` prints each process's hottest functions instead.",
        columns=[
            ("setup", "setup"),
            ("figure", "figure"),
            ("baseline", "baseline"),
            ("current", "current"),
            ("ratio", "current / baseline"),
        ],
        reading=network_reading,
        tables=network_tables,
        fixed=(
            "CPU per authorization over all processes is the figure to compare across runs: "
            "wall-time latency and throughput depend on what else the machine is doing, while "
            "the CPU each authorization costs does not (much). Every process shares the same "
            "cores, so throughput is bounded by the cores divided by that CPU figure. The soak "
            "shows whether the gateway keeps per-authorization state in memory."
        ),
        timeout=1800,
    ),
    Section(
        "actions",
        "Guarded offchain calls",
        "What guarding an offchain call costs against the reference network (3 operators, "
        "2-of-3): `authorize` alone, the whole `run_call`, and `run_call(shadow=True)`, "
        "interleaved round by round. CPU is the client process's own.",
        reading=side_ratio_reading("x_authorize", 0, "authorize"),
        fixed=(
            "The difference between `authorize` and `run_call` is the local ledger (hold, bind, "
            "mark signed, commit: four SQLite writes) and the gateway commit round trip. Shadow "
            "mode asks the gateway's simulate and signs nothing."
        ),
    ),
    Section(
        "wallet",
        "Guarded wallet",
        "The same EIP-1559 transaction signed bare by eth-account and through the guard "
        "(verify a 2-of-3 attestation, ledger reserve on a SQLite file, mark signed, sign, "
        "commit), alternating in one run; authorizer round trip and chain excluded.",
        args=["--n", "2000"],
        reading=wallet_reading,
        fixed=(
            "The guard stays close to bare signing because the signer encodes EIP-1559 itself "
            "(pinned byte for byte against eth-account), which saves what eth-account spends "
            "validating and re-formatting the transaction dict."
        ),
    ),
    Section(
        "ledger",
        "Local ledger (SQLite)",
        "Reserve + commit pairs per second on a SQLite file in WAL mode, one agent whose "
        "windows hold every spend (the per-quarter rates show a reserve does not slow down as "
        "a window fills), and the same disk's bare ceiling for two one-row write transactions.",
        args=["--n", "20000"],
        reading=ledger_reading,
        fixed=(
            "Two write transactions per pair are inherent: a reservation must be durable "
            "before the signature exists, and the commit after it."
        ),
    ),
    Section(
        "ledger_backends",
        "Shared ledgers: SQLite, Redis, PostgreSQL",
        "Reserve + commit pairs on ONE agent's budget by one process, then by 8 processes at "
        "once, every backend side by side in one run, against real servers on 127.0.0.1 "
        "started by the benchmark (Redis with its append-only file, `appendfsync always`, which "
        "the ledger requires; "
        "PostgreSQL with fsync on; `postgres-async` is the same server with "
        "`synchronous_commit=off` for this client). CPU per pair: the agent processes' own "
        "(client) and the server's whole process tree (SQLite has no server).",
        args=["--n", "2000", "--procs", "8"],
        reading=backends_reading,
        fixed=(
            "SQLite is an embedded call with no round trip, so on one host it stays fastest. "
            "Redis costs three round trips per pair (the reserve script; the commit's read and "
            "its compare-and-set script); PostgreSQL ten (reserve and commit are each BEGIN, "
            "three statements, COMMIT), and with fsync on it also waits for the disk at each "
            "COMMIT. All processes here share ONE budget, which PostgreSQL serializes on an "
            "advisory lock and Redis runs one script at a time; separate agents proceed in "
            "parallel. What the shared backends buy is one budget and one used-attestation "
            "record across hosts, not speed. The concurrency proof is a test, not a benchmark: "
            "`tests/ledger/test_ledger_race.py` races 8 processes of 16 threads for 10,000 "
            "reservations at one cap on every backend and checks the cap, the totals and each "
            "attestation's single use exactly."
        ),
    ),
    Section(
        "x402",
        "x402 client",
        "Client-side cost per paid request, agentguard's `X402Auth` against the official "
        "`x402` client in the same run.",
        reading=x402_reading,
        fixed=(
            "Targets: the payment layer's own cost (authorization excluded) at most half the "
            "official client's; with authorization included, the client process's CPU per "
            "paid request at most 1.2 times the official client's, the network's processes counted "
            "separately. agentguard does more per payment than the official client (an "
            "attestation verified, a ledger reservation and its settlement, an auditable "
            "receipt)."
        ),
    ),
    Section(
        "operator_eval",
        "An operator's evaluation, in process",
        "One operator's CPU per task without HTTP: the gateway's request bytes parsed, the "
        "registration named by hash, the policy input built, the Rego query, the digest, the "
        "signature and the encoded answer (`agent_spend` with two checks); alone, in a batch "
        "of 8, and with the policy's answer given (all but the Rego input and query), then "
        "the same work split into its parts.",
        fixed=(
            "The Rego input and query (rego-cpp) are most of an evaluation; what an operator "
            "adds around them is the figure without them."
        ),
    ),
    Section(
        "verify",
        "The client's parse and verification of a gateway answer",
        "What the client does once the gateway's `newt_createTask` answer is decoded: "
        "`_gateway._parse_task` on a reference-network answer (2-of-3 ECDSA) and "
        "`Verifier.verify` for the payment intent the client itself built.",
        fixed=(
            "Two ECDSA recoveries are most of the verification; every binding check (intent, "
            "policy client, policy id, chain, expiry, tier, distinct registered operators) "
            "runs on every answer."
        ),
    ),
    Section(
        "policy",
        "Policy engine",
        "One `PolicyEngine.evaluate` per bundled policy after the first (compile) call: "
        "wall-clock p50/p99 and thread CPU time per call, the compile cost, and the "
        "alternatives the engine's design rejected.",
        args=["--n", "300"],
        reading=policy_reading,
        fixed=(
            "Compiled bundles are cached per code hash and parameters, so the compile cost is "
            "paid once per policy client; every operator evaluates every intent it is asked."
        ),
    ),
    Section(
        "bls",
        "Newton BLS certificate verification",
        "Cost of verifying one Newton BN254 certificate, piece by piece, and the pairing check "
        "by each backend this machine can run (median ms per call; anvil on loopback).",
        args=["--n", "20"],
        reading=bls_reading,
        fixed=(
            "The pairing goes to the chain's precompile through the configured RPC (already "
            "trusted for the operator table, so no new trust). `mclbn256` uses a different "
            "BN254 curve and `py-eth-pairing` has no wheel for this Python; see docs/newton.md."
        ),
    ),
]
BY_NAME = {s.name: s for s in SECTIONS}


def _script(name: str) -> Path:
    return HERE / f"bench_{name}.py"


def discover() -> list[Section]:
    """Every ``bench_*.py``: the known ones in their order, any new one after them."""
    found = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    known = [s for s in SECTIONS if s.name in found]
    extra = [Section(n, n, f"`benchmarks/bench_{n}.py`.") for n in found if n not in BY_NAME]
    return known + extra


def run(section: Section, work: Path, quick: bool) -> tuple[Report | None, str]:
    """Run one benchmark; (its report, "") or (None, why it has none)."""
    out = work / f"{section.name}.json"
    args = ["--quick"] if quick else section.args
    cmd = [sys.executable, str(_script(section.name)), *args, "--json", str(out)]
    print(f"== {section.name}: {' '.join(cmd[1:])}", flush=True)
    began = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    timer = threading.Timer(section.timeout, proc.terminate)
    timer.start()
    last: deque[str] = deque(maxlen=3)
    assert proc.stdout is not None
    for line in proc.stdout:  # shown as it comes: a long benchmark says how far it is
        print("   " + line.rstrip(), flush=True)
        last.append(line.strip())
    timer.cancel()
    took = time.monotonic() - began
    if proc.wait() != 0 or not out.exists():
        if took >= section.timeout:
            return None, f"was stopped after {section.timeout:.0f} s"
        said = " / ".join(last).replace(str(out), "PATH")
        return None, f"exited with status {proc.returncode}: {said}"
    report: Report = json.loads(out.read_text())
    report["seconds"] = round(took, 1)
    print(f"   {took:.0f} s", flush=True)
    return report, ""


# -- rendering ----------------------------------------------------------------------------------


def table(rows: Rows, columns: list[tuple[str, str]] | None) -> str:
    if not rows:
        return "(no rows)"
    if columns is None:
        keys: list[str] = []
        for row in rows:
            keys += [k for k, v in row.items() if k not in keys and not isinstance(v, dict)]
        columns = [(k, k.replace("_", " ")) for k in keys]
    lines = [
        "| " + " | ".join(h for _, h in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(_f(row.get(k)) for k, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


def render_section(section: Section, report: Report | None, failure: str) -> str:
    out = [f"## {section.title}", "", section.what, ""]
    if report is None:
        out += [
            f"**Not measured in this run**: `benchmarks/bench_{section.name}.py` {failure}.",
            "",
        ]
        if section.fixed:
            out += [section.fixed, ""]
        return "\n".join(out)
    m = report.get("machine", {})
    seconds = f", {report['seconds']:.0f} s" if "seconds" in report else ""
    out += [
        f"`{report['command']}` (run {m.get('date', '?')}; load average "
        f"{m.get('load_start', '?')} at the start, "
        f"{m.get('load_end', '?')} at the end{seconds})",
        "",
        table(report["rows"], section.columns),
        "",
    ]
    extra = section.tables(report) if section.tables is not None else ""
    if extra:
        out += [extra, ""]
    if report.get("notes"):
        out += [report["notes"], ""]
    computed = ""
    if section.reading is not None:
        try:
            computed = section.reading(report["rows"])
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            computed = ""
    reading = " ".join(t for t in (computed, section.fixed) if t)
    if reading:
        out += [f"Reading it: {reading}", ""]
    return "\n".join(out)


def targets(reports: dict[str, Report]) -> str:
    """Every target with what this run measured, the baseline's figure from the same run
    where the benchmark measures one, and the command that measured it."""
    lines = ["| target | measured | baseline, same run | | command |", "|---|---|---|---|---|"]

    def add(name: str, label: str, value: str, base: str, met: bool | None) -> None:
        command = reports[name].get("command", "")
        lines.append(f"| {label} | {value} | {base} | {_met(met)} | `{command}` |")

    network = reports.get("network")
    targets = network_targets(network["rows"], network.get("scaling")) if network else []
    for label, value, base, met in targets:
        add("network", label, value, base, met)
    wallet = reports.get("wallet")
    guarded = (
        _find(wallet["rows"], case="guarded verify + reserve + sign + commit") if wallet else None
    )
    if guarded:
        ratio = guarded["x_bare"]
        add("wallet", f"guarded wallet ≤ 2{X} bare eth-account", f"{_f(ratio)}{X}", "", ratio <= 2)
    x402 = reports.get("x402")
    for label, value, met in x402_targets(x402["rows"]) if x402 else ():
        add("x402", label, value, "", met)
    ledger = reports.get("ledger")
    full = _find(ledger["rows"], case="ledger reserve + commit in full") if ledger else None
    if full:
        rate = full["pairs_per_s"]
        add("ledger", "ledger reserve + commit ≥ 5,000 pairs/s", f"{_f(rate)} /s", "", rate >= 5000)
    return "\n".join(lines) if len(lines) > 2 else ""


def render(
    reports: dict[str, Report], failures: dict[str, str], sections: list[Section], overall: Report
) -> str:
    m = overall["machine"]
    scope = (
        "Sections re-run with `--only` carry their own run date; the others keep the figures "
        "of the run they came from. "
        if overall.get("partial")
        else "Every figure below comes from this one run. "
    )
    quick = " (`--quick`: tiny sizes, the figures mean nothing)" if overall.get("quick") else ""
    out = [
        "# Performance",
        "",
        "Generated by `make bench` (`benchmarks/report.py`); do not edit by hand, rerun it. "
        + scope
        + "Side-by-side figures were measured interleaved in one run. The figures are also in "
        "`docs/performance.json`. Benchmarks never fail on a number: a missed target is "
        "reported as missed.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Python "
        f"{m['python']}, {m['platform']}. Run {m['date']} at commit `{overall['commit'][:12]}`"
        f"{' (with uncommitted changes)' if overall.get('dirty') else ''}; load average "
        f"{m['load_start']} at the start, {m['load_end']} at the end; "
        f"{overall['seconds'] / 60:.0f} minutes in all{quick}. "
        "Every process (clients, gateway, operators, database servers) shares these cores, "
        "and other work on the machine shares them too: compare ratios and CPU times, which "
        "vary less than wall times.",
        "",
    ]
    for rerun in overall.get("reruns", []):
        out += [
            f"Re-run since with `--only {' '.join(rerun['only'])}`: {rerun['date']} at commit "
            f"`{rerun['commit'][:12]}`{' (with uncommitted changes)' if rerun['dirty'] else ''}"
            + (
                f" on {rerun['cpu']}, load average {rerun['load_start']} at the start, "
                f"{rerun['load_end']} at the end."
                if "cpu" in rerun
                else "."
            ),
            "",
        ]
    summary = targets(reports)
    if summary:
        out += ["## Targets", "", summary, ""]
    for section in sections:
        out.append(
            render_section(
                section, reports.get(section.name), failures.get(section.name, "did not run")
            )
        )
    return "\n".join(out).rstrip() + "\n"


def _commit() -> tuple[str, bool]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True
        ).stdout.strip()

    return git("rev-parse", "HEAD") or "unknown", bool(
        git("status", "--porcelain", "--", "agentguard")
    )


def _previous(path: Path) -> Report:
    try:
        data: Report = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny runs (proves they work)")
    p.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="run only these (e.g. network); the others keep "
        "their figures from the existing performance.json",
    )
    p.add_argument("--out", type=Path, default=ROOT / "docs", help="where to write the report")
    p.add_argument(
        "--render", action="store_true", help="run nothing: re-render OUT/performance.json"
    )
    p.add_argument("--keep", type=Path, default=None, help="keep each benchmark's JSON here")
    args = p.parse_args()
    previous = _previous(args.out / "performance.json")
    sections = discover()
    started, began = machine(), time.monotonic()
    commit, dirty = _commit()  # what is measured: the tree as the run starts
    reports: dict[str, Report] = {}
    failures: dict[str, str] = {}
    if args.render or args.only:
        reports = {r["name"]: r for r in previous.get("benchmarks", [])}
        failures = dict(previous.get("failures", {}))
    if not args.render:
        with tempfile.TemporaryDirectory(prefix="agentguard-bench-") as tmp:
            work = args.keep or Path(tmp)
            for section in sections:
                if args.only and section.name not in args.only:
                    continue
                report, failure = run(section, work, args.quick)
                reports.pop(section.name, None)
                failures.pop(section.name, None)
                if report is None:
                    failures[section.name] = failure
                    print(f"   FAILED: {failure}", flush=True)
                else:
                    reports[section.name] = report
    if args.render:
        overall = previous
    elif args.only and previous.get("machine"):
        # the whole run's header stays; the re-run is noted beside it, with its own commit
        overall = previous
        overall["partial"] = True
        overall["reruns"] = [
            *previous.get("reruns", []),
            {
                "only": list(args.only),
                "date": started["date"],
                "commit": commit,
                "dirty": dirty,
                "cpu": started["cpu"],
                "load_start": started["load_start"],
                "load_end": machine()["load_start"],
            },
        ]
    else:
        overall = {
            "command": "make bench" + (" BENCH_ARGS=--quick" if args.quick else ""),
            "machine": {**started, "load_end": machine()["load_start"]},
            "commit": commit,
            "dirty": dirty,
            "quick": args.quick,
            "partial": bool(args.only),
            "seconds": round(time.monotonic() - began, 1),
        }
    overall["benchmarks"] = [reports[s.name] for s in sections if s.name in reports]
    overall["failures"] = failures
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "performance.json").write_text(json.dumps(overall, indent=2) + "\n")
    (args.out / "performance.md").write_text(render(reports, failures, sections, overall))
    print(f"wrote {args.out / 'performance.md'} and performance.json")
    if failures:
        print("benchmarks that did not run: " + ", ".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
