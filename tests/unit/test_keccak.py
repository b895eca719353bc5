"""``_eip712.keccak`` calls pycryptodome directly: it must equal eth-hash's Keccak-256."""

from __future__ import annotations

import random

from eth_hash.auto import keccak as eth_keccak
from hypothesis import given
from hypothesis import strategies as st

from agentguard._eip712 import _keccak_cffi, _keccak_object, keccak


def test_known_vectors() -> None:
    assert keccak(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    assert keccak(b"transfer(address,uint256)")[:4].hex() == "a9059cbb"


def test_equals_eth_hash_across_block_boundaries() -> None:
    rng = random.Random(7)
    for size in [*range(0, 300), 1023, 1024, 1025, 65536]:
        data = rng.randbytes(size)
        assert keccak(data) == eth_keccak(data)


@given(st.binary(max_size=2048))
def test_equals_eth_hash(data: bytes) -> None:
    assert keccak(data) == eth_keccak(data)


def test_accepts_bytes_like() -> None:
    assert keccak(bytearray(b"abc")) == keccak(memoryview(b"abc")) == eth_keccak(b"abc")


def test_the_cffi_calls_equal_the_hash_object() -> None:
    """``_keccak_cffi`` (pycryptodome's C functions called directly) against its hash object:
    the same digest for bytes-like input, the same error type for anything else."""
    assert keccak is _keccak_cffi  # this virtualenv's pycryptodome uses cffi
    rng = random.Random(11)
    for size in [*range(0, 280), 4096, 100_000]:
        data = rng.randbytes(size)
        assert _keccak_cffi(data) == _keccak_object(data)
        assert _keccak_cffi(bytearray(data)) == _keccak_object(bytearray(data))
        assert _keccak_cffi(memoryview(data)) == _keccak_object(memoryview(data))
    strided = memoryview(b"abcdef")[::2]
    hostile: list[object] = [5, "abc", None, 2.5, [1, 2], strided, object()]
    for value in hostile:
        outcomes = []
        for hash_ in (_keccak_cffi, _keccak_object):
            try:
                outcomes.append(hash_(value))  # type: ignore[arg-type]
            except Exception as exc:
                outcomes.append(type(exc))
        assert outcomes[0] == outcomes[1], value
