"""BN254 (alt_bn128) as EigenLayer's contracts use it: points, ``hashToG1``, BLS keys, the
gamma-randomised signature check, and the pairing check itself.

Points are plain integer tuples in the EVM's encoding: G1 ``(x, y)`` with ``(0, 0)`` the
identity; G2 ``((x_im, x_re), (y_im, y_re))`` — EigenLayer's ``G2Point.X = [X1, X0]``, the
order the pairing precompile (EIP-197) reads. Group arithmetic is py_ecc's (already a
dependency of eth-account); the pairing check goes through a ``PairingCheck``: the chain's own
precompile ``0x08`` via ``eth_call`` (milliseconds; see docs/newton.md for why) or py_ecc
locally (about half a second, no RPC trusted for it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from eth_abi.abi import encode
from py_ecc.fields import optimized_bn128_FQ as FQ
from py_ecc.fields import optimized_bn128_FQ2 as FQ2
from py_ecc.fields import optimized_bn128_FQ12 as FQ12
from py_ecc.optimized_bn128.optimized_curve import (
    G1,
    G2,
    Z1,
    add,
    b,
    b2,
    curve_order,
    field_modulus,
    is_on_curve,
    multiply,
    neg,
    normalize,
)
from py_ecc.optimized_bn128.optimized_pairing import final_exponentiate, pairing

from agentguard._eip712 import keccak

__all__ = [
    "FP",
    "FR",
    "G1Point",
    "G2Point",
    "PairingCheck",
    "aggregate_g1",
    "aggregate_g2",
    "certificate_digest",
    "g1_add",
    "g1_mul",
    "g1_neg",
    "hash_to_g1",
    "keypair",
    "local_pairing",
    "precompile_pairing",
    "sign",
    "verify_signature",
]

FP = field_modulus
FR = curve_order
_SQRT_EXP = (FP + 1) // 4  # FP ≡ 3 (mod 4): a square root is beta^((p+1)/4)
PRECOMPILE_PAIRING = "0x0000000000000000000000000000000000000008"

G1Point = tuple[int, int]
G2Point = tuple[tuple[int, int], tuple[int, int]]
PairingCheck = Callable[[Sequence[tuple[G1Point, G2Point]]], bool]
"""True iff the product of the pairings e(P_i, Q_i) is one (what precompile 0x08 answers);
raises ``ValueError`` for a point the check refuses (not on the curve / not in the group)."""

NEG_G2: G2Point = (
    (
        11559732032986387107991004021392285783925812861821192530917403151452391805634,
        10857046999023057135944570762232829481370756359578518086990519993285655852781,
    ),
    (
        17805874995975841540914202342111839520379459829704422454583296818431106115052,
        13392588948715843804641432497768002650278120570034223513918757245338268106653,
    ),
)
"""EigenLayer's ``BN254.negGeneratorG2()``."""

BN254_CERTIFICATE_TYPEHASH = keccak(
    b"BN254Certificate(uint32 referenceTimestamp,bytes32 messageHash)"
)


# --- conversions between the EVM encoding and py_ecc's projective points -------------------


def _g1(p: G1Point) -> Any:
    x, y = p
    if not (0 <= x < FP and 0 <= y < FP):
        raise ValueError("a G1 coordinate is not below the field modulus")
    if x == 0 and y == 0:
        return Z1
    point = (FQ(x), FQ(y), FQ(1))
    if not is_on_curve(point, b):
        raise ValueError("a G1 point is not on the curve")
    return point


def _from_g1(point: Any) -> G1Point:
    if point[2] == FQ.zero():
        return (0, 0)
    x, y = normalize(point)
    return (int(x), int(y))


def _g2(q: G2Point) -> Any:
    (x_im, x_re), (y_im, y_re) = q
    if not all(0 <= c < FP for c in (x_im, x_re, y_im, y_re)):
        raise ValueError("a G2 coordinate is not below the field modulus")
    if x_im == x_re == y_im == y_re == 0:
        return (FQ2.one(), FQ2.one(), FQ2.zero())
    point = (FQ2([x_re, x_im]), FQ2([y_re, y_im]), FQ2.one())
    if not is_on_curve(point, b2):
        raise ValueError("a G2 point is not on the curve")
    return point


def _from_g2(point: Any) -> G2Point:
    if point[2] == FQ2.zero():
        return ((0, 0), (0, 0))
    x, y = normalize(point)
    return ((int(x.coeffs[1]), int(x.coeffs[0])), (int(y.coeffs[1]), int(y.coeffs[0])))


# --- G1 arithmetic (what the verifier needs) --------------------------------------------------


def g1_add(p: G1Point, q: G1Point) -> G1Point:
    return _from_g1(add(_g1(p), _g1(q)))


def g1_neg(p: G1Point) -> G1Point:
    return _from_g1(neg(_g1(p)))


def g1_mul(p: G1Point, scalar: int) -> G1Point:
    return _from_g1(multiply(_g1(p), scalar % FR))


def aggregate_g1(points: Sequence[G1Point]) -> G1Point:
    total = Z1
    for p in points:
        total = add(total, _g1(p))
    return _from_g1(total)


def aggregate_g2(points: Sequence[G2Point]) -> G2Point:
    total = (FQ2.one(), FQ2.one(), FQ2.zero())
    for q in points:
        total = add(total, _g2(q))
    return _from_g2(total)


def hash_to_g1(digest: bytes) -> G1Point:
    """EigenLayer's ``BN254.hashToG1``: try-and-increment from ``x = digest mod p``."""
    if len(digest) != 32:
        raise ValueError("hashToG1 takes a 32-byte digest")
    x = int.from_bytes(digest, "big") % FP
    while True:
        beta = (x * x * x + 3) % FP
        y = pow(beta, _SQRT_EXP, FP)
        if y * y % FP == beta:
            return (x, y)
        x = (x + 1) % FP


def certificate_digest(reference_timestamp: int, message_hash: bytes) -> bytes:
    """``calculateCertificateDigest``: what the operators' BLS signature is over."""
    return keccak(
        encode(
            ["bytes32", "uint32", "bytes32"],
            [BN254_CERTIFICATE_TYPEHASH, reference_timestamp, message_hash],
        )
    )


# --- keys and signatures (operators' side; tests and the stand-in quorum use these) ----------


def keypair(seed: bytes) -> tuple[int, G1Point, G2Point]:
    """A BLS key from ``seed``: ``(secret, pubkey G1, pubkey G2)``."""
    secret = int.from_bytes(hashlib.sha256(b"agentguard-bn254-key" + seed).digest(), "big") % FR
    if secret == 0:
        secret = 1
    return secret, _from_g1(multiply(G1, secret)), _from_g2(multiply(G2, secret))


def sign(secret: int, digest: bytes) -> G1Point:
    """``secret · hashToG1(digest)``: a BLS signature in G1, as EigenLayer operators sign."""
    return g1_mul(hash_to_g1(digest), secret)


# --- the check ------------------------------------------------------------------------------


def verify_signature(
    digest: bytes,
    signature: G1Point,
    apk_g1: G1Point,
    apk_g2: G2Point,
    pairing_check: PairingCheck,
) -> bool:
    """``BN254SignatureVerifier.verifySignature``: with gamma = keccak(digest, apk_g1, apk_g2,
    signature) mod r, check e(sig + gamma*apk1, -G2) * e(H(m) + gamma*G1, apk2) = 1. The gamma
    term ties the G1 and G2 aggregate keys together (same secret), so a G2 key that is not the
    G1 aggregate's twin fails."""
    gamma = (
        int.from_bytes(
            keccak(
                digest
                + encode(
                    ["uint256"] * 8,
                    [
                        apk_g1[0],
                        apk_g1[1],
                        apk_g2[0][0],
                        apk_g2[0][1],
                        apk_g2[1][0],
                        apk_g2[1][1],
                        signature[0],
                        signature[1],
                    ],
                )
            ),
            "big",
        )
        % FR
    )
    left = g1_add(signature, g1_mul(apk_g1, gamma))
    right = g1_add(hash_to_g1(digest), g1_mul((1, 2), gamma))
    return pairing_check([(left, NEG_G2), (right, apk_g2)])


def local_pairing(pairs: Sequence[tuple[G1Point, G2Point]]) -> bool:
    """The pairing product check in py_ecc, with the precompile's subgroup check on G2."""
    acc = FQ12.one()
    for p, q in pairs:
        g1, g2 = _g1(p), _g2(q)
        if g2[2] != FQ2.zero() and multiply(g2, FR)[2] != FQ2.zero():
            raise ValueError("a G2 point is not in the prime-order subgroup")
        if g1[2] == FQ.zero() or g2[2] == FQ2.zero():
            continue
        acc = acc * pairing(g2, g1, final_exponentiate=False)
    return bool(final_exponentiate(acc) == FQ12.one())


def pairing_input(pairs: Sequence[tuple[G1Point, G2Point]]) -> bytes:
    """EIP-197 input: per pair x, y, x_im, x_re, y_im, y_re as 32-byte words."""
    words: list[int] = []
    for (x, y), ((xi, xr), (yi, yr)) in pairs:
        words += [x, y, xi, xr, yi, yr]
    return b"".join(w.to_bytes(32, "big") for w in words)


def precompile_pairing(call: Callable[[bytes], bytes]) -> PairingCheck:
    """A ``PairingCheck`` answered by the chain's pairing precompile; ``call(input)`` performs
    ``eth_call`` to address 0x08 and returns its output (it raises for a refused input)."""

    def check(pairs: Sequence[tuple[G1Point, G2Point]]) -> bool:
        for p, q in pairs:  # refuse off-curve input here, with a clear message
            _g1(p)
            _g2(q)
        out = call(pairing_input(pairs))
        if len(out) != 32:
            raise ValueError(f"the pairing precompile answered {len(out)} bytes, expected 32")
        return int.from_bytes(out, "big") == 1

    return check
