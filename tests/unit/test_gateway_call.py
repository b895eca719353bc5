"""A JSON-RPC call's id and body (``_gateway._Call``), built without ``uuid.uuid4()`` and a
``json.dumps`` encoder per call: the same text those gave, for ids and for bodies of every
kind of params (seeded random documents, non-ASCII text, big integers)."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

from agentguard import _gateway


def test_call_ids_are_version_4_uuids_spelled_as_uuid4_spells_them() -> None:
    ids = [_gateway._call_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text  # lower-case 8-4-4-4-12, as str(uuid.uuid4())
    # every bit that is not fixed by the version and variant varies
    seen_zero = seen_one = 0
    for text in ids:
        value = uuid.UUID(text).int
        seen_one |= value
        seen_zero |= ~value
    fixed = (0xF << 76) | (0x3 << 62)
    free = ((1 << 128) - 1) & ~fixed
    assert seen_one & free == free and seen_zero & free == free


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randrange(-(2**80), 2**80)
    if kind == 3:
        return rng.uniform(-1e6, 1e6)
    if kind in (4, 5):
        return "".join(
            rng.choice('ab"\\\n\u00e9\u4e2d\U0001f600/<>') for _ in range(rng.randrange(8))
        )
    if kind in (6, 7):
        return {
            f"k{rng.randrange(50)}\u00e9": _value(rng, depth + 1) for _ in range(rng.randrange(5))
        }
    return [_value(rng, depth + 1) for _ in range(rng.randrange(5))]


def test_call_bodies_are_what_json_dumps_gave() -> None:
    rng = random.Random(1302)
    for _ in range(2000):
        params = {"p": _value(rng), "intent": {"to": "0x" + "ab" * 20, "value": "0x0"}}
        call = _gateway._Call("newt_createTask", params, 5.0)
        expected = json.dumps(
            {"jsonrpc": "2.0", "id": call.id, "method": "newt_createTask", "params": params},
            separators=(",", ":"),
        ).encode()
        assert call.body == expected
