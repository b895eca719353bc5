"""Small, exact EIP-712 encoders for the few fixed types agentguard signs and checks.

Written out by hand (not through a generic typed-data walker) because they sit on the hot
path of every authorization: hashing an intent and an attestation costs a few keccak calls.
Every function here is pinned against eth-account's generic encoder in the tests.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from Crypto.Hash import keccak as _keccak_mod

_raw_api: Any
try:
    _raw_api = importlib.import_module("Crypto.Util._raw_api")
except ImportError:  # a private module: a release may move it
    _raw_api = None

_new_keccak = _keccak_mod.new


def _keccak_object(data: bytes | bytearray | memoryview) -> bytes:
    return _new_keccak(data=data, digest_bits=256).digest()


def _keccak_cffi(data: bytes | bytearray | memoryview) -> bytes:
    """What ``Keccak_Hash`` computes (a 64-byte capacity, 24 rounds, Keccak's 0x01 padding),
    through its C functions without its wrapper objects, on a state each thread keeps and
    resets (``_Scratch``). Anything but ``bytes``, a ``bytearray`` or a contiguous
    one-dimensional ``memoryview`` of single bytes goes to the object, which decides
    (``bytes(5)`` would be five zero bytes, not the error the object raises; the object hashes
    ``len(view)`` bytes of a view of wider items or of more dimensions, fewer than
    ``bytes(view)`` holds)."""
    kind = type(data)
    if kind is not bytes:
        if kind is not bytearray and not (
            kind is memoryview
            and data.c_contiguous  # type: ignore[union-attr]
            and data.ndim == 1  # type: ignore[union-attr]
            and data.itemsize == 1  # type: ignore[union-attr]
        ):
            return _keccak_object(data)
        data = bytes(data)
    mine = _scratch.__dict__  # this thread's
    held = mine.pop("held", None) or _Scratch.new()
    state, out, view = held
    if (
        _lib.keccak_reset(state)
        or _lib.keccak_absorb(state, data, len(data))
        or _lib.keccak_digest(state, out, 32, 1)
    ):
        raise ValueError("keccak failed")
    digest: bytes = view[:]
    mine["held"] = held
    return digest


class _Scratch(threading.local):
    """One thread's Keccak state and digest buffer (``held``), made on its first hash: a
    state made and destroyed per hash costs a third more (two more C calls, two
    allocations). Per thread, so no two threads ever share one; taken out while in use, so
    a hash that starts inside another on the same thread (a signal handler's) makes its own.
    """

    @staticmethod
    def new() -> tuple[Any, Any, Any]:
        holder = _ffi.new("void **")
        if _lib.keccak_init(holder, 64, 24):
            raise ValueError("keccak_init failed")
        state = _ffi.gc(holder[0], _lib.keccak_destroy)
        out = _ffi.new("uint8_t[32]")
        return state, out, _ffi.buffer(out)


_scratch = _Scratch()
_ffi: Any = getattr(_raw_api, "ffi", None)
_lib: Any = getattr(_keccak_mod, "_raw_keccak_lib", None)
# Keccak-256 of b"", and a message longer than one 136-byte block (checked against the object).
_EMPTY = bytes.fromhex("c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470")
_BLOCKS = bytes(range(256)) * 2


def _fastest() -> Callable[[bytes | bytearray | memoryview], bytes]:
    """``_keccak_cffi`` if pycryptodome's private cffi functions are there and still hash as
    the public object does (a release may change their signatures or behaviour, not only drop
    them), else the object: checked once, on known vectors, before anything is hashed."""
    if getattr(_raw_api, "backend", None) != "cffi" or _lib is None or _ffi is None:
        return _keccak_object
    _scratch.__dict__.pop("held", None)  # checked on a state made now, by these functions
    try:
        # twice the empty message: the second on a state reset after a longer one
        same = (
            _keccak_cffi(b"") == _EMPTY
            and _keccak_cffi(_BLOCKS) == _keccak_object(_BLOCKS)
            and _keccak_cffi(b"") == _EMPTY
        )
    except Exception:  # any failure of a private API: the public one
        return _keccak_object
    return _keccak_cffi if same else _keccak_object


keccak = _fastest()
"""Keccak-256 straight from pycryptodome's C code (what ``eth_hash.auto`` wraps): through its
cffi functions when that is its backend and they pass ``_fastest``'s check (a few µs less per
call, and every authorization makes several), else through its hash object."""


__all__ = [
    "ATTESTATION_TYPE",
    "DOMAIN_TYPE",
    "INTENT_TYPE",
    "address_word",
    "bool_word",
    "domain_separator",
    "keccak",
    "typed_data_digest",
    "uint_word",
]

DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
# Newton's `NewtonMessage.Intent`, field for field.
INTENT_TYPE = (
    "Intent(address from,address to,uint256 value,bytes data,uint256 chainId,"
    "bytes functionSignature)"
)
ATTESTATION_TYPE = (
    "Attestation(bytes32 taskId,bytes32 policyId,address policyClient,bytes32 intentHash,"
    "bool allow,uint64 expiresAt,uint8 tier)"
)

DOMAIN_NAME = "agentguard"
DOMAIN_VERSION = "1"

DOMAIN_TYPEHASH = keccak(DOMAIN_TYPE.encode())
INTENT_TYPEHASH = keccak(INTENT_TYPE.encode())
ATTESTATION_TYPEHASH = keccak(ATTESTATION_TYPE.encode())

_UINT256_MAX = (1 << 256) - 1


def uint_word(value: int) -> bytes:
    if not 0 <= value <= _UINT256_MAX:
        raise ValueError(f"{value} does not fit in uint256")
    return value.to_bytes(32, "big")


def address_word(address: bytes) -> bytes:
    if len(address) != 20:
        raise ValueError("an address is 20 bytes")
    return b"\x00" * 12 + address


def bool_word(flag: bool) -> bytes:
    return b"\x00" * 31 + (b"\x01" if flag else b"\x00")


@lru_cache(maxsize=1024)
def domain_separator(chain_id: int, verifying_contract: bytes) -> bytes:
    """The attestation domain: bound to the chain and to the policy client (vault) address."""
    return keccak(
        DOMAIN_TYPEHASH
        + keccak(DOMAIN_NAME.encode())
        + keccak(DOMAIN_VERSION.encode())
        + uint_word(chain_id)
        + address_word(verifying_contract)
    )


def typed_data_digest(domain: bytes, struct_hash: bytes) -> bytes:
    return keccak(b"\x19\x01" + domain + struct_hash)
