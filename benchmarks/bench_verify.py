"""The client's CPU per authorization after the gateway answered: parse + verify.

Each op reads one recorded-shape ``newt_createTask`` result of the reference network (a 2-of-3
ECDSA quorum, as ``agentguard.network.gateway`` answers an allowed x402 payment) with
``_gateway._parse_task`` and verifies it with ``Verifier.verify`` for the payment intent the
client itself built: what ``AsyncGuard.authorize`` does once the answer's JSON is decoded.
Reported: thread CPU µs per op (median over rounds), and parse and verify apart.

``--against REF``: the same ops in two child processes, one importing ``REF``'s tree and one
this checkout's, rounds interleaved (ABAB…), medians and the median of per-round ratios.

    .venv/bin/python benchmarks/bench_verify.py [--n 2000] [--rounds 9] [--against main]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import time
from typing import Any

from _common import ROOT, interleaved, serve_rounds

_AGENT = "0x2da5bb0b8d1a3b7c5e5f8a1ac2f3d4b5e6f7a8b9"
_TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
_PAYEE = "0x3333333333333333333333333333333333333333"
_CLIENT = "0x00000000000000000000000000000000000BE402"


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


def against(ref: str, n: int, rounds: int) -> None:
    commit, got = interleaved(__file__, ref, n, rounds)
    print(f"baseline {ref} = {commit[:10]}; {rounds} interleaved rounds of {n} ops")
    for key in ("total_us", "parse_us", "verify_us"):
        base = [x[key] for x in got["baseline"]]
        cur = [x[key] for x in got["current"]]
        paired = statistics.median(c / b for b, c in zip(base, cur, strict=True))
        print(
            f"{key:10} baseline {statistics.median(base):7.1f}  current "
            f"{statistics.median(cur):7.1f}  ratio {statistics.median(cur) / statistics.median(base):.3f}"
            f"  paired {paired:.3f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--against", default=None, help="git ref to compare with (A/B)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child()
    elif args.against:
        against(args.against, args.n, args.rounds)
    else:
        sys.path.insert(0, str(ROOT))  # this checkout, not the venv's editable install
        bench = _Bench()
        bench.round(100)
        rows = [bench.round(args.n) for _ in range(args.rounds)]
        for key in ("total_us", "parse_us", "verify_us"):
            print(f"{key:10} {statistics.median(r[key] for r in rows):7.1f}")


if __name__ == "__main__":
    main()
