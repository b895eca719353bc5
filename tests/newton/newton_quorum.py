"""A BLS (BN254) operator quorum for tests: the stand-in for Newton's operators and its
certificate verifier on Base.

``NewtonQuorum.deploy(w3)`` deploys ``NewtonOperatorTable`` on an anvil chain and writes an
operator table (keys from seeds, stake weights) at a reference timestamp. ``certify(result)``
adds ``signature_data`` to a Newton ``newt_createTask`` result: an ABI-encoded
``BN254Certificate`` whose ``messageHash`` is the consensus digest of the result's
``task_response``, signed by the chosen operators, with a Merkle witness for each non-signer.
``newton_result(...)`` builds such a result for an intent, as Newton's gateway shapes it.
The fake Newton gateway takes ``certify`` as its hook.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from web3 import Web3
from web3.contract import Contract
from web3.types import RPCEndpoint

from agentguard._attestation import Attestation
from agentguard._intent import PaymentIntent, TransactionIntent
from agentguard.chain import deploy, transact
from agentguard.newton import (
    BN254Certificate,
    G1Point,
    G2Point,
    NewtonVerifier,
    OperatorInfo,
    TaskResponse,
    Witness,
    aggregate_g1,
    aggregate_g2,
    certificate_digest,
    keypair,
    merkle_proof,
    merkle_root,
    operator_info_leaf,
    sign,
)

OWNER = Account.from_key(
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
).address  # anvil's first dev account
AVS = "0x0000000000000000000000000000000000000a05"
POLICY_ADDRESS = "0x0000000000000000000000000000000000001234"


@dataclass(frozen=True)
class Operator:
    secret: int
    g1: G1Point
    g2: G2Point
    weights: tuple[int, ...]

    @property
    def info(self) -> OperatorInfo:
        return OperatorInfo(self.g1, self.weights)


@dataclass
class NewtonQuorum:
    w3: Web3
    table: Contract
    operators: list[Operator]
    reference_timestamp: int
    operator_set_id: int = 0
    avs: str = AVS
    tables: dict[int, list[Operator]] = field(default_factory=dict)

    @classmethod
    def deploy(
        cls,
        w3: Web3,
        weights: Sequence[int] = (100, 100, 100),
        *,
        seed: bytes = b"op",
        operator_set_id: int = 0,
        max_staleness: int = 0,
        at: str | None = None,
        avs: str = AVS,
        reference_timestamp: int | None = None,
    ) -> NewtonQuorum:
        """``at``: put the table's code at that address (anvil), e.g. Newton's published
        certificate verifier on Base, so a client configured with Newton's defaults reads it."""
        table = deploy(w3, "NewtonOperatorTable", sender=OWNER)
        if at is not None:
            address = Web3.to_checksum_address(at)
            code = Web3.to_hex(w3.eth.get_code(table.address))
            owner_slot = "0x" + bytes(12).hex() + OWNER[2:].lower()
            w3.provider.make_request(RPCEndpoint("anvil_setCode"), [address, code])
            w3.provider.make_request(
                RPCEndpoint("anvil_setStorageAt"), [address, "0x0", owner_slot]
            )  # slot 0: the table's owner, who may write tables
            table = w3.eth.contract(address=address, abi=table.abi)
        operators = make_operators(weights, seed)
        if reference_timestamp is None:
            reference_timestamp = int(w3.eth.get_block("latest")["timestamp"]) - 60
        quorum = cls(w3, table, operators, reference_timestamp, operator_set_id, avs)
        quorum.register(reference_timestamp, operators, max_staleness=max_staleness)
        return quorum

    def register(
        self, reference_timestamp: int, operators: list[Operator], *, max_staleness: int = 0
    ) -> None:
        """Write the operator table for ``reference_timestamp`` (newer than the last one)."""
        leaves = [operator_info_leaf(op.info) for op in operators]
        width = len(operators[0].weights)
        info = (
            merkle_root(leaves),
            len(operators),
            aggregate_g1([op.g1 for op in operators]),
            [sum(op.weights[i] for op in operators) for i in range(width)],
        )
        transact(
            self.w3,
            self.table.functions.updateOperatorTable(
                (Web3.to_checksum_address(self.avs), self.operator_set_id),
                reference_timestamp,
                info,
                max_staleness,
            ),
            sender=OWNER,
        )
        self.tables[reference_timestamp] = operators

    def verifier(self, policy_client: str, **kwargs: Any) -> NewtonVerifier:
        return NewtonVerifier(
            policy_client=policy_client,
            web3=self.w3,
            certificate_verifier=self.table.address,
            source_avs=self.avs,
            **kwargs,
        )

    def certificate(
        self,
        message_hash: bytes,
        *,
        signers: Sequence[int] | None = None,
        reference_timestamp: int | None = None,
    ) -> BN254Certificate:
        """Operators ``signers`` (indices; default all) of the table at ``reference_timestamp``
        sign ``message_hash``; every other operator is a non-signer with its Merkle witness."""
        reference = self.reference_timestamp if reference_timestamp is None else reference_timestamp
        operators = self.tables[reference]
        chosen = range(len(operators)) if signers is None else signers
        digest = certificate_digest(reference, message_hash)
        leaves = [operator_info_leaf(op.info) for op in operators]
        return BN254Certificate(
            reference_timestamp=reference,
            message_hash=message_hash,
            signature=aggregate_g1([sign(operators[i].secret, digest) for i in chosen]),
            apk=aggregate_g2([operators[i].g2 for i in chosen]),
            non_signer_witnesses=tuple(
                Witness(i, merkle_proof(leaves, i), operators[i].info)
                for i in range(len(operators))
                if i not in chosen
            ),
        )

    def certify(self, result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """``result`` plus ``signature_data``: the certificate over its task response."""
        digest = TaskResponse.parse(result["task_response"]).consensus_digest()
        cert = self.certificate(digest, **kwargs)
        return {**result, "signature_data": "0x" + cert.encode().hex()}


def make_operators(weights: Sequence[int], seed: bytes) -> list[Operator]:
    out = []
    for i, weight in enumerate(weights):
        secret, g1, g2 = keypair(seed + bytes([i]))
        out.append(Operator(secret, g1, g2, (weight,)))
    return out


def newton_result(
    intent: TransactionIntent | PaymentIntent,
    *,
    policy_client: str,
    policy_id: bytes,
    task_id: bytes,
    expiration: int,
    task_created_block: int,
    threshold: int = 40,
    expire_after: int = 300,
    allow: bool = True,
    quorum_numbers: bytes = b"\x00",
    initialization_timestamp: int | None = None,
) -> dict[str, Any]:
    """A ``newt_createTask`` result as Newton's gateway shapes it: ``task`` camelCase,
    ``task_response`` snake_case with a camelCase intent, bytes as number arrays. The signed
    ``initializationTimestamp`` defaults to now (anvil's clock follows the host's)."""
    created = int(time.time()) if initialization_timestamp is None else initialization_timestamp
    wire = intent.newton_intent().wire()
    camel_intent = {
        "from": wire["from"],
        "to": wire["to"],
        "value": wire["value"],
        "data": list(bytes.fromhex(wire["data"][2:])),
        "chainId": wire["chain_id"],
        "functionSignature": list(bytes.fromhex(wire["function_signature"][2:])),
    }
    evaluation = (1 if allow else 0).to_bytes(32, "big")
    return {
        "task_id": "0x" + task_id.hex(),
        "status": "success",
        "error": None,
        "timestamp": created,
        "expiration": expiration,
        "task": {
            "taskId": "0x" + task_id.hex(),
            "policyClient": policy_client,
            "taskCreatedBlock": task_created_block,
            "quorumThresholdPercentage": threshold,
            "intent": camel_intent,
            "intentSignature": [],
            "wasmArgs": [],
            "quorumNumbers": list(quorum_numbers),
            "initializationTimestamp": created,
        },
        "task_response": {
            "task_id": "0x" + task_id.hex(),
            "policy_client": policy_client,
            "policy_id": "0x" + policy_id.hex(),
            "policy_address": POLICY_ADDRESS,
            "intent": camel_intent,
            "intent_signature": [],
            "evaluation_result": list(evaluation),
            "policy_task_data": {
                "policy_id": "0x" + policy_id.hex(),
                "policy_address": POLICY_ADDRESS,
                "policy": list(b"package agentguard"),
                "policy_data": [
                    {
                        "wasm_args": [],
                        "data": list(b"{}"),
                        "policy_data_address": "0x0000000000000000000000000000000000005678",
                        "expire_block": task_created_block + 1000,
                    }
                ],
            },
            "policy_config": {"policyParams": list(b"{}"), "expireAfter": expire_after},
            "initialization_timestamp": created,
        },
        "operator_errors": [],
    }


def attestation_for(
    result: dict[str, Any], intent: TransactionIntent | PaymentIntent
) -> Attestation:
    """What the client makes of a Newton result (part W's gateway does the same): the summary
    fields, scheme ``newton-bls``, and the whole result kept as compact JSON."""
    response = result["task_response"]
    return Attestation(
        decision="allow",
        task_id=response["task_id"],
        policy_id=response["policy_id"],
        policy_client=response["policy_client"],
        intent_hash="0x" + intent.intent_hash.hex(),
        expires_at=result["expiration"],
        scheme="newton-bls",
        newton_result=json.dumps(result, separators=(",", ":")),
    )
