"""An agent process for the crash and fault tests: it recovers (as every agent must at start),
then pays one guarded USDC transfer after another through the real pipeline until it is killed.

``cfg["die"]``, when given, is ``[step, "before" | "after", nth]``: a test-only patch of
``Runner.execute`` (the pipeline's one seam for fault injection) in this child process SIGKILLs
it around the ``nth`` step of that type; otherwise the parent kills it at a random instant.
Prints ``recovered <n>`` (actions its recovery settled) and ``ready``, then ``done <tx_hash> <amount>`` per landed transfer, and
``error <ErrorClass>`` and an indented line with its message per typed refusal (it then goes
on with the next transfer).

``--zygote``: imports everything once, then forks one agent process per ``spawn`` line on stdin
(a fresh interpreter costs seconds on a busy machine; a fork, milliseconds) and answers
``poll <pid>`` with its exit status (negative: the signal that killed it) or ``running``.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import traceback
from typing import Any

from web3 import Web3

from agentguard import Guard, GuardedWallet, Limits, Signer, WindowCap
from agentguard._exceptions import AgentGuardError
from agentguard.audit import AuditLog
from agentguard.ledger import open_ledger
from agentguard.pipeline import Runner


def _die_around(step_name: str, when: str, nth: int) -> None:
    original = Runner.execute
    seen = 0

    def execute(self: Runner, step: Any, port: Any = None) -> Any:
        nonlocal seen
        if type(step).__name__ == step_name:
            seen += 1
            if seen == nth and when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            try:
                return original(self, step, port)
            finally:  # "after" is after it ran, also when it raised (else it never dies)
                if seen == nth:
                    os.kill(os.getpid(), signal.SIGKILL)
        return original(self, step, port)

    Runner.execute = execute  # type: ignore[method-assign]


def run(cfg: dict[str, Any]) -> None:
    if cfg.get("die"):
        _die_around(*cfg["die"])
    w3 = Web3(Web3.HTTPProvider(cfg["rpc"], request_kwargs={"timeout": 10}))
    ledger = open_ledger(cfg["ledger"])
    guard = Guard.connect(
        cfg["gateway"],
        policy_client=cfg["policy_client"],
        operators=cfg["operators"],
        api_key=cfg["api_key"],
        policy_id=cfg["policy_id"],
    )
    wallet = GuardedWallet(
        signer=Signer.from_key(cfg["key"]),
        guard=guard,
        web3=w3,
        ledger=ledger,
        limits=Limits(windows=[WindowCap(cfg["token"], 86_400, 10**15)]),
        audit=AuditLog(cfg["audit"]),
    )
    report = wallet.recover()
    mine = [r for r in (*report.committed, *report.released) if r.action]
    print(f"recovered {len(mine)}", flush=True)
    print("ready", flush=True)
    for i in range(cfg.get("count", 10**6)):
        amount = cfg["first_amount"] + i  # unique per attempt: a duplicate onchain = sent twice
        try:
            receipt = wallet.transfer(cfg["payee"], amount, asset=cfg["token"])
        except AgentGuardError as exc:
            print(f"error {type(exc).__name__}\n  {exc}", flush=True)  # the why, indented
            continue
        print(f"done {receipt.tx_hash} {amount}", flush=True)


def _child(cfg: dict[str, Any]) -> None:
    fd = os.open(cfg["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    # the parent's timeout asks for every thread's stack (SIGUSR1) before it kills a stuck agent
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    code = 1
    try:
        run(cfg)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def zygote() -> None:
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "spawn":
            pid = os.fork()
            if pid == 0:
                _child(json.loads(arg))
            print(pid, flush=True)
        elif command == "poll":  # its exit status, "running", or "gone" (reaped before)
            try:
                done, status = os.waitpid(int(arg), os.WNOHANG)
            except ChildProcessError:
                print("gone", flush=True)
                continue
            print(os.waitstatus_to_exitcode(status) if done else "running", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "--zygote":
        zygote()
    else:
        run(json.loads(sys.argv[1]))
