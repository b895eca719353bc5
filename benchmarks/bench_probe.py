"""What a policy probe (``agentguard.policies._probe``) costs, by child mechanism (a benchmark).

Rounds interleave: the compile and probe inputs in process (the floor any child pays), the
probe in a fork of this process (what a single-threaded operator or gateway uses), in a fresh
interpreter (the fallback of a process with threads), and in a ``multiprocessing`` forkserver
child (its server started once, outside the timings; its first start is reported apart). Each
probe gets a new code hash (a comment appended), so no verdict is cached.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_probe.py [--rounds 9] [--policy agent_spend]
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import statistics
import time
from typing import Any

from _common import FULL_13

from agentguard.policies import Policy, _probe, canonical_json, load

_serial = itertools.count()


def fresh(policy: Policy) -> Policy:
    modules = dict(policy.modules)
    name = sorted(modules)[0]
    modules[name] += f"\n# probe {next(_serial)}\n"
    return Policy(policy.name, policy.entrypoint, modules, policy.params_schema)


def request(policy: Policy, params: dict[str, Any]) -> bytes:
    return _probe._request(policy, canonical_json({"params": params}))


def in_process(policy: Policy, params: dict[str, Any]) -> None:
    _probe._child(request(policy, params))


def forked(policy: Policy, params: dict[str, Any]) -> None:
    verdict, _ = _probe._forked(request(policy, params), 5.0)
    assert verdict is None, verdict


def spawned(policy: Policy, params: dict[str, Any]) -> None:
    verdict, _ = _probe._spawned(request(policy, params), 5.0)
    assert verdict is None, verdict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--policy", default="agent_spend")
    args = ap.parse_args()
    base = load(args.policy)
    params = FULL_13 if args.policy == "agent_spend" else {}
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["agentguard.policies._probe"])
    started = time.perf_counter()
    with context.Pool(1) as pool:
        pool.apply(in_process, (fresh(base), params))
        first = time.perf_counter() - started

        def via_forkserver(policy: Policy, params: dict[str, Any]) -> None:
            # one child per probe, as a crash needs: a new process each time
            child = context.Process(target=in_process, args=(policy, params))
            child.start()
            child.join()
            assert child.exitcode == 0

        ways = {
            "in process (floor)": in_process,
            "fork": forked,
            "fresh interpreter": spawned,
            "forkserver": via_forkserver,
        }
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.rounds):
            for name, way in ways.items():
                policy = fresh(base)
                t = time.perf_counter()
                way(policy, params)
                times[name].append(time.perf_counter() - t)
    print(
        f"policy {args.policy}, {args.rounds} rounds; forkserver's first start {first * 1e3:.0f} ms"
    )
    for name, seen in times.items():
        print(f"  {name:20s} median {statistics.median(seen) * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
