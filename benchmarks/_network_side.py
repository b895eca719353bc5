"""One side of ``bench_network.py``: a reference network of one code tree, driven over stdin.

Started by ``bench_network.py`` with ``PYTHONPATH`` and the working directory set to a code
tree (this checkout, or a baseline ref unpacked into a temporary directory), so this process,
the gateway and every operator import that tree's ``agentguard``. It uses only what both trees
offer (``ReferenceNetwork``, ``NewtonGateway``, ``AsyncNewtonGateway``, ``Verifier``), and reads
CPU time and memory of its own process tree from ``/proc``, so the figures cover every process,
each one on its own (the client, the gateway, every operator).

The soak drives the gateway with a lean keep-alive HTTP/1.1 driver (``_soak_driver.py``) that
sends the very request body the SDK client sends (captured once), with a fresh amount each
time, so the driver's own cost stays small next to the network's.

Protocol: one JSON command per line on stdin, one ``@@ {json}`` answer per line on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from typing import Any

from _common import PAYEE, USDC, cmdline, cpu_seconds, descendants, rss_mib
from _soak_driver import capture_request, drive

import agentguard
from agentguard import AsyncNewtonGateway, NewtonGateway, TransactionIntent, Verifier
from agentguard.network.launcher import ReferenceNetwork

# one policy client per parameter set registered at start, by index
CLIENTS = [f"0x{0xBE7C40 + i:040x}" for i in range(8)]
AGENT = "0x1111111111111111111111111111111111111111"


class Side:
    def __init__(self) -> None:
        self.net: ReferenceNetwork | None = None
        self.counter = 0
        self.request: tuple[str, bytes] | None = None  # the SDK's newt_createTask, for the soak

    def intent(self) -> TransactionIntent:
        self.counter += 1  # every intent distinct: no idempotency hit, a fresh task each time
        return TransactionIntent.erc20_transfer(
            sender=AGENT, token=USDC, recipient=PAYEE, amount=self.counter, chain_id=8453
        )

    def roles(self) -> dict[int, str]:
        """Every process below this one by role: ``gateway``, ``operator 1``.. (in the order
        they were started), ``other`` for anything else."""
        found: dict[int, str] = {}
        operators = 0
        for pid in sorted(descendants(os.getpid())):
            line = cmdline(pid)
            if "agentguard.network.gateway" in line:
                found[pid] = "gateway"
            elif "agentguard.network.operator" in line:
                operators += 1
                found[pid] = f"operator {operators}"
            else:
                found[pid] = "other"
        return found

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far by role: this process (the client) and every process below it."""
        split = {"client": time.process_time()}
        for pid, role in self.roles().items():
            split[role] = split.get(role, 0.0) + cpu_seconds(pid)
        return split

    def gateway_pid(self) -> int:
        return next((pid for pid, role in self.roles().items() if role == "gateway"), 0)

    def start(
        self,
        operators: int,
        threshold: int,
        params: list[dict[str, Any]],
        hosts: int | None = None,
    ) -> dict[str, Any]:
        """``hosts``: the operator keys in that many processes (only a tree that has operator
        hosts is asked for them)."""
        more: dict[str, Any] = {} if hosts is None else {"hosts": hosts}
        self.net = ReferenceNetwork(operators=operators, threshold_percentage=threshold, **more)
        self.net.start()
        for address, configured in zip(CLIENTS, params, strict=False):
            self.net.register_policy_client(address, "agent_spend", configured)
        for index in range(len(params)):  # warm up connections and compiled policies
            self.sequential(20, index)
            asyncio.run(self.concurrent(64, 16, index))
        return {"agentguard": os.path.dirname(agentguard.__file__), "cwds": self.cwds()}

    def cwds(self) -> list[str]:
        """Where each network process runs: ``python -m`` imports from there first."""
        found = set()
        for pid in descendants(os.getpid()):
            with contextlib.suppress(OSError):
                found.add(os.readlink(f"/proc/{pid}/cwd"))
        return sorted(found)

    def sequential(self, n: int, client: int = 0) -> dict[str, Any]:
        """``n`` authorizations one after another from one sync client, then verified."""
        assert self.net is not None
        samples, pairs = [], []
        with NewtonGateway(
            self.net.url, policy_client=CLIENTS[client], api_key=self.net.api_key
        ) as gw:
            before = self.cpu()
            for _ in range(n):
                intent = self.intent()
                t = time.perf_counter()
                att = gw.authorize(intent)
                samples.append((time.perf_counter() - t) * 1000)
                pairs.append((intent, att))
            after = self.cpu()
        denied = sum(att.decision != "allow" for _, att in pairs)
        verifier = Verifier(self.net.operator_addresses, policy_client=CLIENTS[client])
        t = time.perf_counter()
        for intent, att in pairs:
            if att.decision == "allow":
                verifier.verify(att, intent)
        verify_ms = (time.perf_counter() - t) * 1000 / max(1, n - denied)
        return {
            "samples_ms": samples,
            "denied": denied,
            "verify_ms": verify_ms,
            **_cpu(before, after),
        }

    async def concurrent(self, n: int, concurrency: int, client: int = 0) -> dict[str, Any]:
        """``n`` authorizations by ``concurrency`` async clients sharing one gateway client."""
        assert self.net is not None
        intents = [self.intent() for _ in range(n)]
        todo = iter(intents)
        denied = failed = signatures = 0
        async with AsyncNewtonGateway(
            self.net.url, policy_client=CLIENTS[client], api_key=self.net.api_key
        ) as gw:

            async def worker() -> None:
                nonlocal denied, failed, signatures
                for intent in todo:
                    try:
                        att = await gw.authorize(intent)
                    except Exception:  # a timeout on a crowded machine: counted, not fatal
                        failed += 1
                        continue
                    denied += att.decision != "allow"
                    signatures += len(att.signatures)

            stats = self.stats()
            before = self.cpu()
            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
            after = self.cpu()
            stats = _delta(stats, self.stats())
        done = n - failed
        counts = {"n": done, "failed": failed, "denied": denied, "signatures": signatures}
        return counts | {"elapsed_s": elapsed, "gateway_stats": stats} | _cpu(before, after)

    def stats(self) -> dict[str, Any] | None:
        """The gateway's counts (``agentguard_gatewayStats``: tasks, operator evaluations,
        widenings by reason), or ``None`` from a tree without them."""
        assert self.net is not None
        try:
            found: dict[str, Any] = self.net._admin("agentguard_gatewayStats", {})
        except Exception:  # an older gateway: no such method
            return None
        return found

    async def soak(self, n: int, connections: int) -> dict[str, Any]:
        """``n`` authorizations of client 0 by the lean driver over ``connections`` keep-alive
        connections; CPU of every process and the gateway's RSS after."""
        assert self.net is not None
        if self.request is None:
            self.request = capture_request(
                lambda url: NewtonGateway(url, policy_client=CLIENTS[0], api_key=self.net_key())
            )
        first = self.counter + 1
        self.counter += n
        before = self.cpu()
        started = time.perf_counter()
        outcome = await drive(
            self.net.url, self.net_key(), self.request, range(first, first + n), connections
        )
        elapsed = time.perf_counter() - started
        after = self.cpu()
        return (
            outcome
            | {"elapsed_s": elapsed, "gateway_rss_mib": self.rss()["gateway_rss_mib"]}
            | _cpu(before, after)
        )

    def net_key(self) -> str:
        assert self.net is not None
        return self.net.api_key

    def profile(self, action: str) -> dict[str, Any]:
        """``bench_network.py --profile``: start (``SIGUSR1``) or stop and write (``SIGUSR2``)
        the profiler ``benchmarks/_profile/sitecustomize.py`` put in this process and in every
        process below it."""
        sig = {"start": signal.SIGUSR1, "stop": signal.SIGUSR2}[action]
        pids = [os.getpid(), *descendants(os.getpid())]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return {"pids": pids, "roles": {str(k): v for k, v in self.roles().items()}}

    def rss(self) -> dict[str, Any]:
        return {"gateway_rss_mib": rss_mib(self.gateway_pid())}

    def stop(self) -> dict[str, Any]:
        if self.net is not None:
            self.net.stop()
            self.net = None
        return {}


def _cpu(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """CPU seconds spent between two ``Side.cpu()`` readings: the client's, the network's
    (every other process), and each role's (``cpu_s``: they add up to the two)."""
    split = {role: after[role] - before.get(role, 0.0) for role in after}
    return {
        "cpu_client_s": split["client"],
        "cpu_network_s": sum(v for role, v in split.items() if role != "client"),
        "cpu_s": split,
    }


def _delta(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any] | None:
    """``after`` less ``before``, member by member (nested counts too)."""
    if before is None or after is None:
        return None
    return {
        k: _delta(before[k], v) if isinstance(v, dict) else v - before[k] for k, v in after.items()
    }


def main() -> None:
    side = Side()
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but answers on the protocol stream
    try:
        for line in sys.stdin:
            command = json.loads(line)
            op = command.pop("op")
            try:
                if op in ("concurrent", "soak"):
                    answer = asyncio.run(getattr(side, op)(**command))
                else:
                    answer = getattr(side, op)(**command)
            except Exception as exc:  # reported to the driver, which says so in the report
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            out.write("@@ " + json.dumps(answer) + "\n")
            out.flush()
            if op == "stop":
                break
    finally:
        side.stop()


if __name__ == "__main__":
    main()
