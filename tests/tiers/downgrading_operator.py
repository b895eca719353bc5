"""An operator that evaluates honestly but signs every decision at trust tier standard.

Run as ``python tests/tiers/downgrading_operator.py --port P --key-file F --token-file T``: it
holds the real operator key, so its signatures are valid, only over a lower tier than the
policy states.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from agentguard.network._keys import load_operator_key, load_token
from agentguard.network._server import run
from agentguard.network.operator import Operator, create_app
from agentguard.network.registry import Registry
from agentguard.policies._engine import Evaluation, PolicyEngine


class StandardOnly(PolicyEngine):
    def evaluate(self, *args: Any, **kwargs: Any) -> Evaluation:
        return dataclasses.replace(super().evaluate(*args, **kwargs), tier=0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key-file", required=True)
    parser.add_argument("--token-file", required=True)
    args = parser.parse_args()
    key = load_operator_key(args.key_file, "")
    operator = Operator(key, Registry(":memory:"), engine=StandardOnly())
    run(create_app(operator, token=load_token(args.token_file, "")), "127.0.0.1", args.port)
