"""An operator's CPU per evaluation outside the network: where it goes, and A/B against a ref.

Builds an ``Operator`` in process with ``agent_spend`` registered with two checks (a cap and a
recipient list, ``_common.TWO_CHECKS``) and feeds it the requests a gateway sends, as bytes:
the registration named by ``registration_hash`` (the operator got it in full once), no policy
code (held), a fresh task id and amount per request. Each request is parsed as the operator's
RPC server parses it (``parse_request``), evaluated and signed, and its answer encoded
(``encode``): the figures are the operator process's own work per task, minus HTTP.

Default: CPU per request (thread CPU time, median of rounds) for ``newt_evaluateAndSign``, for
``agentguard_evaluateBatch`` of 8 tasks, and for ``newt_evaluateAndSign`` with the policy's
first answer given for every later task (all but building the Rego input and querying it),
then the same work split into its parts.

``--against REF``: the same requests in two child processes, one importing this checkout's
``agentguard``, one importing ``REF``'s (unpacked with ``git archive``), in alternating rounds;
medians and the ratio of CPU per evaluation.

    .venv/bin/python benchmarks/bench_operator_eval.py [--n 400] [--rounds 7] [--quick]
    .venv/bin/python benchmarks/bench_operator_eval.py --against main [--n 400] [--rounds 9]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from _common import (
    PAYEE,
    ROOT,
    TWO_CHECKS,
    USDC,
    ab_rows,
    bound_task,
    emit,
    interleaved,
    machine,
    parser,
    serve_rounds,
)

if "--child" not in sys.argv:  # a child imports the tree its PYTHONPATH names
    sys.path.insert(0, str(ROOT))  # this checkout's agentguard, not the editable install's

AGENT = "0x1111111111111111111111111111111111111111"
CLIENT = "0x00000000000000000000000000000000000bE7C4"
BATCH = 8
_LABELS = {"single_us": "single", "batched_us": "batched", "norego_us": "single, all but Rego"}


class Bench:
    """An operator and the gateway's requests to it (only APIs both trees offer)."""

    def __init__(self) -> None:
        from coincurve import PrivateKey

        from agentguard._attestation import operator_address
        from agentguard.network._rpc import encode, parse_request
        from agentguard.network.operator import Operator
        from agentguard.network.registration import Registration
        from agentguard.network.registry import Registry
        from agentguard.network.state import policy_material
        from agentguard.policies import load

        self.encode, self.parse = encode, parse_request
        owner = PrivateKey(b"\x07" * 32)
        self.client = operator_address(owner)
        policy = load("agent_spend")
        registration = Registration.sign(
            owner,
            policy_client=self.client,
            policy=policy,
            params=TWO_CHECKS,
            expire_after=300,
            chain_id=8453,
            version=1,
        )
        self.operator = Operator(PrivateKey(b"\x09" * 32), Registry(":memory:"))
        self.fixed = {
            "policy_client": self.client,
            "policy_code_hash": "0x" + policy.code_hash.hex(),
            "params": registration.params,
            "expire_after": 300,
        }
        self.amount = 0
        first = self.task()
        first |= {"registration": registration.to_json(), "policy": policy_material(policy)}
        answer = self.operator.evaluate_and_sign(first)
        assert answer["decision"] == "allow", answer
        self.fixed["registration_hash"] = "0x" + registration.wire_hash.hex()

    def task(self) -> dict[str, Any]:
        """One task's params as the gateway writes them (``wasm_data``: no windows named)."""
        from agentguard import TransactionIntent

        self.amount += 1
        intent = TransactionIntent.erc20_transfer(
            sender=AGENT, token=USDC, recipient=PAYEE, amount=self.amount, chain_id=8453
        )
        now = int(time.time())
        wasm = {
            "now": now,
            "intent_hash": "0x" + intent.intent_hash.hex(),
            "approved": False,
            "spend": intent.spend.wasm(),
            "history": {},
        }
        return bound_task(
            {
                **self.fixed,
                "chain_id": 8453,
                "intent": intent.wire(),
                "expires_at": now + 300,
                "wasm": wasm,
            }
        )

    def requests(self, n: int, method: str = "newt_evaluateAndSign") -> list[bytes]:
        if method == "newt_evaluateAndSign":
            bodies = [{"method": method, "params": self.task()} for _ in range(n)]
        else:
            bodies = [
                {"method": method, "params": {"tasks": [self.task() for _ in range(BATCH)]}}
                for _ in range(n)
            ]
        return [json.dumps({"jsonrpc": "2.0", "id": 1, **b}).encode() for b in bodies]

    def serve(self, requests: list[bytes]) -> float:
        """CPU seconds per request to parse, evaluate, sign and encode each of ``requests``."""
        operator, parse, encode = self.operator, self.parse, self.encode
        start = time.thread_time()
        for body in requests:
            _, method, params = parse(body)
            if method == "newt_evaluateAndSign":
                encode({"jsonrpc": "2.0", "id": 1, "result": operator.evaluate_and_sign(params)})
            else:
                answer = operator.evaluate_batch(params)
                assert "error" not in answer["answers"][0], answer
                encode({"jsonrpc": "2.0", "id": 1, "result": answer})
        return (time.thread_time() - start) / len(requests)

    def without_rego(self, requests: list[bytes]) -> float:
        """``serve`` with the policy's first evaluation given as every later one's answer:
        the operator's CPU for everything but building the input and querying Rego."""
        from agentguard.network import operator as op

        real = op.evaluate_policy
        kept: list[Any] = []

        def first(*args: Any, **kwargs: Any) -> Any:
            if not kept:
                kept.append(real(*args, **kwargs))
            return kept[0]

        op.evaluate_policy = first
        try:
            return self.serve(requests)
        finally:
            op.evaluate_policy = real

    def round(self, n: int) -> dict[str, float]:
        """µs of CPU per evaluation, alone, in batches of ``BATCH``, and alone without Rego."""
        single = self.requests(n)
        batches = self.requests(max(1, n // BATCH), "agentguard_evaluateBatch")
        return {
            "single_us": self.serve(single) * 1e6,
            "batched_us": self.serve(batches) * 1e6 / BATCH,
            "norego_us": self.without_rego(self.requests(n)) * 1e6,
        }


def child() -> None:
    """``--child``: answer ``{"n": N}`` lines with one round's figures, as JSON lines."""
    bench = Bench()
    bench.round(50)  # warm up
    serve_rounds(bench.round)


def against(ref: str, n: int, rounds: int) -> list[dict[str, Any]]:
    """Rounds alternate between a child on ``ref``'s tree and one on this checkout's."""
    commit, got = interleaved(__file__, ref, n, rounds)
    labels = {k: f"CPU µs per evaluation ({_LABELS[k]})" for k in _LABELS}
    return ab_rows(ref, commit, got, labels)


def per_call(fn: Callable[[], object], n: int) -> float:
    """µs of thread CPU per call of ``fn``, over ``n`` calls."""
    fn()
    start = time.thread_time()
    for _ in range(n):
        fn()
    return (time.thread_time() - start) / n * 1e6


def split(n: int, rounds: int) -> list[dict[str, Any]]:
    """The work of one ``newt_evaluateAndSign`` in its parts (this checkout's internals)."""
    from regopy import rego_shared as _rs

    from agentguard._attestation import attestation_digest, sign_attestation
    from agentguard._eip712 import keccak
    from agentguard._intent import TransactionIntent
    from agentguard.network import operator as op
    from agentguard.policies import load
    from agentguard.policies._engine import _RESULT, _WASM_KEY, _set_input

    bench = Bench()
    operator = bench.operator
    key = operator._signers[operator.address.lower()].key
    bodies = bench.requests(n)
    params = [bench.parse(b)[2] for b in bodies]
    engine = operator._engine
    [compiled] = engine._compiled.values()
    intent = TransactionIntent.from_wire(params[0]["intent"])
    wasm = params[0]["wasm"]
    document = {**intent.parsed(), _WASM_KEY: wasm}
    registration = operator._by_hash[bytes.fromhex(params[0]["registration_hash"][2:])]
    derived = operator._derive(registration)
    policy = load("agent_spend")
    verdict = operator._evaluate(params[0], None)
    answer = op._answer(operator._signers[operator.address.lower()], verdict)
    client = bytes.fromhex(bench.client[2:])
    words = bytes(range(32)) * 7

    def query() -> None:
        out = _rs.rego_bundle_query_entrypoint(
            compiled.interpreter._impl, compiled.bundle._impl, _RESULT
        )
        _rs.rego_output_string(out)
        _rs.rego_free_output(out)

    def each(fn: Callable[[dict[str, Any]], object]) -> Callable[[], object]:
        it = iter(params * 1000)
        return lambda: fn(next(it))

    parts: dict[str, Callable[[], object]] = {
        "parse_request (strict JSON of the request)": lambda: bench.parse(bodies[0]),
        "Intent.from_wire": each(lambda p: TransactionIntent.from_wire(p["intent"])),
        "  intent_hash (fresh intent)": each(
            lambda p: TransactionIntent.from_wire(p["intent"]).intent_hash
        ),
        "  parsed()": lambda: intent.parsed(),
        "policy_input (from_wire + parsed + wasm checks)": each(
            lambda p: op.policy_input(p["intent"], p["wasm"])
        ),
        "_set_input (the input document)": lambda: _set_input(
            compiled.interpreter, document, compiled.reads
        ),
        "rego query alone (input set)": query,
        "engine.evaluate (set_input + query + decide)": lambda: engine.evaluate(
            policy,
            input=intent.parsed(),
            params=TWO_CHECKS,
            wasm=wasm,
            params_json=derived.engine_params,
        ),
        "keccak (224 bytes)": lambda: keccak(words),
        "attestation_digest": lambda: attestation_digest(
            chain_id=8453,
            policy_client=client,
            task_id=words[:32],
            policy_id=words[32:64],
            intent_hash=words[64:96],
            allow=True,
            expires_at=2_000_000_000,
        ),
        "sign_attestation (ECDSA)": lambda: sign_attestation(key, words[:32]),
        "_evaluate (checks + evaluation + digest)": each(lambda p: operator._evaluate(p, None)),
        "_answer (sign + answer dict)": lambda: op._answer(
            operator._signers[operator.address.lower()], verdict
        ),
        "encode the answer (JSON)": lambda: bench.encode(
            {"jsonrpc": "2.0", "id": 1, "result": answer}
        ),
    }
    figures: dict[str, list[float]] = {k: [] for k in parts}
    whole_us: list[float] = []
    without_rego: list[float] = []
    for _ in range(rounds):
        for name, fn in parts.items():
            figures[name].append(per_call(fn, n))
        whole_us.append(bench.serve(bench.requests(n)) * 1e6)
        without_rego.append(bench.without_rego(bench.requests(n)) * 1e6)
    medians = {
        "whole request (parse, evaluate, sign, encode)": statistics.median(whole_us),
        "whole request, the policy's answer given (all but Rego)": statistics.median(without_rego),
    } | {k: statistics.median(v) for k, v in figures.items()}
    return [{"part": k, "cpu_us": round(v, 1)} for k, v in medians.items()]


def main() -> None:
    if "--child" in sys.argv:
        child()
        return
    p = parser(__doc__)
    p.add_argument("--n", type=int, default=400, help="requests per round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--against", default=None, help="git ref to compare with (A/B)")
    args = p.parse_args()
    if args.quick:
        args.n, args.rounds = 40, 2
    started = machine()
    if args.against:
        rows = against(args.against, args.n, args.rounds)
        notes = "Thread CPU per evaluation, medians of alternating rounds, two processes."
    else:
        bench = Bench()
        bench.round(50)
        totals = [bench.round(args.n) for _ in range(args.rounds)]
        rows = [
            {
                "part": f"CPU µs per evaluation ({_LABELS[key]})",
                "cpu_us": round(statistics.median(t[key] for t in totals), 1),
            }
            for key in ("single_us", "batched_us", "norego_us")
        ]
        rows += split(args.n, args.rounds)
        notes = "Thread CPU per call, medians of rounds, in one process."
    emit(args.json, "operator_eval", started, rows, notes)


if __name__ == "__main__":
    main()
