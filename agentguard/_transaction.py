"""EIP-1559 transaction encoding and signing, written out for the wallet's hot path.

eth-account spends most of a signature validating and re-formatting a dict; the secp256k1
signature itself is a few tens of microseconds with coincurve. This encoder builds exactly one
shape (type 2, empty access list) from already-validated intent fields, and is pinned
byte-for-byte against eth-account in the tests.
"""

from __future__ import annotations

import rlp
from coincurve import PrivateKey

from agentguard._eip712 import keccak

__all__ = ["sign_eip1559"]


def sign_eip1559(
    key: PrivateKey,
    *,
    chain_id: int,
    nonce: int,
    max_priority_fee_per_gas: int,
    max_fee_per_gas: int,
    gas: int,
    to: bytes,
    value: int,
    data: bytes,
) -> tuple[bytes, bytes]:
    """``(raw transaction, transaction hash)`` for a signed type-2 transaction."""
    fields = [chain_id, nonce, max_priority_fee_per_gas, max_fee_per_gas, gas, to, value, data, []]
    digest = keccak(b"\x02" + rlp.encode(fields))
    signature = key.sign_recoverable(digest, hasher=None)
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    raw = b"\x02" + rlp.encode([*fields, signature[64], r, s])
    return raw, keccak(raw)
