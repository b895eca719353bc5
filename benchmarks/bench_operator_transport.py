"""What one operator process spends per evaluation besides the evaluation: transport cost.

``.venv/bin/python benchmarks/bench_operator_transport.py [--requests 1500] [--rounds 8] [--json PATH] [--quick]``

Starts a reference network (3 operators, 2-of-3, ``agent_spend`` with two checks), captures
the very ``newt_evaluateAndSign`` body the gateway sends an operator (its third operator is
briefly replaced by a capturing server), then drives the real third operator directly with
that body (a fresh task id, ``now`` and ``expires_at`` each time; without the policy code once
the operator holds it, as the gateway sends it) from a lean keep-alive client in this process,
in these modes, alternated round by round:

- ``seq``: one connection, one request at a time;
- ``conc16``: 16 connections, one request in flight on each (what the gateway does);
- ``pipe8``: 2 connections, 8 requests written at once on each (one write, one wake-up of
  the operator for 8 requests; it still answers each with its own write): the share of
  per-message cost a gateway→operator batch could amortize, at the least.

It reports the operator process's CPU (user + system, from ``/proc/PID/stat``) per
evaluation, medians over rounds. The gateway and the other operators sit idle meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from _common import PAYEE, TWO_CHECKS, USDC, bound_task, emit, machine, parser, stop_on_sigterm

from agentguard import NewtonGateway, TransactionIntent
from agentguard.network.launcher import ReferenceNetwork

CLIENT = "0x0000000000000000000000000000000000be7c40"
AGENT = "0x1111111111111111111111111111111111111111"
_TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def capture(net: ReferenceNetwork, index: int) -> bytes:
    """A ``newt_evaluateAndSign`` body the gateway sends operator ``index`` (with the policy
    code: the capturing server never took it)."""
    op = net.operators[index]
    seen: list[bytes] = []

    class Capture(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            seen.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            answer = b'{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"captured"}}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.send_header("Connection", "close")  # else shutdown waits on a keep-alive
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    net.stop_operator(index)
    server = ThreadingHTTPServer(("127.0.0.1", op.port), Capture)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with NewtonGateway(net.url, policy_client=CLIENT, api_key=net.api_key) as gw:
            for amount in range(1, 20):
                gw.authorize(intent(amount))
                if seen:
                    break
    finally:
        server.shutdown()
        server.server_close()
    net.start_operator(index)
    asked = [body for body in seen if b"newt_evaluateAndSign" in body]
    if not asked:
        raise SystemExit("the gateway never asked the capturing operator")
    return asked[-1]


def intent(amount: int) -> TransactionIntent:
    return TransactionIntent.erc20_transfer(
        sender=AGENT, token=USDC, recipient=PAYEE, amount=amount, chain_id=8453
    )


class Bodies:
    """The captured request with a fresh task id and clock each time."""

    def __init__(self, captured: bytes, head: bytes) -> None:
        self.message = json.loads(captured)
        self.head = head

    def lean_from_now(self) -> None:
        """The operator holds the policy code now: leave it out, as the gateway does."""
        self.message["params"].pop("policy", None)

    def request(self) -> bytes:
        params = self.message["params"]
        now = int(time.time())
        bound_task(params)
        params["expires_at"] = now + params["expire_after"]
        params["wasm"]["now"] = now
        body = json.dumps(self.message, separators=(",", ":")).encode()
        return self.head + str(len(body)).encode() + b"\r\n\r\n" + body


async def read_answer(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    body = await reader.readexactly(length)
    if b'"signature"' not in body:
        raise SystemExit(f"operator refused: {body[:300]!r}")


async def drive(port: int, bodies: Bodies, n: int, connections: int, depth: int) -> None:
    """``n`` requests over ``connections`` connections, ``depth`` written at once on each."""
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]
    for _, writer in streams:
        writer.transport.get_extra_info("socket").setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
    left = n

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal left
        while left > 0:
            k = min(depth, left)
            left -= k
            writer.write(b"".join(bodies.request() for _ in range(k)))
            for _ in range(k):
                await read_answer(reader)

    await asyncio.gather(*(worker(r, w) for r, w in streams))
    for _, writer in streams:
        writer.close()


MODES = {"seq": (1, 1), "conc16": (16, 1), "pipe8": (2, 8)}


def main() -> None:
    stop_on_sigterm()
    p = parser(__doc__)
    p.add_argument("--requests", type=int, default=1500)
    p.add_argument("--rounds", type=int, default=8)
    args = p.parse_args()
    requests, rounds = (50, 1) if args.quick else (args.requests, args.rounds)
    started = machine()
    print("starting the network", flush=True)
    with ReferenceNetwork(operators=3, threshold_percentage=66) as net:
        net.register_policy_client(CLIENT, "agent_spend", TWO_CHECKS)
        captured = capture(net, 2)
        op = net.operators[2]
        assert op.process is not None
        pid = op.process.pid
        token = op.token_file.read_text().strip()
        head = (
            f"POST /rpc HTTP/1.1\r\nHost: 127.0.0.1:{op.port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            "Content-Length: "
        ).encode()
        bodies = Bodies(captured, head)
        sizes = {k: len(json.dumps(v)) for k, v in json.loads(captured)["params"].items()}
        print(f"captured body: {len(captured)} bytes {sizes}; operator pid {pid}", flush=True)
        asyncio.run(drive(op.port, bodies, 1, 1, 1))  # hands the operator the policy code
        bodies.lean_from_now()
        asyncio.run(drive(op.port, bodies, 200, 4, 1))  # warm up
        figures: dict[str, list[tuple[float, float, float]]] = {m: [] for m in MODES}
        for _ in range(rounds):
            for mode, (connections, depth) in MODES.items():
                u0, s0 = cpu(pid)
                t = time.perf_counter()
                asyncio.run(drive(op.port, bodies, requests, connections, depth))
                wall = time.perf_counter() - t
                u1, s1 = cpu(pid)
                n = requests
                figures[mode].append(((u1 - u0) / n * 1e3, (s1 - s0) / n * 1e3, n / wall))
        table = []
        for mode, rows in figures.items():
            user = statistics.median(r[0] for r in rows)
            system = statistics.median(r[1] for r in rows)
            total = statistics.median(r[0] + r[1] for r in rows)
            rate = statistics.median(r[2] for r in rows)
            table.append(
                {
                    "mode": mode,
                    "operator_cpu_ms_per_eval": round(total, 3),
                    "user_ms": round(user, 3),
                    "sys_ms": round(system, 3),
                    "evals_per_s": round(rate),
                    "cpu_ms_per_round": " ".join(f"{r[0] + r[1]:.3f}" for r in rows),
                }
            )
    notes = (
        f"One operator process driven directly, {requests} requests per mode per round, "
        f"{rounds} rounds alternated; CPU from /proc (10 ms ticks), medians."
    )
    emit(args.json, "operator_transport", started, table, notes)


if __name__ == "__main__":
    main()
