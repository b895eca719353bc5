"""Faults on real processes: operators, the gateway, the chain's RPC node and the ledger's
server fail and come back while agents keep asking. Every claim is a count of outcomes: what
was allowed (always with a verified quorum), what was refused (always a typed error), and that
the ledger, the audit log and the chain agree afterwards. No timing is asserted.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_typing import HexStr
from web3 import Web3

from agentguard import GuardedWallet, Limits, Signer, TransactionIntent, WindowCap
from agentguard._exceptions import (
    AgentGuardError,
    AuthorizationError,
    GatewayUnavailable,
)
from agentguard.audit import AuditLog
from agentguard.chain import DEV_ACCOUNTS, DevAccount
from agentguard.ledger import open_ledger
from agentguard.network.launcher import ReferenceNetwork
from tests.ledger.servers import Server, ServerUnavailable, start_postgres, start_redis
from tests.wallet.rpc_proxy import RpcProxy

from .conftest import (
    PAYEE,
    REPO,
    Chain,
    Worker,
    Zygote,
    guard_for,
    ledger_usage,
    new_client,
    settle_and_check_agreement,
    transfers,
    worker_config,
)


def _intent(chain: Chain, amount: int, sender: str = DEV_ACCOUNTS[5].address) -> TransactionIntent:
    return TransactionIntent.erc20_transfer(
        sender=sender, token=chain.token.address, recipient=PAYEE, amount=amount, chain_id=8453
    )


@dataclass
class Outcome:
    phase: str  # the phase the request started and ended in
    signers: frozenset[str] = frozenset()
    error: str = ""


@dataclass
class Load:
    """Threads authorizing distinct intents back to back; each outcome tagged with the phase
    its request started and ended in (``transition`` if they differ)."""

    chain: Chain
    network: ReferenceNetwork
    client: str
    threads: int = 3
    phase: str = "up"
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, n: int) -> None:
        guard = guard_for(self.network, self.client)
        i = 0
        while not self._stop.is_set():
            phase = self.phase
            i += 1
            try:
                verified = guard.authorize(_intent(self.chain, 1_000 * n + i))
                outcome = Outcome(phase, frozenset(s.lower() for s in verified.signers))
            except AgentGuardError as exc:
                outcome = Outcome(phase, error=type(exc).__name__)
            except Exception as exc:  # anything untyped fails the test below
                outcome = Outcome(phase, error=f"UNTYPED {type(exc).__name__}")
            if self.phase != phase:  # the state changed while it was in flight
                outcome.phase = "transition"
            with self._lock:
                self.outcomes.append(outcome)

    def count(self, phase: str) -> int:
        with self._lock:
            return sum(o.phase == phase for o in self.outcomes)

    def until(self, phase: str, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.count(phase) < count:
            assert time.monotonic() < deadline, f"only {self.count(phase)} answers in {phase}"
            time.sleep(0.02)

    @contextmanager
    def running(self) -> Iterator[Load]:
        workers = [threading.Thread(target=self._run, args=(n,)) for n in range(self.threads)]
        for w in workers:
            w.start()
        try:
            yield self
        finally:
            self._stop.set()
            for w in workers:
                w.join(60)

    def of(self, phase: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.phase == phase]


def _crash_operator(network: ReferenceNetwork, index: int) -> None:
    """SIGKILL, not a clean stop: a crash."""
    op = network.operators[index]
    assert op.process is not None
    op.process.send_signal(signal.SIGKILL)
    op.process.wait(30)
    op.process = None


def test_operator_crash_and_restart_under_load(chain: Chain, network: ReferenceNetwork) -> None:
    """Three threads keep authorizing while operators crash (SIGKILL) and come back. With one
    operator down every request is still allowed, by the two others (2-of-3); with two down no
    request is allowed (fail closed, a typed error each time); once both are back every
    request is allowed again, with no restart of anything else."""
    client = new_client(network, chain.token.address)
    ops = [op.address.lower() for op in network.operators]
    load = Load(chain, network, client)
    try:
        with load.running():
            load.until("up", 6)
            load.phase = "crashing"
            _crash_operator(network, 0)
            load.phase = "one down"
            load.until("one down", 9)
            load.phase = "crashing"
            _crash_operator(network, 1)
            load.phase = "two down"
            load.until("two down", 6)
            load.phase = "restarting"
            network.start_operator(0)
            network.start_operator(1)
            load.phase = "back"
            load.until("back", 9)
    finally:
        network.start_operator(0)
        network.start_operator(1)
    untyped = [o for o in load.outcomes if o.error.startswith("UNTYPED")]
    assert untyped == []
    for o in load.outcomes:  # whatever the phase: an allow is a verified quorum, never less
        assert o.error or (len(o.signers) >= 2 and o.signers <= set(ops))
    for phase in ("up", "one down", "back"):
        assert [o.error for o in load.of(phase) if o.error] == [], phase
    assert all(ops[0] not in o.signers for o in load.of("one down"))
    two_down = load.of("two down")
    assert two_down and all(o.error for o in two_down), "allowed without a quorum"
    assert {o.error for o in two_down} <= {"QuorumNotReached", "GatewayUnavailable"}


def test_gateway_restart(tmp_path: Path, chain: Chain, network: ReferenceNetwork) -> None:
    """The gateway crashes (SIGKILL): each authorization is a typed ``GatewayUnavailable``, and
    a transfer is refused with nothing signed and its local hold given back. Restarted on the
    same state, it answers again; the same clients work without being rebuilt."""
    client = new_client(network, chain.token.address)
    agent = DEV_ACCOUNTS[6]
    guard = guard_for(network, client)
    ledger_url = f"sqlite:///{tmp_path}/ledger.db"
    ledger = open_ledger(ledger_url, create=True)
    wallet = GuardedWallet(
        signer=Signer.from_key(agent.private_key),
        guard=guard,
        web3=chain.w3,
        ledger=ledger,
        limits=Limits(windows=[WindowCap(chain.token.address, 86_400, 10**15)]),
        audit=AuditLog(tmp_path / "audit.jsonl"),
    )
    nonce = chain.w3.eth.get_transaction_count(Web3.to_checksum_address(agent.address))
    try:
        guard.authorize(_intent(chain, 1))
        network.kill_gateway()
        errors = []
        for i in range(3):
            with pytest.raises(AuthorizationError) as caught:
                guard.authorize(_intent(chain, 2 + i))
            errors.append(caught.value)
        with pytest.raises(GatewayUnavailable):
            wallet.transfer(PAYEE, 7, asset=chain.token.address)
        assert all(isinstance(e, GatewayUnavailable) for e in errors), errors
        assert (
            chain.w3.eth.get_transaction_count(Web3.to_checksum_address(agent.address)) == nonce
        )  # nothing sent
        assert ledger.usage(agent.address, 86_400).spent == {}  # the hold was given back
    finally:
        network.start_gateway()
    for i in range(3):
        assert len(guard.authorize(_intent(chain, 10 + i)).signers) >= 2
    receipt = wallet.transfer(PAYEE, 8, asset=chain.token.address)
    assert chain.w3.eth.get_transaction_receipt(HexStr(receipt.tx_hash))["status"] == 1
    assert ledger.usage(agent.address, 86_400).spent[chain.token.address.lower()] == 8
    ledger.close()


class SlowProxy:
    """An HTTP forwarder on an operator's port that holds each request ``delay`` seconds
    before passing it to the real operator process (a slow or overloaded operator)."""

    def __init__(self, port: int, upstream: str) -> None:
        self.delay = 0.0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def _forward(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/rpc"):
                    time.sleep(proxy.delay)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                try:
                    reply = httpx.request(
                        method, upstream + self.path, content=body, headers=headers, timeout=60
                    )
                    status, content = reply.status_code, reply.content
                except httpx.HTTPError:
                    status, content = 502, b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._server.handle_error = lambda *_: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def slow_operator(network: ReferenceNetwork, index: int) -> Iterator[SlowProxy]:
    """Operator ``index`` as a real operator process on another port, behind ``SlowProxy``
    on the port the gateway knows."""
    op = network.operators[index]
    network.stop_operator(index)
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "agentguard.network.operator", "--port", str(port),
         "--key-file", str(op.key_file), "--token-file", str(op.token_file),
         "--registry", str(op.registry_file)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    proxy = None
    try:
        _wait_health(f"http://127.0.0.1:{port}/health", process)
        proxy = SlowProxy(op.port, f"http://127.0.0.1:{port}")
        yield proxy
    finally:
        if proxy is not None:
            proxy.close()
        process.terminate()
        process.wait(30)
        network.start_operator(index)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_health(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None and time.monotonic() < deadline, "operator did not start"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)


def test_slow_operator(chain: Chain, network: ReferenceNetwork) -> None:
    """Operator 2 answers late. Hedging: the gateway answers with the two prompt operators'
    signatures and does not wait for the slow one (no answer carries its signature). When the
    slow one is needed for the quorum (operator 1 down), every answer carries its signature;
    when it is slower than the gateway's deadline, nothing is allowed (a typed error each)."""
    client = new_client(network, chain.token.address)
    guard = guard_for(network, client)
    slow = network.operators[2].address.lower()
    with slow_operator(network, 2) as proxy:
        proxy.delay = 3.0
        hedged = [guard.authorize(_intent(chain, 100 + i)) for i in range(4)]
        assert [slow in {s.lower() for s in v.signers} for v in hedged] == [False] * 4
        network.stop_operator(1)
        proxy.delay = 1.0  # well inside the gateway's deadline (5 s)
        try:
            needed = [guard.authorize(_intent(chain, 200 + i)) for i in range(2)]
            assert all(slow in {s.lower() for s in v.signers} for v in needed)
            proxy.delay = 30.0  # past the gateway's deadline (5 s): no quorum in time
            with pytest.raises(AuthorizationError) as caught:
                guard.authorize(_intent(chain, 300))
            assert type(caught.value).__name__ in ("QuorumNotReached", "GatewayUnavailable")
            proxy.delay = 0.0
        finally:
            network.start_operator(1)
    assert len(guard.authorize(_intent(chain, 400)).signers) >= 2  # all back: answering


# what a lying or failing RPC node does to one call (see tests/wallet/rpc_proxy.py)
_RPC_FAULTS: list[tuple[str, str]] = [
    ("eth_sendRawTransaction", "lost"),
    ("eth_sendRawTransaction", "504"),
    ("eth_sendRawTransaction", "timeout"),
    ("eth_sendRawTransaction", "lie_nonce_too_low"),
    ("eth_sendRawTransaction", "lie_already_known"),
    ("eth_sendRawTransaction", "already_known"),
    ("eth_getTransactionReceipt", "504"),
    ("eth_estimateGas", "502"),
    ("eth_getTransactionCount", "504"),
    ("eth_getBlockByNumber", "502"),
    ("eth_feeHistory", "504"),
]


def test_chain_rpc_errors_and_timeouts(
    tmp_path: Path, chain: Chain, network: ReferenceNetwork, zygote: Zygote
) -> None:
    """An agent pays through an RPC node that loses answers, times out, errs and lies (seeded
    faults, one or two per transfer). Each transfer lands or fails with a typed agentguard
    error whose text carries neither the key nor the signed transaction; the ledger never
    counts less than landed onchain meanwhile. With an honest node again, ``recover()`` settles
    everything: ledger, audit log and chain agree, nothing was sent twice."""
    rng = random.Random("agentguard-rpc-faults")
    client = new_client(network, chain.token.address)
    agent = DEV_ACCOUNTS[7]
    url = f"sqlite:///{tmp_path}/ledger.db"
    open_ledger(url, create=True).close()
    audit = tmp_path / "audit.jsonl"
    start = chain.w3.eth.block_number + 1
    outcomes: list[str] = []
    raws: list[str] = []  # every signed transaction that reached the node
    with RpcProxy(chain.anvil.url) as proxy:
        forward = proxy._handle

        def recording(body: bytes) -> tuple[int, bytes]:
            call = json.loads(body)
            if call.get("method") == "eth_sendRawTransaction":
                raws.append(str(call["params"][0]))
            return forward(body)

        proxy._handle = recording  # type: ignore[method-assign]
        proxy.delay = 2.0
        node = f"{proxy.url}/v2/key-1234abcd"  # a provider key in the path, as Alchemy does
        proxy.lie_text = f"nonce too low at {node}"  # a node echoing its URL, key and all
        w3 = Web3(Web3.HTTPProvider(node, request_kwargs={"timeout": 1.0}))
        with open_ledger(url) as ledger:
            wallet = GuardedWallet(
                signer=Signer.from_key(agent.private_key),
                guard=guard_for(network, client),
                web3=w3,
                ledger=ledger,
                limits=Limits(windows=[WindowCap(chain.token.address, 86_400, 10**15)]),
                audit=AuditLog(audit),
                receipt_timeout=2.0,
            )
            for i in range(14):
                faults = rng.sample(_RPC_FAULTS, rng.choice([1, 1, 2]))
                if i == 0:  # at least once: the node lies, quoting its URL and key
                    faults = [("eth_sendRawTransaction", "lie_nonce_too_low")]
                for method, fault in faults:
                    proxy.script.setdefault(method, []).append(fault)
                try:
                    wallet.transfer(PAYEE, 5_000_000 + i, asset=chain.token.address)
                    outcomes.append("landed")
                except AgentGuardError as exc:
                    text = f"{exc} {exc!r} {exc.hint} {vars(exc)}".lower()
                    assert agent.private_key[2:].lower() not in text
                    assert "key-1234abcd" not in text  # the provider key the lying node echoed
                    for raw in raws:  # no signed transaction's bytes (nor its signature)
                        assert raw[2:].lower() not in text and raw[-130:].lower() not in text
                    outcomes.append(type(exc).__name__)
                proxy.heal()
                landed = sum(a for _, a in transfers(chain, agent.address, start))
                assert ledger_usage(url, agent.address, chain.token.address) >= landed
    assert "landed" in outcomes and "OutcomeUnknown" in outcomes, outcomes
    assert set(outcomes) <= {"landed", "OutcomeUnknown", "NodeUnavailable"}, outcomes
    settle_and_check_agreement(chain, network, zygote, client, [agent], url, audit, start, tmp_path)


def _ledger_server(kind: str) -> Server:
    try:
        return start_redis() if kind == "redis" else start_postgres()
    except ServerUnavailable as exc:
        pytest.skip(f"no {kind} server on this machine: {exc}")


def _done(worker: Worker) -> int:
    return sum(line.startswith("done ") for line in worker.lines())


def _errors(worker: Worker) -> int:
    return sum(line.startswith("error ") for line in worker.lines())


@pytest.mark.timeout(360)  # a stuck worker fails first, at WORKER_TIMEOUT, with its stack
@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_ledger_server_restart_during_use(
    kind: str, tmp_path: Path, chain: Chain, network: ReferenceNetwork, zygote: Zygote
) -> None:
    """Two agent processes pay through a shared ledger whose server crashes (Redis: SIGKILL)
    or restarts (PostgreSQL) under them. While it is down every attempt is a typed
    ``LedgerUnavailable`` and nothing moves onchain; once it is back both agents pay again
    by themselves (no restart, no manual repair); afterwards ledger, audit and chain agree."""
    server = _ledger_server(kind)
    try:
        url = server.url + ("?namespace=restart" if kind == "redis" else "")
        open_ledger(url, create=True).close()
        client = new_client(network, chain.token.address)
        agents: list[DevAccount] = [DEV_ACCOUNTS[7], DEV_ACCOUNTS[8]]
        audit = tmp_path / "audit.jsonl"
        start = chain.w3.eth.block_number + 1
        workers = [
            Worker(
                zygote,
                worker_config(chain, network, client, a, url, audit, 7_000_000 + 10_000 * n),
                tmp_path / f"w{n}.out",
            )
            for n, a in enumerate(agents)
        ]
        try:
            for w in workers:
                w.wait_for("done", 2)
            _crash(server)
            for w in workers:  # each has met the outage at least once since the crash
                w.wait_for("error", _errors(w) + 1)
            moved = [len(transfers(chain, a.address, start)) for a in agents]
            for w in workers:  # and more attempts, all refused
                w.wait_for("error", _errors(w) + 2)
            assert [len(transfers(chain, a.address, start)) for a in agents] == moved
            server.start()
            for w in workers:
                w.wait_for("done", _done(w) + 2)
        finally:
            for w in workers:
                w.kill()
        kinds = {line for w in workers for line in w.lines() if line.startswith("error ")}
        assert kinds == {"error LedgerUnavailable"}, kinds
        settle_and_check_agreement(
            chain, network, zygote, client, agents, url, audit, start, tmp_path
        )
    finally:
        server.close()


def _crash(server: Server) -> None:
    proc = server.proc
    assert proc is not None
    if server.name == "redis":
        proc.send_signal(signal.SIGKILL)
    else:
        proc.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown: connections are cut
    proc.wait(60)
    server.proc = None
