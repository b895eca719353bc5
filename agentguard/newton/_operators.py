"""Reads Newton's operator table (``BN254OperatorSetInfo``) from its certificate verifier.

On a destination chain (Base) Newton's ``ViewBN254CertificateVerifier`` holds, per operator
set and reference timestamp, the root of the operator-info tree, the operator count, the
aggregate G1 key and the total stake weights, written by EigenLayer's operator table updater.
This reader asks it through the configured RPC (``eth_call``), exactly the views the contract
itself consults in ``_validateCertificateTimestamp`` and ``_verifyCertificate``. A table, once
written for a reference timestamp, never changes (``updateOperatorTable`` only accepts a newer
timestamp), so it is cached per (operator set, reference timestamp); whether the table is
stale or its root was disabled can change, so those are asked every time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode, encode
from web3 import Web3

from agentguard._eip712 import keccak
from agentguard._exceptions import AttestationExpired, NodeUnavailable, VerificationError
from agentguard.newton._certificate import OPERATOR_SET_INFO_ABI, OperatorSetInfo

__all__ = ["Head", "OperatorSet", "OperatorTable"]

_CACHE_SIZE = 256


def _selector(signature: str) -> bytes:
    return keccak(signature.encode())[:4]


_GET_INFO = _selector("getOperatorSetInfo((address,uint32),uint32)")
_IS_SET = _selector("isReferenceTimestampSet((address,uint32),uint32)")
_STALENESS = _selector("maxOperatorTableStaleness((address,uint32))")
_UPDATER = _selector("operatorTableUpdater()")
_ROOT_VALID = _selector("isRootValidByTimestamp(uint32)")


@dataclass(frozen=True, slots=True)
class OperatorSet:
    """EigenLayer's ``OperatorSet{avs, id}``: Newton's AVS on the source chain and the quorum."""

    avs: str
    id: int

    def abi(self) -> tuple[str, int]:
        return (self.avs, self.id)


@dataclass(frozen=True, slots=True)
class Head:
    """The chain's latest block, as the RPC reports it."""

    number: int
    timestamp: int


class OperatorTable:
    """The operator table behind ``certificate_verifier``, read through ``web3``."""

    def __init__(self, web3: Web3, certificate_verifier: str) -> None:
        self._web3 = web3
        self.address = Web3.to_checksum_address(certificate_verifier)
        self._cache: OrderedDict[tuple[str, int, int], OperatorSetInfo] = OrderedDict()
        self._lock = threading.Lock()
        self._updater: str | None = None

    def _call(self, to: str, data: bytes, what: str) -> bytes:
        try:
            out = self._web3.eth.call({"to": Web3.to_checksum_address(to), "data": data})
        except Exception as exc:
            raise NodeUnavailable(
                f"reading {what} from Newton's certificate verifier {to} failed "
                f"({type(exc).__name__}); check the RPC and retry"
            ) from None
        if not out:
            raise VerificationError(
                f"{to} returned nothing for {what}: it is not Newton's certificate verifier "
                "on this chain (check certificate_verifier and the RPC's chain)"
            )
        return bytes(out)

    def _decoded(self, types: list[str], to: str, data: bytes, what: str) -> Any:
        raw = self._call(to, data, what)
        try:
            return decode(types, raw)
        except Exception:
            raise VerificationError(f"{to} answered {what} with undecodable data") from None

    def head(self) -> Head:
        try:
            block = self._web3.eth.get_block("latest")
            return Head(int(block["number"]), int(block["timestamp"]))
        except Exception as exc:
            raise NodeUnavailable(
                f"reading the latest block failed ({type(exc).__name__}); check the RPC and retry"
            ) from None

    def info(self, operator_set: OperatorSet, reference_timestamp: int) -> OperatorSetInfo:
        """The table at ``reference_timestamp``; refused unless the verifier has one for it
        (an unset timestamp reads as zeros, which must never count as a table)."""
        key = (operator_set.avs.lower(), operator_set.id, reference_timestamp)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        args = encode(["(address,uint32)", "uint32"], [operator_set.abi(), reference_timestamp])
        (is_set,) = self._decoded(["bool"], self.address, _IS_SET + args, "isReferenceTimestampSet")
        if not is_set:
            raise VerificationError(
                f"Newton's certificate verifier has no operator table for operator set "
                f"{operator_set.id} at reference timestamp {reference_timestamp}"
            )
        (value,) = self._decoded(
            [OPERATOR_SET_INFO_ABI], self.address, _GET_INFO + args, "getOperatorSetInfo"
        )
        info = OperatorSetInfo.from_abi(value)
        with self._lock:
            self._cache[key] = info
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return info

    def check_usable(self, operator_set: OperatorSet, reference_timestamp: int, head: Head) -> None:
        """``_validateCertificateTimestamp``: not staler than the set's ``maxStalenessPeriod``
        at the chain's current time, and the table's global root not disabled."""
        (staleness,) = self._decoded(
            ["uint32"],
            self.address,
            _STALENESS + encode(["(address,uint32)"], [operator_set.abi()]),
            "maxOperatorTableStaleness",
        )
        if staleness and head.timestamp > reference_timestamp + staleness:
            raise AttestationExpired(
                f"the operator table at reference timestamp {reference_timestamp} is stale "
                f"(older than {staleness}s at block {head.number}); ask for a new task"
            )
        if self._updater is None:  # an immutable of the verifier: asked once
            (self._updater,) = self._decoded(
                ["address"], self.address, _UPDATER, "operatorTableUpdater"
            )
        updater = self._updater
        (valid,) = self._decoded(
            ["bool"],
            updater,
            _ROOT_VALID + encode(["uint32"], [reference_timestamp]),
            "isRootValidByTimestamp",
        )
        if not valid:
            raise VerificationError(
                f"the operator table root at reference timestamp {reference_timestamp} was "
                "disabled by EigenLayer's table updater"
            )
