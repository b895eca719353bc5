from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard import Attestation, TransactionIntent
from agentguard._attestation import attestation_digest, operator_address, sign_attestation

from ..task_ids import asked_id

POLICY_CLIENT = "0x000000000000000000000000000000000000c1E7"  # EIP-55
AGENT = "0x1111111111111111111111111111111111111111"
TOKEN = "0x2222222222222222222222222222222222222222"
PAYEE = "0x3333333333333333333333333333333333333333"


@dataclass
class Operators:
    keys: list[PrivateKey]

    @property
    def addresses(self) -> list[str]:
        return [operator_address(k) for k in self.keys]

    def attest(
        self,
        intent: TransactionIntent,
        *,
        signers: list[int] | None = None,
        decision: str = "allow",
        expires_at: int | None = None,
        task_id: bytes | None = None,
        policy_id: bytes = b"\x02" * 32,
        chain_id: int | None = None,
        policy_client: str = POLICY_CLIENT,
        keys: list[PrivateKey] | None = None,
        **extra: Any,
    ) -> Attestation:
        expires_at = expires_at if expires_at is not None else int(time.time()) + 60
        task_id = task_id if task_id is not None else PrivateKey().secret
        digest = attestation_digest(
            chain_id=chain_id if chain_id is not None else intent.chain_id,
            policy_client=bytes.fromhex(policy_client[2:]),
            task_id=task_id,
            policy_id=policy_id,
            intent_hash=intent.intent_hash,
            allow=decision == "allow",
            expires_at=expires_at,
        )
        use = keys if keys is not None else [self.keys[i] for i in (signers or [0, 1])]
        return Attestation(
            decision=decision,  # type: ignore[arg-type]
            task_id=task_id,
            policy_id=policy_id,
            policy_client=policy_client,
            intent_hash=intent.intent_hash,
            expires_at=expires_at,
            signatures=tuple(
                {"operator": operator_address(k), "signature": sign_attestation(k, digest)}
                for k in use
            ),
            **extra,
        )

    def __post_init__(self) -> None:
        _KEYS.update((operator_address(k).lower(), k) for k in self.keys)

    def bound(self, result: Any, request: dict[str, Any]) -> Any:
        return bound(result, request)


_KEYS: dict[str, PrivateKey] = {}
"""Every test operator's key by address, for ``bound``."""


def bound(result: Any, request: dict[str, Any]) -> Any:
    """``result`` (a reference network's answer) as an honest gateway answers ``request``:
    an attestation the test operators signed as it stands is re-signed by the same keys under
    the task id derived from what the request asked (``tests.task_ids.asked_id``). Anything a
    test altered (a field, a signature, the result's own task id) is left exactly as it is."""
    att = result.get("attestation") if isinstance(result, dict) else None
    if not isinstance(att, dict) or att.get("scheme", "ecdsa") != "ecdsa":
        return result
    try:
        signers = [_KEYS[s["operator"].lower()] for s in att["signatures"]]
        chain_id = TransactionIntent.from_wire(request["params"]["intent"]).chain_id

        def signatures(task_id: bytes) -> list[dict[str, str]]:
            digest = attestation_digest(
                chain_id=chain_id,
                policy_client=bytes.fromhex(att["policy_client"][2:]),
                task_id=task_id,
                policy_id=bytes.fromhex(att["policy_id"][2:]),
                intent_hash=bytes.fromhex(att["intent_hash"][2:]),
                allow=att["decision"] == "allow",
                expires_at=att["expires_at"],
                tier=att.get("tier", 0),
            )
            return [
                {"operator": s["operator"], "signature": "0x" + sign_attestation(k, digest).hex()}
                for s, k in zip(att["signatures"], signers, strict=True)
            ]

        old = bytes.fromhex(att["task_id"][2:])
        if signatures(old) != att["signatures"] or not signers:
            return result  # not as the operators signed it: the test's lie stays
        new = asked_id(request)
    except Exception:
        return result
    hexed = "0x" + new.hex()
    out = dict(result, attestation=dict(att, task_id=hexed, signatures=signatures(new)))
    if result.get("task_id") == att["task_id"]:
        out["task_id"] = hexed
    return out


@pytest.fixture(scope="session")
def operators() -> Operators:
    return Operators([PrivateKey() for _ in range(3)])


@pytest.fixture
def intent() -> TransactionIntent:
    return TransactionIntent.erc20_transfer(
        sender=AGENT, token=TOKEN, recipient=PAYEE, amount=1_000_000, chain_id=8453
    )


@pytest.fixture
def make_intent() -> Callable[..., TransactionIntent]:
    def make(
        amount: int = 1_000_000, chain_id: int = 8453, recipient: str = PAYEE
    ) -> TransactionIntent:
        return TransactionIntent.erc20_transfer(
            sender=AGENT, token=TOKEN, recipient=recipient, amount=amount, chain_id=chain_id
        )

    return make
