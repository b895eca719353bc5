"""What guarding an offchain call costs (a benchmark, not a test).

Starts the reference network (gateway + 3 operator processes, 2-of-3 quorum) on loopback and
measures, side by side in one run and interleaved round by round so machine noise hits all
three alike: ``guard.authorize(call_intent(...))`` alone (gateway + verification), the whole
``guard.run_call`` (local hold in a SQLite ledger, authorize, verify, bind, the call, commit,
gateway commit) and ``run_call(shadow=True)`` (the gateway's simulate, audit, the call). Reports
median wall time and this process's CPU time per operation (the gateway and operators run in
their own processes).

    .venv/bin/python benchmarks/bench_actions.py [--rounds 300] [--json PATH] [--quick]
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from _common import emit, machine, parser

from agentguard import Guard, Ledger, Limits, RateCap, call_intent
from agentguard.network.launcher import ReferenceNetwork

CLIENT = "0x00000000000000000000000000000000000AC710"
AGENT = "0x1111111111111111111111111111111111111111"


CASES = {
    "authorize_only": "guard.authorize(call_intent(...)) (gateway + verification)",
    "run_call": "guard.run_call(...) (SQLite hold, authorize, verify, bind, call, commit)",
    "run_call_shadow": "guard.run_call(..., shadow=True) (the gateway's simulate, audit, call)",
}


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--rounds", type=int, default=300)
    args = p.parse_args()
    if args.quick:
        args.rounds = 5
    started = machine()
    with ReferenceNetwork(operators=3) as net:
        policy_id = net.register_policy_client(
            CLIENT, "agent_spend", {"offchain_calls": ["lookup"]}
        )
        guard = Guard.connect(
            net.url,
            policy_client=CLIENT,
            policy_id=policy_id,
            operators=net.operator_addresses,
            api_key=net.api_key,
        )
        ledger, limits = Ledger(), Limits(rate=[RateCap(3600, 10**9)])
        counter = iter(range(10**9))

        def authorize() -> object:
            return guard.authorize(
                call_intent(AGENT, "lookup", {"q": next(counter)}, chain_id=8453)
            )

        def run_call(shadow: bool = False) -> object:
            return guard.run_call(
                "lookup",
                {"q": next(counter)},
                lambda: "ok",
                agent=AGENT,
                ledger=ledger,
                limits=limits,
                shadow=shadow,
            )

        cases: dict[str, Callable[[], object]] = {
            "authorize_only": authorize,
            "run_call": run_call,
            "run_call_shadow": lambda: run_call(shadow=True),
        }
        for fn in cases.values():  # warm up connections and caches
            for _ in range(20):
                fn()
        samples: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
        for _ in range(args.rounds):
            for name, fn in cases.items():
                samples[name].append(timed(fn))
        guard.close()
    rows = [
        {
            "case": CASES[name],
            "p50_ms": round(statistics.median(s[0] for s in runs), 3),
            "cpu_ms_per_op": round(statistics.fmean(s[1] for s in runs), 3),
        }
        for name, runs in samples.items()
    ]
    for row in rows:
        row["x_authorize"] = round(row["p50_ms"] / rows[0]["p50_ms"], 2)
    notes = f"{args.rounds} rounds; CPU is the client process's own time per operation."
    emit(args.json, "actions", started, rows, notes)


if __name__ == "__main__":
    main()
