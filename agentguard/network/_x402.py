"""The one form in which a payment's x402 details reach a policy (``data.wasm.x402``).

The client chooses ``wasm_args``; a policy must not be able to tell ``"0001000000"`` from
``"1000000"``, ``eip155:08453`` from ``eip155:8453``, or be handed keys such as
``"trusted_merchant": true`` that the intent does not imply. The gateway normalizes to this
form and the operators check that what they are handed is already in it.
"""

from __future__ import annotations

from typing import Any

from agentguard._exceptions import AgentGuardError, IntentError
from agentguard._intent import PaymentIntent, TransactionIntent

__all__ = ["X402_FIELDS", "canonical_x402"]

X402_FIELDS = frozenset(
    {"scheme", "network", "asset", "amount", "pay_to", "resource", "x402_version"}
)


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
    canonical = dict(payment.wasm_args()["x402"])
    canonical["network"] = f"eip155:{payment.chain_id}"
    return canonical
