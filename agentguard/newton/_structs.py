"""Newton's task structs, read from a gateway result and ABI-encoded exactly as Solidity does.

Layouts follow newton-contracts (``src/core/NewtonMessage.sol``,
``src/interfaces/INewtonProverTaskManager.sol``, ``src/interfaces/INewtonPolicy.sol``) at
commit 55696e92 (2026-07-23): ``PolicyData`` has no ``attestation`` field any more, and
``TaskLib.computeConsensusDigest`` is ``keccak256(abi.encode(taskResponse))`` with nothing
zeroed (before 8d21df0, April 2026, it zeroed ``policyData[i].attestation``; Newton's Base
deployment was updated after that change).

The gateway spells fields snake_case or camelCase and sends Solidity ``bytes`` as 0x-hex or
JSON number arrays; each field is read through ``agentguard._json`` (one spelling or two equal
ones). Anything missing or mistyped is ``MalformedAttestation``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode

from agentguard._eip712 import INTENT_TYPEHASH, address_word, keccak, uint_word
from agentguard._exceptions import MalformedAttestation
from agentguard._gateway import _evaluation_allows
from agentguard._json import json_bytes, one_spelling, preview

__all__ = [
    "NewtonIntent",
    "PolicyConfig",
    "PolicyData",
    "PolicyTaskData",
    "Task",
    "TaskResponse",
]

INTENT_ABI = "(address,address,uint256,bytes,uint256,bytes)"
POLICY_DATA_ABI = "(bytes,bytes,address,uint32)"
POLICY_TASK_DATA_ABI = f"(bytes32,address,bytes,{POLICY_DATA_ABI}[])"
POLICY_CONFIG_ABI = "(bytes,uint32)"
TASK_RESPONSE_ABI = (
    f"(bytes32,address,bytes32,address,{INTENT_ABI},bytes,bytes,"
    f"{POLICY_TASK_DATA_ABI},{POLICY_CONFIG_ABI},uint256)"
)
TASK_ABI = f"(bytes32,address,uint32,uint32,{INTENT_ABI},bytes,bytes,bytes,uint256)"
_MAX_POLICY_DATA = 64


def _doc(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedAttestation(f"{where} must be a JSON object, got {preview(value)}")
    return value


def _get(doc: Mapping[str, Any], snake: str, camel: str, where: str) -> Any:
    try:
        value = one_spelling(doc, snake, camel)
    except ValueError as exc:
        raise MalformedAttestation(f"{where}: {exc}") from None
    if value is None:
        raise MalformedAttestation(f"{where} has no {snake}")
    return value


def _bytes(doc: Mapping[str, Any], snake: str, camel: str, where: str) -> bytes:
    try:
        return json_bytes(_get(doc, snake, camel, where))
    except ValueError as exc:
        raise MalformedAttestation(f"{where}.{snake}: {exc}") from None


def _b32(doc: Mapping[str, Any], snake: str, camel: str, where: str) -> bytes:
    raw = _bytes(doc, snake, camel, where)
    if len(raw) != 32:
        raise MalformedAttestation(f"{where}.{snake} is {len(raw)} bytes, expected 32")
    return raw


def _address(doc: Mapping[str, Any], snake: str, camel: str, where: str) -> bytes:
    raw = _bytes(doc, snake, camel, where)
    if len(raw) != 20:
        raise MalformedAttestation(f"{where}.{snake} is {len(raw)} bytes, expected an address")
    return raw


def _uint(doc: Mapping[str, Any], snake: str, camel: str, where: str, bits: int = 256) -> int:
    value = _get(doc, snake, camel, where)
    if isinstance(value, str) and value[:2].lower() == "0x" and len(value) <= 66:
        with contextlib.suppress(ValueError):
            value = int(value, 16)
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 78:
        value = int(value)
    if type(value) is not int or not 0 <= value < 1 << bits:
        raise MalformedAttestation(f"{where}.{snake} must be a uint{bits}, got {preview(value)}")
    return value


@dataclass(frozen=True, slots=True)
class NewtonIntent:
    """``NewtonMessage.Intent``: the action, as the operators saw it."""

    sender: bytes
    to: bytes
    value: int
    data: bytes
    chain_id: int
    function_signature: bytes

    @classmethod
    def parse(cls, value: Any, where: str) -> NewtonIntent:
        doc = _doc(value, where)
        return cls(
            sender=_address(doc, "from", "from", where),
            to=_address(doc, "to", "to", where),
            value=_uint(doc, "value", "value", where),
            data=_bytes(doc, "data", "data", where),
            chain_id=_uint(doc, "chain_id", "chainId", where),
            function_signature=_bytes(doc, "function_signature", "functionSignature", where),
        )

    def abi(self) -> tuple[Any, ...]:
        return (
            "0x" + self.sender.hex(),
            "0x" + self.to.hex(),
            self.value,
            self.data,
            self.chain_id,
            self.function_signature,
        )

    @property
    def intent_hash(self) -> bytes:
        """agentguard's canonical intent hash (EIP-712 ``hashStruct(Intent)``) of these bytes."""
        return keccak(
            INTENT_TYPEHASH
            + address_word(self.sender)
            + address_word(self.to)
            + uint_word(self.value)
            + keccak(self.data)
            + uint_word(self.chain_id)
            + keccak(self.function_signature)
        )


@dataclass(frozen=True, slots=True)
class PolicyData:
    wasm_args: bytes
    data: bytes
    policy_data_address: bytes
    expire_block: int

    @classmethod
    def parse(cls, value: Any, where: str) -> PolicyData:
        doc = _doc(value, where)
        return cls(
            wasm_args=_bytes(doc, "wasm_args", "wasmArgs", where),
            data=_bytes(doc, "data", "data", where),
            policy_data_address=_address(doc, "policy_data_address", "policyDataAddress", where),
            expire_block=_uint(doc, "expire_block", "expireBlock", where, 32),
        )

    def abi(self) -> tuple[Any, ...]:
        return (
            self.wasm_args,
            self.data,
            "0x" + self.policy_data_address.hex(),
            self.expire_block,
        )


@dataclass(frozen=True, slots=True)
class PolicyTaskData:
    policy_id: bytes
    policy_address: bytes
    policy: bytes
    policy_data: tuple[PolicyData, ...]

    @classmethod
    def parse(cls, value: Any, where: str) -> PolicyTaskData:
        doc = _doc(value, where)
        entries = _get(doc, "policy_data", "policyData", where)
        if not isinstance(entries, list) or len(entries) > _MAX_POLICY_DATA:
            raise MalformedAttestation(
                f"{where}.policy_data must be an array of at most {_MAX_POLICY_DATA} entries"
            )
        return cls(
            policy_id=_b32(doc, "policy_id", "policyId", where),
            policy_address=_address(doc, "policy_address", "policyAddress", where),
            policy=_bytes(doc, "policy", "policy", where),
            policy_data=tuple(
                PolicyData.parse(e, f"{where}.policy_data.{i}") for i, e in enumerate(entries)
            ),
        )

    def abi(self) -> tuple[Any, ...]:
        return (
            self.policy_id,
            "0x" + self.policy_address.hex(),
            self.policy,
            [d.abi() for d in self.policy_data],
        )


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    policy_params: bytes
    expire_after: int

    @classmethod
    def parse(cls, value: Any, where: str) -> PolicyConfig:
        doc = _doc(value, where)
        return cls(
            policy_params=_bytes(doc, "policy_params", "policyParams", where),
            expire_after=_uint(doc, "expire_after", "expireAfter", where, 32),
        )

    def abi(self) -> tuple[Any, ...]:
        return (self.policy_params, self.expire_after)


@dataclass(frozen=True, slots=True)
class TaskResponse:
    """``INewtonProverTaskManager.TaskResponse``: what the operators' BLS signature covers."""

    task_id: bytes
    policy_client: bytes
    policy_id: bytes
    policy_address: bytes
    intent: NewtonIntent
    intent_signature: bytes
    evaluation_result: bytes
    policy_task_data: PolicyTaskData
    policy_config: PolicyConfig
    initialization_timestamp: int

    @classmethod
    def parse(cls, value: Any, where: str = "task_response") -> TaskResponse:
        doc = _doc(value, where)
        return cls(
            task_id=_b32(doc, "task_id", "taskId", where),
            policy_client=_address(doc, "policy_client", "policyClient", where),
            policy_id=_b32(doc, "policy_id", "policyId", where),
            policy_address=_address(doc, "policy_address", "policyAddress", where),
            intent=NewtonIntent.parse(_get(doc, "intent", "intent", where), f"{where}.intent"),
            intent_signature=_bytes(doc, "intent_signature", "intentSignature", where),
            evaluation_result=_bytes(doc, "evaluation_result", "evaluationResult", where),
            policy_task_data=PolicyTaskData.parse(
                _get(doc, "policy_task_data", "policyTaskData", where),
                f"{where}.policy_task_data",
            ),
            policy_config=PolicyConfig.parse(
                _get(doc, "policy_config", "policyConfig", where), f"{where}.policy_config"
            ),
            initialization_timestamp=_uint(
                doc, "initialization_timestamp", "initializationTimestamp", where
            ),
        )

    def abi(self) -> tuple[Any, ...]:
        return (
            self.task_id,
            "0x" + self.policy_client.hex(),
            self.policy_id,
            "0x" + self.policy_address.hex(),
            self.intent.abi(),
            self.intent_signature,
            self.evaluation_result,
            self.policy_task_data.abi(),
            self.policy_config.abi(),
            self.initialization_timestamp,
        )

    def encode(self) -> bytes:
        """``abi.encode(taskResponse)``."""
        return encode([TASK_RESPONSE_ABI], [self.abi()])

    def consensus_digest(self) -> bytes:
        """``TaskLib.computeConsensusDigest``: the certificate's ``messageHash``."""
        return keccak(self.encode())

    @property
    def allowed(self) -> bool:
        """``TaskLib.evaluateResult`` of the signed evaluation result."""
        return _evaluation_allows(self.evaluation_result)


@dataclass(frozen=True, slots=True)
class Task:
    """``INewtonProverTaskManager.Task``. Not covered by the certificate: only the fields a
    verifier cross-checks against the signed response, or reads as the gateway's claims
    (quorum numbers and threshold), are trusted as far as that."""

    task_id: bytes
    policy_client: bytes
    task_created_block: int
    quorum_threshold_percentage: int
    intent: NewtonIntent
    intent_signature: bytes
    wasm_args: bytes
    quorum_numbers: bytes
    initialization_timestamp: int

    @classmethod
    def parse(cls, value: Any, where: str = "task") -> Task:
        doc = _doc(value, where)
        return cls(
            task_id=_b32(doc, "task_id", "taskId", where),
            policy_client=_address(doc, "policy_client", "policyClient", where),
            task_created_block=_uint(doc, "task_created_block", "taskCreatedBlock", where, 32),
            quorum_threshold_percentage=_uint(
                doc, "quorum_threshold_percentage", "quorumThresholdPercentage", where, 32
            ),
            intent=NewtonIntent.parse(_get(doc, "intent", "intent", where), f"{where}.intent"),
            intent_signature=_bytes(doc, "intent_signature", "intentSignature", where),
            wasm_args=_bytes(doc, "wasm_args", "wasmArgs", where),
            quorum_numbers=_bytes(doc, "quorum_numbers", "quorumNumbers", where),
            initialization_timestamp=_uint(
                doc, "initialization_timestamp", "initializationTimestamp", where
            ),
        )

    def abi(self) -> tuple[Any, ...]:
        return (
            self.task_id,
            "0x" + self.policy_client.hex(),
            self.task_created_block,
            self.quorum_threshold_percentage,
            self.intent.abi(),
            self.intent_signature,
            self.wasm_args,
            self.quorum_numbers,
            self.initialization_timestamp,
        )
