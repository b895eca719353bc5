"""The gateway reads a vote's usual signature hex without the regex: it must accept and refuse
exactly what ``HEX`` then ``fromhex`` did. (Signers are recovered by
``agentguard._attestation.recover_signer``, held by tests/redteam/test_s9_client_*.py.)"""

from __future__ import annotations

import random

from agentguard._exceptions import MalformedSignature
from agentguard.network.gateway import _fanout
from agentguard.network.gateway._params import HEX


def _reference_bytes(signature: object) -> bytes:
    """The vote's hex check before: ``HEX`` then ``fromhex``."""
    if not isinstance(signature, str) or not HEX.match(signature):
        raise MalformedSignature("signature is not hex")
    return bytes.fromhex(signature.removeprefix("0x"))


def _read(fn: object, signature: object) -> tuple[str, object]:
    try:
        return "ok", fn(signature)  # type: ignore[operator]
    except MalformedSignature as exc:
        return "refused", exc.message


def test_signature_hex_is_read_as_before() -> None:
    rng = random.Random(5)
    alphabet = "0123456789abcdefABCDEFxXg \n\t٣²é"
    cases: list[object] = [None, 5, [], {}, "", "0x", "\n", "0x\n", "ab" * 66, "0X" + "ab" * 65]
    for _ in range(20_000):
        text = list("0x" + rng.randbytes(65).hex())
        for _ in range(rng.randrange(0, 3)):
            at = rng.randrange(len(text) + 1)
            edit = rng.randrange(3)
            if edit == 0:
                text.insert(at, rng.choice(alphabet))
            elif edit == 1:
                del text[at : at + 1]
            else:
                text[at : at + 1] = [rng.choice(alphabet)]
        cases.append("".join(text))
    outcomes = {"ok": 0, "refused": 0}
    for case in cases:
        expected = _read(_reference_bytes, case)
        assert _read(_fanout._signature_bytes, case) == expected, case
        outcomes[expected[0]] += 1
    assert outcomes["ok"] > 3000 and outcomes["refused"] > 3000
