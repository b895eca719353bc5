"""An operator that answers like a real one but signs a digest for another task.

Run as ``python tests/network/faulty_operator.py --port P --key-file F``: it holds the real
operator key, so only the gateway's own digest check can tell its signature is worthless.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from coincurve import PrivateKey

from agentguard._attestation import sign_attestation
from agentguard._eip712 import keccak
from agentguard.network._keys import load_operator_key, load_token
from agentguard.network._server import run
from agentguard.network.operator import Operator, create_app
from agentguard.network.registry import Registry


class WrongDigestOperator(Operator):
    def __init__(self, key: PrivateKey) -> None:
        super().__init__(key, Registry(":memory:"))
        self.key = key

    def evaluate_and_sign(
        self, params: Mapping[str, Any], now: float | None = None
    ) -> dict[str, Any]:
        answer = super().evaluate_and_sign(params, now)
        answer["signature"] = "0x" + sign_attestation(self.key, keccak(b"another task")).hex()
        return answer


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key-file", required=True)
    parser.add_argument("--token-file", required=True)
    args = parser.parse_args()
    operator = WrongDigestOperator(load_operator_key(args.key_file, ""))
    run(create_app(operator, token=load_token(args.token_file, "")), "127.0.0.1", args.port)
