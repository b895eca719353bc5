"""Run by test_crash.py in a child process: start a guarded transfer, then die by SIGKILL at
the named point, as a crash (or an OOM kill) would, with nothing cleaned up."""

from __future__ import annotations

import json
import os
import signal
import sys

from web3 import Web3

from agentguard import Guard, GuardedWallet, Ledger, Limits, Signer, WindowCap


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
    )

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    if cfg["die"] == "after_reserve":  # reserved and bound to the attestation, not signed
        original_bind = ledger.bind

        def bind(*args, **kwargs):  # type: ignore[no-untyped-def]
            original_bind(*args, **kwargs)
            die()

        ledger.bind = bind  # type: ignore[method-assign]
    else:
        original_send = w3.eth.send_raw_transaction

        def send(raw):  # type: ignore[no-untyped-def]
            original_send(raw)
            die()

        w3.eth.send_raw_transaction = send  # type: ignore[method-assign]
    wallet.transfer(cfg["payee"], cfg["amount"], asset=cfg["token"])
    raise SystemExit("unreachable: the process should have been killed")


if __name__ == "__main__":
    main()
