"""``recover_signer`` calls libsecp256k1 directly (``_recover_public``); coincurve's
``PublicKey.from_signature_and_message`` + ``format`` is the reference it must equal: the same
public key for every signature that recovers, None (a ``MalformedSignature``) for every one
that does not, on seeded random, edge and hostile input."""

from __future__ import annotations

import random

import pytest
from coincurve import PrivateKey

from agentguard._attestation import (
    _SECP256K1_N,
    _recover_public,
    _recover_public_slow,
    recover_signer,
    sign_attestation,
)
from agentguard._eip712 import keccak
from agentguard._exceptions import MalformedSignature

_EDGE_SCALARS = [0, 1, 2, _SECP256K1_N // 2, _SECP256K1_N // 2 + 1, _SECP256K1_N - 1]
_EDGE_SCALARS += [_SECP256K1_N, _SECP256K1_N + 1, (1 << 256) - 1]


_reference = _recover_public_slow  # coincurve's objects: the code this replaced


def test_real_signatures_recover_the_same_key() -> None:
    rng = random.Random(11)
    for _ in range(300):
        key = PrivateKey(rng.randbytes(32))
        digest = rng.randbytes(32)
        signature = sign_attestation(key, digest)
        compact, recid = signature[:64], signature[64] - 27
        expected = key.public_key.format(compressed=False)[1:]
        assert _recover_public(digest, compact, recid) == expected
        assert _reference(digest, compact, recid) == expected
        assert recover_signer(digest, signature) == keccak(expected)[12:]
        # the other recovery id gives the other key (or none): the same on both paths
        assert _recover_public(digest, compact, 1 - recid) == _reference(digest, compact, 1 - recid)


def test_random_and_edge_signatures_agree_with_coincurve() -> None:
    rng = random.Random(12)
    cases: list[tuple[bytes, bytes, int]] = []
    for _ in range(400):
        cases.append((rng.randbytes(32), rng.randbytes(64), rng.randrange(2)))
    for r in _EDGE_SCALARS:
        for s in _EDGE_SCALARS:
            compact = r.to_bytes(32, "big") + s.to_bytes(32, "big")
            for digest in (bytes(32), b"\xff" * 32, rng.randbytes(32)):
                cases += [(digest, compact, 0), (digest, compact, 1)]
    recovered = 0
    for digest, compact, recid in cases:
        ours = _recover_public(digest, compact, recid)
        assert ours == _reference(digest, compact, recid), (digest.hex(), compact.hex(), recid)
        recovered += ours is not None
    assert 0 < recovered < len(cases)  # both outcomes were exercised


def test_refusals_are_unchanged() -> None:
    key = PrivateKey(b"\x07" * 32)
    digest = bytes(range(32))
    signature = sign_attestation(key, digest)
    # coincurve refuses a digest of another length, and a 32-byte one that is not bytes
    for bad_digest in (digest[:31], digest + b"\x00", b"", bytearray(digest)):
        with pytest.raises(MalformedSignature):
            recover_signer(bad_digest, signature)
    # r = 0 passes no range check; x = n - 1 has no point on the curve
    for compact in (bytes(32) + signature[32:64], (_SECP256K1_N - 1).to_bytes(32, "big") * 2):
        for v in (27, 28):
            with pytest.raises(MalformedSignature):
                recover_signer(digest, compact + bytes([v]))
    assert recover_signer(digest, bytearray(signature)) == recover_signer(digest, signature)
