"""Guard overhead per onchain action vs bare eth-account signing, side by side in one run.

Both sides sign the same EIP-1559 transaction. The guarded side also does everything the
wallet does around the signature except the network round trip and the chain: verify the
quorum attestation (2-of-3 ECDSA, bound to the intent, single use), reserve in the ledger,
mark it signed, sign through ``Signer``, commit. Attestations are made beforehand by local
operator keys (that is the authorizer's work, excluded here).

    .venv/bin/python benchmarks/bench_wallet.py [--n 2000] [--ledger file|memory] [--json PATH]
        [--quick]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from _common import emit, machine, parser
from coincurve import PrivateKey
from eth_account import Account

from agentguard import Attestation, Ledger, Limits, Signer, TransactionIntent, Verifier, WindowCap
from agentguard._attestation import attestation_digest, operator_address, sign_attestation

KEY = "0x" + "a1" * 32
TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAYEE = "0x3333333333333333333333333333333333333333"
CLIENT = "0x00000000000000000000000000000000000A9E17"
OPERATORS = [PrivateKey() for _ in range(3)]


def attest(intent: TransactionIntent, i: int) -> Attestation:
    expires = int(time.time()) + 3600
    task = i.to_bytes(32, "big")
    digest = attestation_digest(
        chain_id=intent.chain_id,
        policy_client=bytes.fromhex(CLIENT[2:]),
        task_id=task,
        policy_id=b"\x02" * 32,
        intent_hash=intent.intent_hash,
        allow=True,
        expires_at=expires,
    )
    return Attestation(
        decision="allow",
        task_id=task,
        policy_id=b"\x02" * 32,
        policy_client=CLIENT,
        intent_hash=intent.intent_hash,
        expires_at=expires,
        signatures=tuple(
            {"operator": operator_address(k), "signature": sign_attestation(k, digest)}
            for k in OPERATORS[:2]
        ),
    )


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--ledger", choices=["file", "memory"], default="file")
    args = p.parse_args()
    n = 20 if args.quick else args.n
    started = machine()
    signer = Signer.from_key(KEY)
    account = Account.from_key(KEY)
    intents = [
        TransactionIntent.erc20_transfer(
            sender=signer.address, token=TOKEN, recipient=PAYEE, amount=1 + i, chain_id=8453
        )
        for i in range(n)
    ]
    attestations = [attest(intent, i) for i, intent in enumerate(intents)]
    fees = {"gas": 60_000, "max_fee_per_gas": 10**9, "max_priority_fee_per_gas": 10**6}
    tmp = Path(tempfile.mkdtemp())
    ledger = Ledger(tmp / "ledger.sqlite3" if args.ledger == "file" else ":memory:")
    limits = Limits(windows=[WindowCap(TOKEN, 86400, 10**30)])
    verifier = Verifier([operator_address(k) for k in OPERATORS], policy_client=CLIENT)

    bare, guarded = [], []
    for i, (intent, attestation) in enumerate(zip(intents, attestations, strict=True)):
        tx = {
            "type": 2, "chainId": 8453, "nonce": i, "to": intent.to, "value": 0,
            "data": intent.data, "gas": 60_000, "maxFeePerGas": 10**9,
            "maxPriorityFeePerGas": 10**6,
        }  # fmt: skip
        t0 = time.perf_counter()
        account.sign_transaction(tx)
        t1 = time.perf_counter()
        verified = verifier.verify(attestation, intent)
        reservation = ledger.reserve(
            signer.address, intent.spend, key=verified.task_id,
            expires_at=verified.expires_at, limits=limits,
        )  # fmt: skip
        signed = signer.sign_transaction(verified, nonce=i, **fees)
        ledger.mark_signed(reservation.id, f"{signed.hash}:{i}")
        ledger.commit(reservation.id, signed.hash)
        t2 = time.perf_counter()
        bare.append((t1 - t0) * 1e3)
        guarded.append((t2 - t1) * 1e3)

    def row(case: str, xs: list[float]) -> dict[str, object]:
        return {
            "case": case,
            "p50_ms": round(statistics.median(xs), 4),
            "mean_ms": round(statistics.fmean(xs), 4),
            "x_bare": round(statistics.median(xs) / statistics.median(bare), 2),
        }

    rows = [
        row("bare eth_account sign", bare),
        row("guarded verify + reserve + sign + commit", guarded),
    ]
    notes = f"{n} transactions, alternating bare and guarded; ledger: SQLite {args.ledger}."
    emit(args.json, "wallet", started, rows, notes)


if __name__ == "__main__":
    main()
