"""Real parts for the crash and fault tests: anvil (chain id 8453) with USDC, the reference
network (a gateway and 3 operator processes, 2-of-3), agent processes (``agent_worker.py``),
and ledgers on SQLite, Redis and PostgreSQL (the servers of ``tests/ledger/servers.py``)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3
from web3.contract import Contract

from agentguard import Guard, GuardedWallet, Limits, Signer, WindowCap
from agentguard.audit import AuditLog
from agentguard.chain import BASE_CHAIN_ID, DEV_ACCOUNTS, Anvil, DevAccount, deploy, transact
from agentguard.ledger import Ledger, open_ledger
from agentguard.network.launcher import ReferenceNetwork
from tests.keys import numbered_key

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("agent_worker.py")
PAYEE = DEV_ACCOUNTS[9].address
MINTED = 10**12
# A worker's own bound: well below pytest's per-test timeout, so a stuck worker fails its test
# with its stack rather than a bare pytest-timeout.
WORKER_TIMEOUT = 60.0
_client_keys = itertools.count(0xC0FFEE)


@dataclass
class Chain:
    anvil: Anvil
    w3: Web3
    token: Contract


@pytest.fixture(scope="package")
def chain() -> Iterator[Chain]:
    with Anvil() as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        assert w3.eth.chain_id == BASE_CHAIN_ID
        owner = DEV_ACCOUNTS[0]
        token = deploy(w3, "UsdCoin", sender=owner.address)
        for agent in DEV_ACCOUNTS[1:9]:
            transact(w3, token.functions.mint(agent.address, MINTED), sender=owner.address)
        yield Chain(anvil, w3, token)


@pytest.fixture(scope="package")
def network() -> Iterator[ReferenceNetwork]:
    with ReferenceNetwork(operators=3, threshold_percentage=66, timeout=5.0) as net:
        yield net


def new_client(network: ReferenceNetwork, token: str) -> str:
    """A policy client of its own (the network's running totals are per client): generous
    caps, so only a real fault ever refuses."""
    key = numbered_key(next(_client_keys), "reliability client")
    address = Signer.from_key(key).address
    network.register_policy_client(
        address,
        "agent_spend",
        {"max_per_tx": {token.lower(): str(10**12)}, "allowed_recipients": [PAYEE]},
        expire_after=300,
        owner_key=key,
    )
    return address


def worker_config(
    chain: Chain,
    network: ReferenceNetwork,
    client: str,
    agent: DevAccount,
    ledger_url: str,
    audit: Path,
    first_amount: int,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "rpc": chain.anvil.url,
        "ledger": ledger_url,
        "gateway": network.url,
        "policy_client": client,
        "policy_id": network.policy_clients[client],
        "operators": network.operator_addresses,
        "api_key": network.api_key,
        "key": agent.private_key,
        "token": chain.token.address,
        "payee": PAYEE,
        "audit": str(audit),
        "first_amount": first_amount,
        **extra,
    }


class Zygote:
    """``agent_worker.py --zygote``: forks agent processes that start in milliseconds."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), "--zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO,
            text=True,
            start_new_session=True,
        )
        self.pids: list[int] = []

    def ask(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def spawn(self, cfg: dict[str, Any]) -> int:
        pid = int(self.ask("spawn " + json.dumps(cfg)))
        self.pids.append(pid)
        return pid

    def close(self) -> None:
        """Kill (by pid) any agent a failed test left running, then end the zygote."""
        for pid in self.pids:
            if self.ask(f"poll {pid}") == "running":
                os.kill(pid, signal.SIGKILL)
                self.ask(f"poll {pid}")
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(30)


@pytest.fixture(scope="package")
def zygote() -> Iterator[Zygote]:
    z = Zygote()
    try:
        yield z
    finally:
        z.close()


class Worker:
    """One agent process (forked by the zygote); its output goes to a file."""

    def __init__(self, zygote: Zygote, cfg: dict[str, Any], out: Path) -> None:
        self.zygote, self.out = zygote, out
        out.touch()
        self.pid = zygote.spawn({**cfg, "out": str(out)})
        self.returncode: int | None = None

    def lines(self) -> list[str]:
        return self.out.read_text(errors="replace").splitlines()

    def tail(self) -> str:
        return self.out.read_text(errors="replace")[-3000:]

    def wait_for(self, prefix: str, count: int = 1, timeout: float = WORKER_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while sum(line.startswith(prefix) for line in self.lines()) < count:
            assert "Traceback" not in self.out.read_text(errors="replace"), self.tail()
            if time.monotonic() > deadline:
                raise AssertionError(f"no {prefix!r} after {timeout} s:\n{self.stack_and_kill()}")
            time.sleep(0.02)

    def kill(self) -> int:
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:  # pragma: no cover - already reaped
                pass
        return self.wait()

    def wait(self, timeout: float = WORKER_TIMEOUT) -> int:
        """Its exit status; one still running after ``timeout`` fails the test with its output
        and every thread's stack (a worker stuck in a loop of errors, or blocked, never reaches
        the step it should die at), then is killed."""
        deadline = time.monotonic() + timeout
        while self.returncode is None:
            answer = self.zygote.ask(f"poll {self.pid}")
            if answer != "running":
                self.returncode = int(answer)
            elif time.monotonic() > deadline:
                raise AssertionError(
                    f"worker still running after {timeout} s:\n{self.stack_and_kill()}"
                )
            else:
                time.sleep(0.02)
        return self.returncode

    def stack_and_kill(self) -> str:
        """The running worker's output ending with its threads' stacks (faulthandler on
        SIGUSR1, see ``agent_worker._child``); then it is killed."""
        before = len(self.out.read_bytes())
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while len(self.out.read_bytes()) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # the rest of the dump
        os.kill(self.pid, signal.SIGKILL)
        while (answer := self.zygote.ask(f"poll {self.pid}")) == "running":
            time.sleep(0.02)
        self.returncode = int(answer) if answer != "gone" else -signal.SIGKILL
        return self.out.read_text(errors="replace")[-8000:]


def guard_for(network: ReferenceNetwork, client: str) -> Guard:
    return Guard.connect(
        network.url,
        policy_client=client,
        operators=network.operator_addresses,
        api_key=network.api_key,
        policy_id=network.policy_clients[client],
    )


def wallet_for(
    chain: Chain, network: ReferenceNetwork, client: str, agent: DevAccount, ledger: Ledger
) -> GuardedWallet:
    """The agent's wallet in this (the test's) process: used for ``recover()`` only."""
    return GuardedWallet(
        signer=Signer.from_key(agent.private_key),
        guard=guard_for(network, client),
        web3=chain.w3,
        ledger=ledger,
        limits=Limits(windows=[WindowCap(chain.token.address, 86_400, 10**15)]),
    )


def transfers(chain: Chain, sender: str, from_block: int) -> list[tuple[str, int]]:
    """(tx hash, amount) of every USDC transfer ``sender`` made from ``from_block`` on."""
    if from_block > chain.w3.eth.block_number:
        return []
    logs = chain.token.events.Transfer().get_logs(
        from_block=from_block, argument_filters={"from": sender}
    )
    return [("0x" + bytes(log["transactionHash"]).hex(), int(log["args"]["value"])) for log in logs]


HOUR = 3_600.0


def ledger_usage(url: str, agent: str, token: str, ahead: float = 0.0) -> int:
    """What the ledger counts for ``agent`` in ``token`` over a day, seen ``ahead`` seconds
    from now (an hour on: every hold made before a signature has expired)."""
    with open_ledger(url, clock=lambda: time.time() + ahead) as ledger:
        return ledger.usage(agent, 86_400).spent.get(token.lower(), 0)


def settle_and_check_agreement(
    chain: Chain,
    network: ReferenceNetwork,
    zygote: Zygote,
    client: str,
    agents: Sequence[DevAccount],
    url: str,
    audit: Path,
    start: int,
    out: Path,
) -> list[tuple[str, int]]:
    """Every agent restarts once more and pays one transfer to completion (its nonce moves on,
    so a transaction signed and never sent is provably replaced); an hour later each recovers.
    Then the ledger, the audit log and the chain must agree exactly. Returns what landed."""
    for n, agent in enumerate(agents):
        cfg = worker_config(chain, network, client, agent, url, audit, 9_000_000 + n, count=1)
        last = Worker(zygote, cfg, out / f"final-{n}.out")
        assert last.wait() == 0, last.tail()
        assert any(line.startswith("done ") for line in last.lines()), last.tail()
    with open_ledger(url, clock=lambda: time.time() + HOUR) as ledger:
        wallets = [wallet_for(chain, network, client, agent, ledger) for agent in agents]
        for wallet in wallets:  # each settles its own (another agent's nonces are not its call)
            report = wallet.recover()
            mine = [r for r in report.unknown if r.agent == wallet.account.lower()]
            assert mine == [], f"an outcome the chain settles stayed unknown: {mine}"
        assert wallets[0].recover().unknown == ()  # nothing is left unsettled, of anyone
    log = AuditLog(audit)
    assert log.verify().ok, log.verify()
    signed = {str(e.record.get("tx_hash", "")).lower() for e in log.entries() if e.kind == "signed"}
    landed: list[tuple[str, int]] = []
    for agent in agents:
        onchain = transfers(chain, agent.address, start)
        amounts = Counter(a for _, a in onchain)
        assert max(amounts.values()) == 1, f"a transfer was sent twice: {amounts.most_common(2)}"
        # nothing lost, nothing double counted: the ledger counts exactly what moved
        assert ledger_usage(url, agent.address, chain.token.address, HOUR) == sum(
            amounts.elements()
        )
        # every transaction onchain was audited as signed before it left the process
        assert {h.lower() for h, _ in onchain} <= signed
        landed += onchain
    hashes = {h.lower() for h, _ in landed}
    for entry in log.entries():  # the audit log never claims what did not happen
        if entry.kind == "committed":
            assert str(entry.record["tx_hash"]).lower() in hashes
    return landed
