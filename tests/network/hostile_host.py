"""An operator host that holds the real keys but answers in a way the gateway must refuse.

Run as ``python -m tests.network.hostile_host --port P --token-file T --mode M --key-file F
[--key-file F ...]``. Modes: ``extra`` (also answers, validly signed, for a key it was not
asked for), ``duplicate`` (answers twice for one key), ``wrong_signer`` (signs with a key it
does not hold), ``copied`` (one key's signature under the other keys' addresses), and
``wrong_task`` (each key signs another task's digest).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from coincurve import PrivateKey

from agentguard._attestation import operator_address, sign_attestation
from agentguard._eip712 import keccak
from agentguard.network._keys import load_operator_key, load_token
from agentguard.network._server import run
from agentguard.network.operator import Operator, create_app
from agentguard.network.registry import Registry


class HostileHost(Operator):
    def __init__(self, keys: list[PrivateKey], mode: str) -> None:
        super().__init__(keys, Registry(":memory:"))
        self.keys = {operator_address(k).lower(): k for k in keys}
        self.mode = mode

    def evaluate_for(self, params: Mapping[str, Any], now: float | None = None) -> dict[str, Any]:
        wanted = list(params["operators"])
        if self.mode == "extra":
            spare = [a for a in self.addresses if a.lower() not in {w.lower() for w in wanted}]
            answers = super().evaluate_for({**params, "operators": wanted + spare[:1]}, now)
            return answers
        result = super().evaluate_for(params, now)
        answers = result["answers"]
        if self.mode == "duplicate":
            if len(answers) > 1:
                answers[1] = dict(answers[0])
            else:
                answers.append(dict(answers[0]))
        elif self.mode == "wrong_signer":
            for answer in answers:
                answer["signature"] = "0x" + sign_attestation(PrivateKey(), keccak(b"x")).hex()
        elif self.mode == "copied":
            for answer in answers[1:]:
                answer["signature"] = answers[0]["signature"]
        elif self.mode == "wrong_task":
            for answer in answers:
                key = self.keys[answer["operator"].lower()]
                answer["signature"] = "0x" + sign_attestation(key, keccak(b"another task")).hex()
        return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key-file", action="append", required=True)
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--mode", required=True)
    args = parser.parse_args()
    host = HostileHost([load_operator_key(f, "") for f in args.key_file], args.mode)
    run(create_app(host, token=load_token(args.token_file, "")), "127.0.0.1", args.port)
