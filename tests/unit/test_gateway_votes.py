"""The gateway's vote check recovers signers with the public-key → address step remembered
(``_fanout.recover_signer``): it must accept and refuse exactly what
``agentguard._attestation.recover_signer`` does, with the same address or the same message,
on seeded random signatures and on every hostile shape (lengths, recovery ids, zero, high or
out-of-range r/s, bytes that recover to nobody), and across the remembered table's reset."""

from __future__ import annotations

import random

import pytest
from coincurve import PrivateKey

from agentguard._attestation import recover_signer as reference
from agentguard._attestation import sign_attestation
from agentguard._exceptions import MalformedSignature
from agentguard.network.gateway import _fanout
from agentguard.network.gateway._fanout import recover_signer
from agentguard.network.gateway._params import HEX

N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _outcome(fn: object, digest: bytes, signature: bytes) -> tuple[str, object]:
    try:
        return "ok", fn(digest, signature)  # type: ignore[operator]
    except MalformedSignature as exc:
        return "refused", exc.message


def _variants(rng: random.Random, digest: bytes, key: PrivateKey) -> list[bytes]:
    good = sign_attestation(key, digest)
    r, s, v = good[:32], good[32:64], good[64]
    high_s = (N - int.from_bytes(s, "big")).to_bytes(32, "big")
    return [
        good,
        r + s + bytes([v - 27]),  # 0/1 recovery ids are accepted too
        r + s + bytes([55 - v]),  # the other recovery id: another key
        r + high_s + bytes([55 - v]),  # the malleated twin
        r + s + bytes([rng.choice([2, 3, 26, 29, 255])]),
        bytes(32) + s + bytes([v]),
        r + bytes(32) + bytes([v]),
        N.to_bytes(32, "big") + s + bytes([v]),
        (N - 1).to_bytes(32, "big") + s + bytes([v]),
        r + (N // 2).to_bytes(32, "big") + bytes([v]),
        r + (N // 2 + 1).to_bytes(32, "big") + bytes([v]),
        good[:64],
        good + b"\x00",
        b"",
        rng.randbytes(65),
        rng.randbytes(64) + bytes([rng.choice([27, 28])]),
    ]


@pytest.mark.parametrize("seed", range(3))
def test_same_signers_and_same_refusals_as_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    keys = [PrivateKey(rng.randbytes(32)) for _ in range(5)]
    seen = {"ok": 0, "refused": 0}
    for _ in range(150):
        digest = rng.randbytes(32)
        for signature in _variants(rng, digest, rng.choice(keys)):
            expected = _outcome(reference, digest, signature)
            assert _outcome(recover_signer, digest, signature) == expected
            assert _outcome(recover_signer, digest, signature) == expected  # remembered
            seen[expected[0]] += 1
    assert seen["ok"] > 300 and seen["refused"] > 1000


def test_the_remembered_table_is_bounded_and_stays_right() -> None:
    rng = random.Random(9)
    for _ in range(_fanout._ADDRESSES_MAX + 40):
        key = PrivateKey(rng.randbytes(32))
        digest = rng.randbytes(32)
        signature = sign_attestation(key, digest)
        assert recover_signer(digest, signature) == reference(digest, signature)
        assert len(_fanout._addresses) <= _fanout._ADDRESSES_MAX


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
