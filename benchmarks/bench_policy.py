"""Policy evaluation cost on this machine (a benchmark, not a test).

Reports, per bundled policy, the cost of one ``PolicyEngine.evaluate`` after the first
(compile) call: wall-clock p50/p99 and CPU time per call (thread CPU time, which stays honest
when the machine is busy), plus the compile cost, and the alternatives the engine's design
rejected (regopy's own ``set_input``, and a fresh ``Interpreter.query`` per call).

    .venv/bin/python benchmarks/bench_policy.py [--n 300] [--json PATH] [--quick]
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from typing import Any

import regopy
from _common import FULL_13, TWO_CHECKS, emit, machine, parser

from agentguard.policies import Policy, bundled, load
from agentguard.policies._engine import _WASM_KEY, PolicyEngine, _set_input
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


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--n", type=int, default=300, help="evaluations per row")
    args = p.parse_args()
    n = 5 if args.quick else args.n
    started = machine()

    intent = erc20(10_000_000)
    document = intent.parsed()
    wasm = wasm_for(intent)
    rows: dict[str, dict[str, float]] = {}

    cases: list[tuple[str, Policy, dict[str, Any]]] = [
        (name, load(name), params_for(name)) for name in bundled() if name != "agent_spend"
    ]
    cases.append(("agent_spend (2 checks: cap + recipients)", load("agent_spend"), TWO_CHECKS))
    cases.append(("agent_spend (all 13 keys)", load("agent_spend"), FULL_13))

    for label, policy, params in cases:
        engine = PolicyEngine()
        t0 = time.perf_counter()
        first = engine.evaluate(policy, input=document, params=params, wasm=wasm)
        compile_ms = (time.perf_counter() - t0) * 1e3
        assert first.decision == "allow", (label, first)
        row = measure(
            lambda e=engine, p=policy, q=params: e.evaluate(p, input=document, params=q, wasm=wasm),
            n,
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
