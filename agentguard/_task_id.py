"""A reference-network task's id, and the one form of a payment's x402 details it covers.

Operators sign ``(task_id, policy_id, intent_hash, expires_at, tier)``; a payment's intent hash
is its ERC-20 transfer's, the same for ``exact`` and ``upto`` and for any ``resource``. The
task id is what binds the rest of the request to the signature::

    task_id = keccak(address_word(policy_client) ‖ intent_hash ‖ details_hash ‖ utf8(request_id))
    details_hash = keccak(canonical_json(x402)) for a payment, 32 zero bytes otherwise

The first three members are 32 bytes each and the request id (the client's JSON-RPC id, so a
retry is the same task) is last, so no two inputs share the bytes hashed. The gateway derives
it, every operator recomputes it from what it evaluates (and refuses a task whose id is not so
derived), and the client checks it against what it asked: a gateway cannot show the operators
other x402 details than the client sent without changing the task id the client sees.

``canonical_x402`` is the one form in which the details reach a policy (``data.wasm.x402``):
a policy must not be able to tell ``"0001000000"`` from ``"1000000"``, ``eip155:08453`` from
``eip155:8453``, or be handed keys such as ``"trusted_merchant": true`` that the intent does
not imply. The gateway normalizes to this form and the operators check that what they are
handed is already in it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from agentguard._eip712 import address_word, keccak
from agentguard._exceptions import AgentGuardError, IntentError
from agentguard._intent import PaymentIntent, TransactionIntent
from agentguard._json import canonical_json

__all__ = [
    "MAX_REQUEST_ID",
    "NO_DETAILS",
    "X402_FIELDS",
    "canonical_x402",
    "details_hash",
    "task_id",
]

X402_FIELDS = frozenset(
    {"scheme", "network", "asset", "amount", "pay_to", "resource", "x402_version"}
)
MAX_REQUEST_ID = 200
"""Characters in a request id (the gateway refuses longer JSON-RPC ids)."""
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}\Z")
NO_DETAILS = b"\x00" * 32
"""``details_hash`` of a task without x402 details (no keccak output is all zeros)."""


def canonical_x402(x402: Any, intent: TransactionIntent) -> dict[str, Any]:
    """``x402`` in canonical form; ``IntentError`` unless it describes exactly ``intent``."""
    if not isinstance(x402, dict):
        raise IntentError("x402 details must be an object")
    unknown = [k for k in x402 if k not in X402_FIELDS]
    if unknown:
        shown = ", ".join(repr(k)[:40] for k in unknown[:5])
        raise IntentError(f"x402 details carry keys no x402 requirement has: {shown}")
    try:
        payment = PaymentIntent(payer=intent.from_, **x402)
    except AgentGuardError as exc:
        raise IntentError(f"x402 details are not a valid x402 requirement: {exc.message}") from None
    if payment.intent_hash != intent.intent_hash:
        raise IntentError("x402 details describe a different payment than the intent's transfer")
    try:  # hashed as UTF-8 into the task id: a lone surrogate has no bytes to hash
        payment.resource.encode()
    except UnicodeEncodeError:
        raise IntentError("x402 resource is not encodable as UTF-8") from None
    canonical = dict(payment.wasm_args()["x402"])
    canonical["network"] = f"eip155:{payment.chain_id}"
    return canonical


def details_hash(x402: Mapping[str, Any] | None) -> bytes:
    """keccak of ``canonical_json`` of already canonical details; ``NO_DETAILS`` for none."""
    return NO_DETAILS if x402 is None else keccak(canonical_json(x402))


def task_id(
    policy_client: str, intent_hash: bytes, x402: Mapping[str, Any] | None, request_id: object
) -> bytes:
    """The id of the task ``request_id`` asks about (see the module's docstring); ``x402`` is
    canonical (``canonical_x402``) or ``None``. ``IntentError`` for a request id that is not
    a string of 1..``MAX_REQUEST_ID`` characters encodable as UTF-8."""
    if type(request_id) is not str or not 0 < len(request_id) <= MAX_REQUEST_ID:
        raise IntentError(f"request id must be a string of 1..{MAX_REQUEST_ID} characters")
    try:
        rid = request_id.encode()
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8, so no bytes to hash
        raise IntentError("request id is not encodable as UTF-8") from None
    if len(intent_hash) != 32:
        raise IntentError("intent hash must be 32 bytes")
    if type(policy_client) is not str or not _ADDRESS.match(policy_client):
        raise IntentError("policy client must be 0x and 40 hex digits")
    client = bytes.fromhex(policy_client[2:])
    return keccak(address_word(client) + intent_hash + details_hash(x402) + rid)
