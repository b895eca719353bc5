"""Run by the property tests in a child process: x402's own server and facilitator
(``tests/x402/peer.py``) settling on anvil. A separate process, so the facilitator's
signatures never reach the agent process's ``SigningSpy``. Prints the base URL, serves until
its stdin closes."""

from __future__ import annotations

import json
import sys

from tests.x402 import peer


def main() -> None:
    cfg = json.loads(sys.argv[1])
    fac = peer.facilitator(cfg["facilitator_key"], cfg["rpc"])
    with peer.serve(peer.app(fac, cfg["token"], cfg["payee"])) as url:
        print(url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
