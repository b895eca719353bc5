"""Client-side CPU of one paid x402 request: agentguard's X402Auth vs x402's own client.

Two settings, each side by side with the official ``x402`` client in the same run:

1. **Payment layer** (``httpx.MockTransport``: a v2 ``PAYMENT-REQUIRED`` 402, then 200 with a
   ``PAYMENT-RESPONSE`` to any payment, nothing verified). Per paid request: parse → select →
   (authorize) → reserve → sign → encode → retry → settle the ledger. Rows:

   * ``bare exchange``: the request, its 402 and one retry through plain httpx (an
     ``httpx.Auth`` adding a dummy header), no payment layer: the transport floor every client
     here pays; a layer's own cost is its CPU minus this.
   * ``official``: ``x402Client`` + ``x402AsyncTransport`` (no authorization at all).
   * ``agentguard, authorization excluded``: X402Auth whose guard hands out attestations
     verified before the clock started, so the figure is the payment layer alone (ledger,
     signer checks, EIP-712 signing, encoding, pipeline).
   * ``agentguard, local quorum``: authorization minus the network: a 2-of-3 quorum signs in
     process and the client verifies it (two ECDSA recoveries) per request.

2. **Authorization included, official server**: x402's FastAPI payment middleware and its
   in-process facilitator (verifying each signature for real; a chainless EVM signer stands in
   for the chain) served by uvicorn in its own process; the reference network (gateway + 3
   operators) in theirs. The client process's CPU per paid request (the gateway bookkeeping
   the pipeline defers is drained inside the measured window, so it counts), and the other
   processes' CPU reported separately.

CPU is ``time.process_time`` (all threads of this process), per request (median) and in total
over the run divided by the requests (mean, includes background work). Ratios are against the
official client in the same setting. Benchmarks never fail on a number.

    .venv/bin/python benchmarks/bench_x402.py [--requests 400] [--quick] [--json out.json]
        [--layer-only] [--rounds 3]
    .venv/bin/python benchmarks/bench_x402.py --profile [--requests 400] [--top 40]

``--profile`` measures nothing side by side: it runs agentguard's client alone against the
official server and the reference network (the second setting) under a CPU-time sampler
(``SIGPROF``), and prints the client's top functions per paid request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from _common import ROOT, emit, machine
from _common import parser as _common_parser

# This checkout's agentguard, not whatever the virtualenv's editable install points at.
sys.path.insert(0, str(ROOT))
from coincurve import PrivateKey
from eth_account import Account
from x402 import x402Client
from x402.http.clients.httpx import x402AsyncTransport
from x402.mechanisms.evm import EthAccountSigner
from x402.mechanisms.evm.exact import register_exact_evm_client

from agentguard import AsyncGuard, Signer, Verifier
from agentguard._attestation import (
    Attestation,
    OperatorSignature,
    attestation_digest,
    operator_address,
    sign_attestation,
)
from agentguard._eip712 import keccak
from agentguard._intent import PaymentIntent
from agentguard._verifier import VerifiedAttestation
from agentguard.ledger import Ledger
from agentguard.network.launcher import ReferenceNetwork
from agentguard.x402 import Allowances, X402Auth
from agentguard.x402._wire import encode_header
from agentguard.x402.official_hook import authorization_hook

AGENT_KEY = "0x" + "b5" * 32
TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAYEE = "0x3333333333333333333333333333333333333333"
FACILITATOR_KEY = "0x" + "fa" * 32
POLICY_CLIENT = "0x00000000000000000000000000000000000BE402"
PRICE = 10_000
PARAMS = {"max_per_tx": {TOKEN.lower(): "1000000000"}, "allowed_recipients": [PAYEE]}
URL = "http://bench.test/paid"
REQUIREMENT = {
    "scheme": "exact", "network": "eip155:8453", "asset": TOKEN, "amount": str(PRICE),
    "payTo": PAYEE, "maxTimeoutSeconds": 300, "extra": {"name": "USD Coin", "version": "2"},
}  # fmt: skip
REQUIRED = encode_header(
    {
        "x402Version": 2,
        "error": "Payment required",
        "resource": {"url": URL, "description": "", "mimeType": ""},
        "accepts": [REQUIREMENT],
    }
)
RECEIPT = encode_header(
    {"success": True, "transaction": "0x" + "ab" * 32, "network": "eip155:8453", "payer": PAYEE}
)
WARMUP = 20
BARE = "bare exchange (plain httpx, no payment)"
OFFICIAL = "official x402 client"


async def handler(request: httpx.Request) -> httpx.Response:
    if "PAYMENT-SIGNATURE" in request.headers:
        return httpx.Response(200, headers={"PAYMENT-RESPONSE": RECEIPT}, json={"ok": True})
    return httpx.Response(402, headers={"PAYMENT-REQUIRED": REQUIRED}, json={})


# -- authorization stand-ins --------------------------------------------------------------------


class LocalQuorum:
    """Signs attestations in-process with 2 of 3 operator keys: authorization minus the network."""

    policy_client = POLICY_CLIENT

    def __init__(self) -> None:
        self.keys = [PrivateKey(keccak(f"bench operator {i}".encode())) for i in range(3)]
        self.addresses = [operator_address(k) for k in self.keys]

    def attest(self, intent: PaymentIntent) -> Attestation:
        task, policy = secrets.token_bytes(32), keccak(b"bench policy")
        expires = int(time.time()) + 300
        digest = attestation_digest(
            chain_id=8453, policy_client=bytes.fromhex(POLICY_CLIENT[2:]), task_id=task,
            policy_id=policy, intent_hash=intent.intent_hash, allow=True, expires_at=expires,
        )  # fmt: skip
        return Attestation(
            decision="allow", task_id=task, policy_id=policy, policy_client=POLICY_CLIENT,
            intent_hash=intent.intent_hash, expires_at=expires,
            signatures=tuple(
                OperatorSignature(operator=a, signature=sign_attestation(k, digest))
                for k, a in zip(self.keys[:2], self.addresses, strict=False)
            ),
        )  # fmt: skip

    async def authorize(
        self, intent: Any, *, wasm_args: Mapping[str, Any] | None = None
    ) -> Attestation:
        return self.attest(intent)

    async def commit(self, task_id: str, outcome: str) -> None:
        return None

    async def release(self, task_id: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


class Preverified(AsyncGuard):
    """A guard whose attestations were verified before the clock started (``stock``): the
    payment layer measured without any authorization work."""

    def __init__(self, quorum: LocalQuorum) -> None:
        super().__init__(quorum, Verifier(quorum.addresses, policy_client=POLICY_CLIENT))
        self.quorum = quorum
        self.stock: list[VerifiedAttestation] = []
        self.intent: PaymentIntent | None = None

    def fill(self, n: int) -> None:
        assert self.intent is not None, "run a request first"
        intent = self.intent
        self.stock = [self.verifier.verify(self.quorum.attest(intent), intent) for _ in range(n)]

    async def authorize(
        self, intent: Any, *, wasm_args: Mapping[str, Any] | None = None
    ) -> VerifiedAttestation:
        if self.stock:
            return self.stock.pop()
        self.intent = intent
        return self.verifier.verify(self.quorum.attest(intent), intent)


# -- clients --------------------------------------------------------------------------------------


def official(transport: httpx.AsyncBaseTransport, hook: Any = None) -> httpx.AsyncClient:
    client = x402Client()
    register_exact_evm_client(client, EthAccountSigner(Account.from_key(AGENT_KEY)))
    client.set_spend_controls(
        {
            "allowed_assets": [
                {"network": "eip155:8453", "asset": TOKEN, "max_amount_per_payment": "1000000"}
            ]
        }
    )
    if hook is not None:
        client.on_before_payment_creation(hook)
    return httpx.AsyncClient(transport=x402AsyncTransport(client, transport))


def agentguard(guard: AsyncGuard, transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
    auth = X402Auth(
        signer=Signer.from_key(AGENT_KEY), guard=guard, ledger=Ledger(),
        allowances=Allowances({TOKEN: 1_000_000}),
    )  # fmt: skip
    return auth.async_client(transport=transport)


class _Retry(httpx.Auth):
    """Answers a 402 by sending the request once more with a (meaningless) payment header."""

    requires_request_body = True

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        response = yield request
        if response.status_code == 402:
            await response.aread()
            request.headers["PAYMENT-SIGNATURE"] = "x"
            yield request


def bare() -> httpx.AsyncClient:
    """The paid exchange without any payment layer (one request, its 402, one retry), through
    httpx: the transport floor every client here pays at least."""
    return httpx.AsyncClient(auth=_Retry(), transport=httpx.MockTransport(handler))


# -- measuring ------------------------------------------------------------------------------------


async def measure(
    make: Callable[[], Any],
    n: int,
    url: str = URL,
    *,
    before: Callable[[], None] | None = None,
    drain: Callable[[], Awaitable[object]] | None = None,
) -> dict[str, float]:
    """Sequential paid requests; CPU and wall per request after ``WARMUP`` unmeasured ones."""
    cpu: list[float] = []
    wall: list[float] = []
    async with make() as http:
        for i in range(WARMUP):
            assert (await http.get(url, params={"w": i})).status_code == 200
        if drain is not None:
            await drain()
        if before is not None:
            before()
        start = time.process_time()
        for i in range(n):
            c, t = time.process_time(), time.perf_counter()
            response = await http.get(url, params={"i": i})
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            assert response.status_code == 200, response.status_code
        if drain is not None:
            await drain()  # deferred work (gateway bookkeeping) counts too
        total = time.process_time() - start
    return {
        "cpu_us_median": round(statistics.median(cpu) * 1e6, 1),
        "cpu_us_mean": round(total / n * 1e6, 1),
        "wall_ms_p50": round(statistics.median(wall) * 1e3, 3),
        "wall_ms_p95": round(sorted(wall)[int(0.95 * (len(wall) - 1))] * 1e3, 3),
    }


def _cpu_seconds(pid: int) -> float:
    """utime + stime of another process (Linux ``/proc``); 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _network_pids(net: ReferenceNetwork) -> list[int]:
    procs = [getattr(net, "_gateway", None)] + [op.process for op in net.operators]
    return [p.pid for p in procs if p is not None]


# -- the official server, in its own process ----------------------------------------------------


class ChainlessSigner:
    """x402's ``FacilitatorEvmSigner`` without a chain: the token has code, the payer none (so
    the facilitator recovers the EOA signature itself), ``transferWithAuthorization`` succeeds
    once per nonce, and settlement yields a receipt with the matching Transfer log."""

    def __init__(self) -> None:
        self.address = Account.from_key(FACILITATOR_KEY).address
        self.used: set[bytes] = set()
        self.transfers: dict[str, tuple[str, str, int]] = {}

    def get_addresses(self) -> list[str]:
        return [self.address]

    def get_code(self, address: str) -> bytes:
        return b"\x60\x80" if address.lower() == TOKEN.lower() else b""

    def read_contract(self, address: str, abi: Any, function_name: str, *args: Any) -> Any:
        if function_name == "transferWithAuthorization":
            if bytes(args[5]) in self.used:
                raise RuntimeError("execution reverted: FiatTokenV2: authorization is used")
            return None
        if function_name == "authorizationState":
            return bytes(args[1]) in self.used
        if function_name == "balanceOf":
            return 10**18
        raise RuntimeError(f"chainless signer: no {function_name}")

    def write_contract(
        self, address: str, abi: Any, function_name: str, *args: Any, data_suffix: Any = None
    ) -> str:
        nonce = bytes(args[5])
        if nonce in self.used:
            raise RuntimeError("execution reverted: FiatTokenV2: authorization is used")
        self.used.add(nonce)
        tx = "0x" + keccak(nonce).hex()
        self.transfers[tx] = (str(args[0]), str(args[1]), int(args[2]))
        return tx

    def wait_for_transaction_receipt(self, tx_hash: str) -> Any:
        from x402.mechanisms.evm.types import TransactionReceipt

        src, dst, value = self.transfers[tx_hash]
        topic = "0x" + keccak(b"Transfer(address,address,uint256)").hex()
        log = {
            "address": TOKEN,
            "topics": [topic, "0x" + src[2:].lower().rjust(64, "0"),
                       "0x" + dst[2:].lower().rjust(64, "0")],
            "data": "0x" + value.to_bytes(32, "big").hex(),
        }  # fmt: skip
        return TransactionReceipt(status=1, block_number=1, tx_hash=tx_hash, logs=[log])

    def send_transaction(self, to: str, data: bytes) -> str:
        raise RuntimeError("chainless signer sends no raw transactions")

    def verify_typed_data(self, *args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("not used: x402 recovers EOA signatures itself")

    def get_balance(self, address: str, token_address: str) -> int:
        return 10**18

    def get_chain_id(self) -> int:
        return 8453


def serve_official() -> None:
    """Run x402's FastAPI payment middleware with its in-process facilitator on 127.0.0.1;
    prints the port, serves until killed."""
    import uvicorn
    from fastapi import FastAPI
    from x402 import x402Facilitator, x402ResourceServer
    from x402.http.middleware.fastapi import PaymentMiddlewareASGI
    from x402.mechanisms.evm.exact import ExactEvmFacilitatorScheme, ExactEvmServerScheme

    facilitator = x402Facilitator()
    facilitator.register(["eip155:8453"], ExactEvmFacilitatorScheme(ChainlessSigner()))
    server = x402ResourceServer(facilitator)
    server.register("eip155:8453", ExactEvmServerScheme())  # type: ignore[no-untyped-call, arg-type]
    price = {"amount": str(PRICE), "asset": TOKEN, "extra": {"name": "USD Coin", "version": "2"}}
    option = {"scheme": "exact", "payTo": PAYEE, "price": price, "network": "eip155:8453"}
    app = FastAPI()
    routes: dict[str, Any] = {"GET /paid": {"accepts": option, "description": "bench"}}
    app.add_middleware(PaymentMiddlewareASGI, routes=routes, server=server)

    @app.get("/paid")
    async def paid() -> dict[str, str]:
        return {"data": "paid content"}

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


@contextmanager
def official_server() -> Iterator[tuple[str, int]]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-official"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        url = f"http://127.0.0.1:{port}/paid"
        for _ in range(200):  # until it answers
            try:
                if httpx.get(url).status_code == 402:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait()


# -- the run ------------------------------------------------------------------------------------


def _ratio(row: dict[str, Any], base: dict[str, Any], key: str, floor: float = 0.0) -> float:
    return round((float(row[key]) - floor) / (float(base[key]) - floor), 3)


async def payment_layer(n: int, rounds: int) -> list[dict[str, Any]]:
    quorum = LocalQuorum()
    pre = Preverified(quorum)
    local = AsyncGuard(quorum, Verifier(quorum.addresses, policy_client=POLICY_CLIENT))

    def mock() -> httpx.MockTransport:
        return httpx.MockTransport(handler)

    cases: dict[str, Callable[[], Awaitable[dict[str, float]]]] = {
        BARE: lambda: measure(bare, n),
        OFFICIAL: lambda: measure(lambda: official(mock()), n),
        "agentguard X402Auth, authorization excluded": lambda: measure(
            lambda: agentguard(pre, mock()), n, before=lambda: pre.fill(n), drain=pre.flush
        ),
        "agentguard X402Auth, local quorum (signing + verification in process)": lambda: measure(
            lambda: agentguard(local, mock()), n, drain=local.flush
        ),
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    for _ in range(rounds):  # interleaved, so a noisy moment touches every row alike
        for name, run in cases.items():
            runs[name].append(await run())
    rows = {
        name: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for name, results in runs.items()
    }
    floor, base = rows[BARE], rows[OFFICIAL]
    out = []
    for name, row in rows.items():
        result: dict[str, Any] = {"setting": "payment layer (mock transport)", "client": name}
        result.update(row)
        if name != BARE:
            for key in ("cpu_us_median", "cpu_us_mean"):
                which = key.rsplit("_", 1)[1]
                result[f"layer_cpu_us_{which}"] = round(row[key] - floor[key], 1)
                result[f"layer_ratio_{which}"] = _ratio(row, base, key, floor[key])
        out.append(result)
    return out


async def authorization_included(n: int, rounds: int, quick: bool) -> list[dict[str, Any]]:
    runs: dict[str, list[dict[str, float]]] = {}
    real = httpx.AsyncHTTPTransport
    with (
        official_server() as (url, server_pid),
        ReferenceNetwork(operators=3, threshold_percentage=66, startup_timeout=120.0) as net,
    ):
        net.register_policy_client(POLICY_CLIENT, "agent_spend", PARAMS)
        pids = _network_pids(net)
        async with AsyncGuard.connect(
            net.url,
            policy_client=POLICY_CLIENT,
            operators=net.operator_addresses,
            api_key=net.api_key,
            policy_id=net.policy_clients[POLICY_CLIENT],
        ) as guard:
            cases: dict[str, Callable[[], httpx.AsyncClient]] = {
                OFFICIAL: lambda: official(real()),
                "agentguard X402Auth": lambda: agentguard(guard, real()),
            }
            if not quick:
                hook = authorization_hook(guard, payer=Account.from_key(AGENT_KEY).address)
                cases["official x402 client + agentguard hook"] = lambda: official(real(), hook)
            for _ in range(rounds):  # interleaved, like the payment layer
                for name, make in cases.items():
                    net_before = sum(_cpu_seconds(p) for p in pids)
                    server_before = _cpu_seconds(server_pid)
                    row = await measure(make, n, url, drain=guard.flush)
                    spent = sum(_cpu_seconds(p) for p in pids) - net_before
                    row["network_cpu_us"] = round(spent / (n + WARMUP) * 1e6, 1)
                    row["server_cpu_us"] = round(
                        (_cpu_seconds(server_pid) - server_before) / (n + WARMUP) * 1e6, 1
                    )
                    runs.setdefault(name, []).append(row)
    rows = {
        name: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for name, results in runs.items()
    }
    base = rows[OFFICIAL]
    out = []
    for name, row in rows.items():
        result: dict[str, Any] = {"setting": "authorization included, official server"}
        result["client"] = name
        result.update(row)
        for key in ("cpu_us_median", "cpu_us_mean"):
            result[f"ratio_{key.rsplit('_', 1)[1]}"] = _ratio(row, base, key)
        out.append(result)
    return out


class _Sampler:
    """A CPU-time sampling profiler: ``SIGPROF`` fires every ``interval`` seconds of this
    process's CPU, and each sample counts the Python stack it interrupted (the event loop's
    thread: the handler runs there). Unlike cProfile it costs no time per call, so the
    many-small-calls code of an asyncio client is not inflated relative to the rest."""

    def __init__(self, interval: float = 0.0002) -> None:
        self.interval = interval
        self.own: Counter[str] = Counter()
        self.inclusive: Counter[str] = Counter()
        self.samples = 0

    def _sample(self, signum: int, frame: Any) -> None:
        self.samples += 1
        seen: set[str] = set()
        first = True
        while frame is not None:
            code = frame.f_code
            where = code.co_filename.removeprefix(f"{ROOT}/")
            where = where.split("site-packages/")[-1].split("/lib/python3.")[-1]
            name = f"{where}:{code.co_firstlineno}({code.co_name})"
            if first:
                self.own[name] += 1
                first = False
            if name not in seen:
                seen.add(name)
                self.inclusive[name] += 1
            frame = frame.f_back

    def __enter__(self) -> _Sampler:
        signal.signal(signal.SIGPROF, self._sample)
        signal.setitimer(signal.ITIMER_PROF, self.interval, self.interval)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, signal.SIG_DFL)

    def report(self, n: int, cpu: float, top: int) -> None:
        per = cpu / max(self.samples, 1) / n * 1e6  # µs of CPU one sample stands for, per request
        print(f"{self.samples} samples; {cpu / n * 1e6:.0f} us of process CPU per paid request")
        for title, counts in (("own", self.own), ("inclusive", self.inclusive)):
            print(f"\n{title} us per request   function")
            for name, count in counts.most_common(top):
                print(f"{count * per:10.1f}   {name}")


async def profile(n: int, top: int) -> None:
    """``--profile``: the agentguard client of the second setting alone under a CPU-time
    sampler, ``n`` paid requests after the warm-up, the deferred gateway bookkeeping drained
    inside the window; prints the top functions (own and inclusive CPU) per request."""
    with (
        official_server() as (url, _),
        ReferenceNetwork(operators=3, threshold_percentage=66, startup_timeout=120.0) as net,
    ):
        net.register_policy_client(POLICY_CLIENT, "agent_spend", PARAMS)
        async with (
            AsyncGuard.connect(
                net.url,
                policy_client=POLICY_CLIENT,
                operators=net.operator_addresses,
                api_key=net.api_key,
                policy_id=net.policy_clients[POLICY_CLIENT],
            ) as guard,
            agentguard(guard, httpx.AsyncHTTPTransport()) as http,
        ):
            for i in range(WARMUP):
                assert (await http.get(url, params={"w": i})).status_code == 200
            await guard.flush()
            start = time.process_time()
            with _Sampler() as sampler:
                for i in range(n):
                    assert (await http.get(url, params={"i": i})).status_code == 200
                await guard.flush()
            spent = time.process_time() - start
    sampler.report(n, spent, top)


NOTES = (
    "CPU per paid request of the client process (time.process_time, every thread), median "
    "of per-request samples and mean over the run (the mean includes deferred background "
    "work such as the gateway commit, drained inside the window). Payment layer: "
    "layer_* = CPU minus the bare two-request exchange through plain httpx; "
    "layer_ratio_* = that against the official client's (target <= 0.5 with "
    "authorization excluded). Authorization included: ratio_* against the official client "
    "with the same real server (target <= 1.2); network_cpu_us / server_cpu_us are the "
    "reference network's and the x402 server's CPU per request, counted separately."
)


async def main(
    n: int, quick: bool, json_path: Path | None, layer_only: bool = False, rounds: int | None = None
) -> None:
    started = machine()
    rows = await payment_layer(n, rounds or (1 if quick else 3))
    if not layer_only:
        rows += await authorization_included(
            max(n // 2, 50) if quick else n, 1 if quick else 3, quick
        )
    emit(json_path, "x402", started, rows, NOTES)


if __name__ == "__main__":
    parser = _common_parser(__doc__)
    parser.add_argument("--requests", type=int, default=None, help="paid requests per row")
    parser.add_argument(
        "--layer-only", action="store_true", help="the payment layer only (no network, no server)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="interleaved payment-layer rounds")
    parser.add_argument("--serve-official", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help="profile agentguard's client")
    parser.add_argument("--top", type=int, default=40, help="functions --profile prints")
    args = parser.parse_args()
    if args.serve_official:
        serve_official()
    elif args.profile:
        asyncio.run(profile(args.requests or 400, args.top))
    else:
        requests = args.requests or (100 if args.quick else 400)
        asyncio.run(main(requests, args.quick, args.json, args.layer_only, args.rounds))
