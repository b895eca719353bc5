"""A recorded answer read back encodes to the very bytes first answered (a retry answered from
the record by the idempotency cache gets them): ``pack`` keeps the compact form only when the
rebuild lists every key in the answer's order, else it stores the answer whole."""

from __future__ import annotations

import json
import random
from typing import Any

from agentguard.network._rpc import encode
from agentguard.network.state._compact import _build, pack, unpack

TASK_ID = "0x" + "99" * 32


def _answer(rng: random.Random, tier: bool) -> dict[str, Any]:
    intent = {
        "from": "0x" + rng.randbytes(20).hex(),
        "to": "0x" + rng.randbytes(20).hex(),
        "value": hex(rng.randint(0, 10**18)),
        "data": "0xa9059cbb" + rng.randbytes(64).hex(),
        "chainId": 8453,
    }
    wasm = json.dumps({"now": rng.randint(0, 2**32), "spend": {"amount": str(rng.random())}})
    own: dict[str, Any] = {
        "v": "agentguard.compact/1",
        "t": rng.randint(0, 2**32),
        "q": rng.choice([51, 66, 100]),
        "i": intent,
        "s": "0x" + rng.randbytes(65).hex(),
        "a": "0x",
        "w": wasm,
        "x": rng.randint(0, 2**32),
        "e": [],
        "d": "allow",
        "h": "0x" + rng.randbytes(32).hex(),
        "g": [{"operator": "0x" + rng.randbytes(20).hex(), "signature": "0x" + "ab" * 65}],
        "r": ["ok"] if rng.random() < 0.5 else [],
    }
    if tier:
        own["y"] = rng.randint(0, 3)
    shared = {
        "c": "0x" + rng.randbytes(20).hex(),
        "p": "0x" + rng.randbytes(32).hex(),
        "n": "0x" + "00" * 20,
        "o": "0x" + "00" * 31 + "01",
        "m": "0x" + rng.randbytes(32).hex(),
        "pp": "0x" + rng.randbytes(rng.randint(0, 300)).hex(),
        "ea": rng.randint(1, 3600),
        "b": 0,
    }
    # through JSON, as the gateway's answer is a fresh dict of its own
    answer: dict[str, Any] = json.loads(json.dumps(_build(TASK_ID, own, shared)))
    return answer


def _read_back(answer: dict[str, Any]) -> dict[str, Any]:
    packed = pack(TASK_ID, answer)
    return unpack(TASK_ID, packed.text, None if packed.shared is None else packed.shared[1])


def test_a_recorded_answer_reads_back_as_the_same_bytes() -> None:
    rng = random.Random(5)
    for n in range(200):
        answer = _answer(rng, tier=n % 4 != 0)
        assert pack(TASK_ID, answer).shared is not None  # the compact form
        assert encode(_read_back(answer)) == encode(answer)


def test_an_answer_whose_keys_are_in_another_order_is_stored_whole() -> None:
    rng = random.Random(6)
    for n in range(50):
        answer = _answer(rng, tier=True)
        where = rng.choice(["top", "attestation", "task", "config"])
        if where == "top":
            answer = dict(reversed(list(answer.items())))
        elif where == "attestation":
            answer["attestation"] = dict(reversed(list(answer["attestation"].items())))
        elif where == "task":
            answer["task"] = dict(reversed(list(answer["task"].items())))
        else:
            config = answer["task_response"]["policy_config"]
            answer["task_response"]["policy_config"] = dict(reversed(list(config.items())))
        assert pack(TASK_ID, answer).shared is None, (n, where)
        assert encode(_read_back(answer)) == encode(answer)
