"""The client's CPU per authorization after the gateway answered: parse + verify.

Each op reads one recorded-shape ``newt_createTask`` result of the reference network (a 2-of-3
ECDSA quorum, as ``agentguard.network.gateway`` answers an allowed x402 payment) with
``_gateway._parse_task`` and verifies it with ``Verifier.verify`` for the payment intent the
client itself built: what ``AsyncGuard.authorize`` does once the answer's JSON is decoded.
Reported: thread CPU µs per op (median over rounds), and parse and verify apart.

``--against REF``: the same ops in two child processes, one importing ``REF``'s tree and one
this checkout's, rounds interleaved (ABAB…), medians and the median of per-round ratios.

    .venv/bin/python benchmarks/bench_verify.py [--n 2000] [--rounds 9] [--quick] [--json PATH]
    .venv/bin/python benchmarks/bench_verify.py --against main [--n 2000] [--rounds 9]
"""

from __future__ import annotations

import json
import secrets
import statistics
import sys
import time
from typing import Any

from _common import ROOT, ab_rows, emit, interleaved, machine, parser, serve_rounds

_AGENT = "0x2da5bb0b8d1a3b7c5e5f8a1ac2f3d4b5e6f7a8b9"
_TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
_PAYEE = "0x3333333333333333333333333333333333333333"
_CLIENT = "0x00000000000000000000000000000000000BE402"
_PARTS = {"total_us": "parse + verify", "parse_us": "parse", "verify_us": "verify"}


class _Bench:
    def __init__(self) -> None:
        from coincurve import PrivateKey

        from agentguard._attestation import attestation_digest, operator_address, sign_attestation
        from agentguard._eip712 import keccak
        from agentguard._gateway import _parse_task
        from agentguard._intent import PaymentIntent
        from agentguard._verifier import Verifier

        self._digest, self._sign = attestation_digest, sign_attestation
        self.parse = _parse_task
        self.keys = [PrivateKey(keccak(f"bench operator {i}".encode())) for i in range(3)]
        self.addresses = [operator_address(k) for k in self.keys]
        self.policy = keccak(b"bench policy")
        self.verifier = Verifier(self.addresses, policy_client=_CLIENT)
        self.intent = PaymentIntent(
            payer=_AGENT, scheme="exact", network="eip155:8453", asset=_TOKEN, amount=10_000,
            pay_to=_PAYEE, resource="http://bench.test/paid", x402_version=2,
        )  # fmt: skip
        data = {"params": {"max_per_tx": {_TOKEN.lower(): "1000000000"}, "allowed": [_PAYEE]}}
        self.data_hex = "0x" + json.dumps(data, separators=(",", ":")).encode().hex()

    def result(self) -> dict[str, Any]:
        """One allowed answer, as decoded from the gateway's JSON (new task id each)."""
        task = secrets.token_bytes(32)
        expires = int(time.time()) + 300
        digest = self._digest(
            chain_id=8453, policy_client=bytes.fromhex(_CLIENT[2:]), task_id=task,
            policy_id=self.policy, intent_hash=self.intent.intent_hash, allow=True,
            expires_at=expires, tier=0,
        )  # fmt: skip
        task_hex, policy_hex = "0x" + task.hex(), "0x" + self.policy.hex()
        return {
            "task_id": task_hex,
            "status": "success",
            "operator_errors": [],
            "task_response": {
                "task_id": task_hex,
                "policy_client": _CLIENT,
                "evaluation_result": "0x" + "00" * 31 + "01",
                "policy_task_data": {
                    "policyId": policy_hex,
                    "policy": "0x",
                    "policyData": [{"wasmArgs": "0x", "data": self.data_hex, "expireBlock": 0}],
                },
            },
            "attestation": {
                "scheme": "ecdsa", "decision": "allow", "task_id": task_hex,
                "policy_id": policy_hex, "policy_client": _CLIENT,
                "intent_hash": "0x" + self.intent.intent_hash.hex(), "expires_at": expires,
                "tier": 0,
                "signatures": [
                    {"operator": a.lower(), "signature": "0x" + self._sign(k, digest).hex()}
                    for k, a in zip(self.keys[:2], self.addresses[:2], strict=True)
                ],
                "reasons": [],
            },
        }  # fmt: skip

    def round(self, n: int) -> dict[str, float]:
        results = [self.result() for _ in range(n)]
        parse, verify, intent = self.parse, self.verifier.verify, self.intent
        start = time.thread_time()
        parsed = [parse(r, _CLIENT) for r in results]
        mid = time.thread_time()
        for att in parsed:
            verify(att, intent)
        end = time.thread_time()
        return {
            "total_us": (end - start) / n * 1e6,
            "parse_us": (mid - start) / n * 1e6,
            "verify_us": (end - mid) / n * 1e6,
        }


def child() -> None:
    bench = _Bench()
    bench.round(100)  # warm up
    serve_rounds(bench.round)


def against(ref: str, n: int, rounds: int) -> list[dict[str, Any]]:
    """Rounds alternate between a child on ``ref``'s tree and one on this checkout's."""
    commit, got = interleaved(__file__, ref, n, rounds)
    return ab_rows(ref, commit, got, {k: f"CPU µs per answer ({v})" for k, v in _PARTS.items()})


def main() -> None:
    if "--child" in sys.argv:
        child()
        return
    p = parser(__doc__)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--against", default=None, help="git ref to compare with (A/B)")
    args = p.parse_args()
    if args.quick:
        args.n, args.rounds = 50, 2
    started = machine()
    if args.against:
        rows = against(args.against, args.n, args.rounds)
        notes = "Thread CPU per answer, medians of alternating rounds, two processes."
    else:
        sys.path.insert(0, str(ROOT))  # this checkout, not the venv's editable install
        bench = _Bench()
        bench.round(100)
        totals = [bench.round(args.n) for _ in range(args.rounds)]
        rows = [
            {
                "part": f"CPU µs per answer ({part})",
                "cpu_us": round(statistics.median(t[key] for t in totals), 1),
            }
            for key, part in _PARTS.items()
        ]
        notes = "Thread CPU per answer, medians of rounds, in one process."
    emit(args.json, "verify", started, rows, notes)


if __name__ == "__main__":
    main()
