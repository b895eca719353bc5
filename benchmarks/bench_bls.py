"""Cost of verifying one Newton BLS (BN254) certificate, by pairing backend, side by side.

    .venv/bin/python benchmarks/bench_bls.py [--n 20] [--json PATH] [--quick]

Measures, per verification (median of ``n``; CPU time of this process and wall time):
the pieces done locally every time (hashToG1, the gamma terms, the consensus digest of a
task response, the non-signer Merkle proof), then the pairing check (two pairings) by each
backend this machine can run: py_ecc locally, and the chain's pairing precompile 0x08 through
``eth_call`` on a local anvil (the round trip of a remote RPC comes on top). Then the whole
``NewtonVerifier.verify`` against the stand-in operator table on anvil (3 operators, one
non-signer). Native libraries are reported as found or not: ``mclbn256`` installs from PyPI
but initialises mcl's ``CurveFp254BNb`` (a different BN254 than Ethereum's alt_bn128), and
``py-eth-pairing`` needs ``eth-pairing-py-rust``, whose only wheel is for CPython 3.6.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import emit, machine, parser
from web3 import Web3

from agentguard.chain import Anvil
from agentguard.newton import (
    TaskResponse,
    aggregate_g1,
    aggregate_g2,
    hash_to_g1,
    keypair,
    local_pairing,
    sign,
    verify_signature,
)
from agentguard.newton._bn254 import PRECOMPILE_PAIRING, g1_mul, precompile_pairing
from agentguard.newton._certificate import process_inclusion_proof


def measure(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """Median (cpu ms, wall ms) of ``n`` calls."""
    cpu, wall = [], []
    for _ in range(n):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append((time.process_time() - c) * 1000)
        wall.append((time.perf_counter() - w) * 1000)
    return statistics.median(cpu), statistics.median(wall)


ROWS: list[dict[str, object]] = []


def row(name: str, figures: tuple[float, float]) -> None:
    ROWS.append({"step": name, "cpu_ms": round(figures[0], 3), "wall_ms": round(figures[1], 3)})


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--n", type=int, default=20)
    args = p.parse_args()
    n = 2 if args.quick else args.n
    started = machine()
    from tests.newton.newton_quorum import NewtonQuorum, attestation_for, newton_result

    keys = [keypair(bytes([i])) for i in range(3)]
    digest = os.urandom(32)
    signature = aggregate_g1([sign(k[0], digest) for k in keys])
    apk1, apk2 = aggregate_g1([k[1] for k in keys]), aggregate_g2([k[2] for k in keys])

    row("hashToG1 (try-and-increment)", measure(lambda: hash_to_g1(os.urandom(32)), n))
    row("one G1 scalar multiplication (gamma term)", measure(lambda: g1_mul(apk1, 2**253 + 7), n))
    row(
        "Merkle proof, depth 10",
        measure(lambda: process_inclusion_proof(os.urandom(320), digest, 5), n),
    )
    row(
        "pairing check, py_ecc (local)",
        measure(
            lambda: verify_signature(digest, signature, apk1, apk2, local_pairing), max(3, n // 4)
        ),
    )
    with Anvil() as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        precompile = precompile_pairing(
            lambda data: bytes(
                w3.eth.call({"to": Web3.to_checksum_address(PRECOMPILE_PAIRING), "data": data})
            )
        )
        row(
            "pairing check, precompile 0x08 via eth_call (anvil)",
            measure(lambda: verify_signature(digest, signature, apk1, apk2, precompile), n),
        )
        quorum = NewtonQuorum.deploy(w3, (100, 100, 100))
        from agentguard._intent import TransactionIntent

        intent = TransactionIntent(
            from_="0x1111111111111111111111111111111111111111",
            to="0x000000000000000000000000000000000000bEEF",
            value=1,
            chain_id=8453,
        )
        client = "0x0000000000000000000000000000000000000c1e"
        block = w3.eth.block_number
        template = newton_result(
            intent,
            policy_client=client,
            policy_id=b"\x42" * 32,
            task_id=b"\x00" * 32,
            expiration=block + 1000,
            task_created_block=block,
        )
        row(
            "consensus digest of a task response",
            measure(lambda: TaskResponse.parse(template["task_response"]).consensus_digest(), n),
        )
        verifier = quorum.verifier(client)

        def whole() -> None:
            task_id = os.urandom(32)
            result = newton_result(
                intent,
                policy_client=client,
                policy_id=b"\x42" * 32,
                task_id=task_id,
                expiration=block + 1000,
                task_created_block=block,
            )
            att = attestation_for(quorum.certify(result, signers=[0, 2]), intent)
            start_cpu, start = time.process_time(), time.perf_counter()
            verifier.verify(att, intent)
            whole_cpu.append((time.process_time() - start_cpu) * 1000)
            whole_wall.append((time.perf_counter() - start) * 1000)

        whole_cpu: list[float] = []
        whole_wall: list[float] = []
        for _ in range(n):
            whole()
        row(
            "NewtonVerifier.verify, 3 operators, 1 non-signer (anvil RPC)",
            (statistics.median(whole_cpu), statistics.median(whole_wall)),
        )
    found = [
        f"{module} {'installed' if importlib.util.find_spec(module) else 'not installed'}"
        for module in ("mclbn256", "py_eth_pairing", "eth_pairing_py")
    ]
    notes = f"Median of {n} calls per step (py_ecc: {max(3, n // 4)}). " + "; ".join(found) + "."
    emit(args.json, "bls", started, ROWS, notes)


if __name__ == "__main__":
    main()
