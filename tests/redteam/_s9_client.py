"""Shared by the s9 client red-team tests: operators with eth-account keys (signatures made by
eth-account, not agentguard), and a gateway answer served as raw bytes over httpx's transport,
read by the real client (strict_loads, Attestation.from_json) and checked by the real Verifier.
The client checks an ECDSA answer's task id against the one its request derives, so a gateway
here answers with an attestation built for that id (``answering``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from eth_account import Account

from agentguard import NewtonGateway, TransactionIntent, Verifier
from agentguard._attestation import attestation_digest
from tests.task_ids import asked_id

POLICY_CLIENT = "0x000000000000000000000000000000000000c1E7"
OTHER_CLIENT = "0x000000000000000000000000000000000000bad0"
AGENT = "0x1111111111111111111111111111111111111111"
TOKEN = "0x2222222222222222222222222222222222222222"
PAYEE = "0x3333333333333333333333333333333333333333"
POLICY_ID = b"\x02" * 32
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

KEYS = [Account.from_key(bytes([i + 1]) * 32) for i in range(3)]
STRANGER = Account.from_key(b"\x77" * 32)


def intent(amount: int = 1_000_000, chain_id: int = 8453) -> TransactionIntent:
    return TransactionIntent.erc20_transfer(
        sender=AGENT, token=TOKEN, recipient=PAYEE, amount=amount, chain_id=chain_id
    )


def sign(account: Any, digest: bytes) -> bytes:
    """eth-account's own signature of a raw 32-byte digest: r ‖ s ‖ v, v = 27/28."""
    return bytes(Account.unsafe_sign_hash(digest, account.key).signature)


def attestation_doc(
    signed_for: TransactionIntent,
    *,
    signers: list[Any] | None = None,
    decision: str = "allow",
    expires_at: int | None = None,
    chain_id: int | None = None,
    policy_client: str = POLICY_CLIENT,
    tier: int = 0,
    task_id: bytes | None = None,
) -> dict[str, Any]:
    """The reference network's ``attestation`` object, signed by ``signers`` over exactly
    these values (so any field a test changes afterwards is a lie the signatures expose)."""
    expires_at = int(time.time()) + 60 if expires_at is None else expires_at
    task_id = task_id if task_id is not None else bytes(Account.create().key)
    digest = attestation_digest(
        chain_id=signed_for.chain_id if chain_id is None else chain_id,
        policy_client=bytes.fromhex(policy_client[2:]),
        task_id=task_id,
        policy_id=POLICY_ID,
        intent_hash=signed_for.intent_hash,
        allow=decision == "allow",
        expires_at=expires_at,
        tier=tier,
    )
    return {
        "decision": decision,
        "task_id": "0x" + task_id.hex(),
        "policy_id": "0x" + POLICY_ID.hex(),
        "policy_client": policy_client,
        "intent_hash": "0x" + signed_for.intent_hash.hex(),
        "expires_at": expires_at,
        "signatures": [
            {"operator": a.address, "signature": "0x" + sign(a, digest).hex()}
            for a in (KEYS[:2] if signers is None else signers)
        ],
        "reasons": [],
        "scheme": "ecdsa",
        "tier": tier,
    }


def body(att: dict[str, Any], request_id: Any) -> bytes:
    result = {
        "task_id": att["task_id"],
        "status": "success",
        "attestation": att,
        "task_response": {"evaluation_result": [0] * 31 + [int(att["decision"] == "allow")]},
    }
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}).encode()


def serve(answer: Callable[[dict[str, Any]], bytes]) -> NewtonGateway:
    """A gateway whose whole HTTP body is ``answer(request)`` (the JSON-RPC request it was
    sent): bytes, exactly as sent."""

    def handler(request: httpx.Request) -> httpx.Response:
        raw = answer(json.loads(request.content))
        return httpx.Response(200, stream=httpx.ByteStream(raw))

    return NewtonGateway(
        "http://127.0.0.1:1",
        policy_client=POLICY_CLIENT,
        api_key="sk-test-secret-api-key-1234567890",
        transport=httpx.MockTransport(handler),
        attempts=1,
    )


def answering(build: Callable[[bytes], dict[str, Any]]) -> NewtonGateway:
    """A gateway answering with the attestation ``build`` makes for the task id the client's
    request derives (``tests.task_ids.asked_id``): whatever a test bends, it bends in an
    answer to the task asked, so the client's task-id check passes it on to the Verifier."""
    return serve(lambda request: body(build(asked_id(request)), request["id"]))


def verifier(**kw: Any) -> Verifier:
    return Verifier([a.address for a in KEYS], policy_client=POLICY_CLIENT, threshold=2, **kw)
