"""BN254 BLS for the Newton vault tests: operator keys, signatures, aggregates (py_ecc).

Points come out in the form the contracts take: G1 as (x, y), G2 in the precompile's order
((x_im, x_re), (y_im, y_re)). Hashing to G1 is the try-and-increment map the validator uses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from py_ecc.fields import optimized_bn128_FQ as FQ
from py_ecc.optimized_bn128.optimized_curve import (
    G1,
    G2,
    Z1,
    Z2,
    add,
    curve_order,
    field_modulus,
    is_inf,
    multiply,
    neg,
    normalize,
)

from agentguard._eip712 import keccak
from agentguard.chain.newton import G1Point, G2Point

P = field_modulus
R = curve_order


def hash_to_g1(message: bytes) -> Any:
    x = int.from_bytes(message, "big") % P
    while True:
        beta = (x * x * x + 3) % P
        y = pow(beta, (P + 1) // 4, P)
        if y * y % P == beta:
            return (FQ(x), FQ(y), FQ.one())
        x = (x + 1) % P


def negate(point: Any) -> Any:
    return neg(point)


def generator_multiple(scalar: int) -> G1Point:
    return g1(multiply(G1, scalar))


def g1(point: Any) -> G1Point:
    if is_inf(point):
        return (0, 0)
    x, y = normalize(point)
    return (int(x), int(y))


def g2(point: Any) -> G2Point:
    x, y = normalize(point)
    return ((int(x.coeffs[1]), int(x.coeffs[0])), (int(y.coeffs[1]), int(y.coeffs[0])))


@dataclass(frozen=True)
class Operator:
    secret: int
    weight: int

    @classmethod
    def from_seed(cls, seed: str, weight: int) -> Operator:
        return cls(int.from_bytes(keccak(seed.encode()), "big") % R, weight)

    @cached_property
    def g1_point(self) -> Any:
        return multiply(G1, self.secret)

    @cached_property
    def g2_point(self) -> Any:
        return multiply(G2, self.secret)

    @cached_property
    def pubkey(self) -> G1Point:
        return g1(self.g1_point)

    @cached_property
    def pubkey_g2(self) -> G2Point:
        return g2(self.g2_point)

    def sign_point(self, message: bytes) -> Any:
        return multiply(hash_to_g1(message), self.secret)

    def sign(self, message: bytes) -> G1Point:
        return g1(self.sign_point(message))


def sum_g1(points: Iterable[Any]) -> Any:
    total = Z1
    for point in points:
        total = add(total, point)
    return total


def aggregate_signature(signers: Iterable[Operator], message: bytes) -> G1Point:
    return g1(sum_g1(op.sign_point(message) for op in signers))


def aggregate_g2(signers: Iterable[Operator]) -> G2Point:
    total = Z2
    for op in signers:
        total = add(total, op.g2_point)
    return g2(total)
