"""Run by test_crash.py (and tests/property) in a child process: start a guarded transfer, then
die by SIGKILL at the named point, as a crash (or an OOM kill) would, with nothing cleaned up.

Points: ``after_reserve`` (bound, unsigned), ``after_sign`` (signed, not yet marked),
``after_mark_signed``, ``after_send``, ``after_commit``, ``never`` (runs to completion, exit 0).
``cfg["audit"]``, when given, is an audit log file the wallet writes to."""

from __future__ import annotations

import json
import os
import signal
import sys

from web3 import Web3

from agentguard import Guard, GuardedWallet, Ledger, Limits, Signer, WindowCap
from agentguard.audit import AuditLog

_LEDGER_STEPS = {
    "after_reserve": "bind",
    "after_mark_signed": "mark_signed",
    "after_commit": "commit",
}


def _die_after(owner: object, name: str) -> None:
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    setattr(owner, name, wrapper)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    w3 = Web3(Web3.HTTPProvider(cfg["rpc"]))
    ledger = Ledger(cfg["ledger"])
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
        limits=Limits(windows=[WindowCap(cfg["token"], 3600, 10**12)]),
        audit=AuditLog(cfg["audit"]) if cfg.get("audit") else None,
    )

    die = cfg["die"]
    if die in _LEDGER_STEPS:
        _die_after(ledger, _LEDGER_STEPS[die])
    elif die == "after_sign":
        _die_after(Signer, "sign_transaction")
    elif die == "after_send":
        _die_after(w3.eth, "send_raw_transaction")
    wallet.transfer(cfg["payee"], cfg["amount"], asset=cfg["token"])
    if die != "never":
        raise SystemExit("unreachable: the process should have been killed")


if __name__ == "__main__":
    main()
