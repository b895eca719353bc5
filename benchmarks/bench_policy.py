"""Policy evaluation cost on this machine (a benchmark, not a test).

Reports, per bundled policy, the cost of one ``PolicyEngine.evaluate`` after the first
(compile) call: wall-clock p50/p99 and CPU time per call (thread CPU time, which stays honest
when the machine is busy), plus the compile cost, and the alternatives the engine's design
rejected (regopy's own ``set_input``, and a fresh ``Interpreter.query`` per call).

``--against REF`` instead compares each bundled policy's Rego as committed at git ``REF`` with
the working tree's, side by side in one process: rounds alternate old and new, and each row
gives the median CPU per ``evaluate`` (input included) and per query alone (the input set
once), old and new, and their ratio.

    .venv/bin/python benchmarks/bench_policy.py [--n 300] [--json PATH] [--quick]
    .venv/bin/python benchmarks/bench_policy.py --against 168247d [--n 200] [--rounds 9]
"""

from __future__ import annotations

import copy
import functools
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from _common import FULL_13, ROOT, TWO_CHECKS, emit, machine, parser

# this checkout's agentguard, not the editable install's (a worktree's .venv is main's: without
# this, "new" was main's Rego, and --against main compared main with itself)
sys.path.insert(0, str(ROOT))

import regopy
from regopy import rego_shared as _rs

from agentguard.policies import Policy, bundled, load
from agentguard.policies._engine import _RESULT, _WASM_KEY, PolicyEngine, _set_input
from agentguard.policies._testkit import erc20, wasm_for


def params_for(name: str) -> dict[str, Any]:
    keys = load(name).params_schema["properties"]
    return {k: v for k, v in FULL_13.items() if k in keys}


def measure(fn: Callable[[], object], n: int) -> dict[str, float]:
    fn()
    wall: list[float] = []
    cpu0 = time.thread_time()
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
    cpu = (time.thread_time() - cpu0) / n
    wall.sort()
    return {
        "p50_us": wall[len(wall) // 2] * 1e6,
        "p99_us": wall[min(len(wall) - 1, int(0.99 * len(wall)))] * 1e6,
        "cpu_us": cpu * 1e6,
    }


def cases() -> list[tuple[str, Policy, dict[str, Any]]]:
    found = [(name, load(name), params_for(name)) for name in bundled() if name != "agent_spend"]
    found.append(("agent_spend (2 checks: cap + recipients)", load("agent_spend"), TWO_CHECKS))
    found.append(("agent_spend (all 13 keys)", load("agent_spend"), FULL_13))
    tiered = {**TWO_CHECKS, "tiers": {"high": {"*": "1000000000000"}}}
    found.append(("agent_spend (2 checks + 1 tier)", load("agent_spend"), tiered))
    return found


def at_commit(policy: Policy, ref: str) -> Policy:
    """``policy`` with the Rego (and includes) its folder had at git ``ref``."""

    def show(path: str) -> str:
        return subprocess.run(
            ["git", "show", f"{ref}:agentguard/policies/{path}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    name = policy.name
    meta = json.loads(show(f"{name}/policy_metadata.json"))
    modules = {"policy.rego": show(f"{name}/policy.rego")}
    pending, seen = list(meta.get("includes", [])), {name}
    while pending:
        included = pending.pop(0)
        if included in seen:
            continue
        seen.add(included)
        listing = subprocess.run(
            ["git", "ls-tree", "--name-only", ref, f"agentguard/policies/{included}/"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        for path in listing:
            if path.endswith(".rego") and "/test" not in path:
                modules[f"{included}/{path.rsplit('/', 1)[1]}"] = show(path.split("policies/")[1])
        pending += json.loads(show(f"{included}/policy_metadata.json")).get("includes", [])
    return Policy(name, meta["entrypoint"], modules, policy.params_schema, policy.description)


def compare(ref: str, n: int, rounds: int) -> list[dict[str, Any]]:
    """Old (``ref``) and new Rego, alternating rounds; medians of CPU per call."""
    intent = erc20(10_000_000)
    document, wasm = intent.parsed(), wasm_for(intent)
    table = []
    for label, policy, params in cases():
        runs: dict[str, dict[str, list[float]]] = {}
        engines: dict[str, tuple[PolicyEngine, Policy]] = {}
        for side, version in (("old", at_commit(policy, ref)), ("new", policy)):
            engine = PolicyEngine()
            first = engine.evaluate(version, input=document, params=params, wasm=wasm)
            assert first.decision == "allow", (label, side, first)
            engines[side] = (engine, version)
            runs[side] = {"evaluate": [], "query": []}
        for _ in range(rounds):
            for side, (engine, version) in engines.items():
                t0 = time.thread_time()
                for _ in range(n):
                    engine.evaluate(version, input=document, params=params, wasm=wasm)
                runs[side]["evaluate"].append((time.thread_time() - t0) / n * 1e6)
                compiled = next(iter(engine._compiled.values()))
                _set_input(compiled.interpreter, {**document, _WASM_KEY: wasm})
                t0 = time.thread_time()
                for _ in range(n):
                    _rs.rego_free_output(
                        _rs.rego_bundle_query_entrypoint(
                            compiled.interpreter._impl, compiled.bundle._impl, _RESULT
                        )
                    )
                runs[side]["query"].append((time.thread_time() - t0) / n * 1e6)
        row: dict[str, Any] = {"case": label}
        for what in ("evaluate", "query"):
            old, new = (statistics.median(runs[s][what]) for s in ("old", "new"))
            row |= {f"{what}_old_us": round(old, 1), f"{what}_new_us": round(new, 1)}
            row[f"{what}_new_over_old"] = round(new / old, 3)
        table.append(row)
    return table


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--n", type=int, default=300, help="evaluations per row (per round)")
    p.add_argument("--against", metavar="REF", help="compare with the Rego at this git commit")
    p.add_argument("--rounds", type=int, default=9, help="alternating rounds with --against")
    args = p.parse_args()
    n = 5 if args.quick else args.n
    started = machine()
    if args.against:
        rounds = 2 if args.quick else args.rounds
        table = compare(args.against, n, rounds)
        notes = (
            f"Rego at {args.against} (old) against the working tree (new), in one process: "
            f"{rounds} alternating rounds of {n} calls each; medians of thread CPU per call."
        )
        emit(args.json, "policy_old_new", started, table, notes)
        return

    intent = erc20(10_000_000)
    document = intent.parsed()
    wasm = wasm_for(intent)
    rows: dict[str, dict[str, float]] = {}

    for label, policy, params in cases():
        engine = PolicyEngine()
        t0 = time.perf_counter()
        first = engine.evaluate(policy, input=document, params=params, wasm=wasm)
        compile_ms = (time.perf_counter() - t0) * 1e3
        assert first.decision == "allow", (label, first)
        row = measure(
            functools.partial(engine.evaluate, policy, input=document, params=params, wasm=wasm), n
        )
        rows[label] = {**row, "compile_ms": compile_ms}

    # Input conversion: the engine's direct ctypes walk vs regopy's wrappers.
    interpreter = regopy.Interpreter()
    full_input = {**document, _WASM_KEY: copy.deepcopy(wasm)}
    rows["input: engine _set_input"] = measure(lambda: _set_input(interpreter, full_input), n)
    rows["input: regopy set_input"] = measure(lambda: interpreter.set_input(full_input), n)

    # The rejected design: compile on every call (fresh Interpreter + add_data + query).
    spend = load("agent_spend")
    data = json.dumps({"params": TWO_CHECKS, "wasm": wasm})

    def fresh_query() -> object:
        fresh = regopy.Interpreter()
        for module_name, source in spend.modules.items():
            fresh.add_module(module_name, source)
        fresh.add_data_json(data)
        fresh.set_input(document)
        return fresh.query("x := data.agentguard.agent_spend.allow")

    rows["rejected: fresh Interpreter.query per call (agent_spend, 2 checks)"] = measure(
        fresh_query, max(5, n // 30)
    )

    table = [{"case": label, **{k: round(v, 1) for k, v in r.items()}} for label, r in rows.items()]
    notes = f"{n} evaluations per row (the rejected design: {max(5, n // 30)})."
    emit(args.json, "policy", started, table, notes)


if __name__ == "__main__":
    main()
