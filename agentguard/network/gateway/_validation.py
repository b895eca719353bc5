"""Task input validation: a ``newt_createTask`` request's params, checked once, as values.

Everything a caller sends is checked here before any state is touched; what comes out
(``TaskInput``) is what the rest of the hot path trusts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentguard._exceptions import AgentGuardError
from agentguard._intent import TransactionIntent
from agentguard._json import strict_loads
from agentguard._task_id import canonical_x402
from agentguard.network.config import GatewaySettings
from agentguard.network.gateway._params import HEX, invalid
from agentguard.network.gateway._registry import PolicyClient

__all__ = ["MAX_TIMEOUT", "TaskInput", "task_input"]

MAX_TIMEOUT = 60.0


@dataclass(frozen=True)
class TaskInput:
    client: PolicyClient
    intent: TransactionIntent
    spend_asset: str
    spend_amount: int
    spend_recipient: str
    percentage: int
    timeout: float
    intent_signature: str
    wasm_args_hex: str
    x402: dict[str, Any] | None


def task_input(
    client: PolicyClient, settings: GatewaySettings, params: Mapping[str, Any]
) -> TaskInput:
    """The request for ``client`` (already resolved and permitted), or ``RPCError``."""
    try:
        intent = TransactionIntent.from_wire(params.get("intent"))  # type: ignore[arg-type]
        spend = intent.spend
    except AgentGuardError as exc:
        raise invalid(f"intent: {exc.message}") from None
    if intent.chain_id != client.chain_id:
        raise invalid(
            f"intent chain_id {intent.chain_id} differs from the policy client's "
            f"registered chain {client.chain_id}"
        )
    # Newton's SDK sends null for what it leaves to the gateway's defaults
    pct = params.get("quorum_threshold_percentage")
    pct = settings.threshold_percentage if pct is None else pct
    if isinstance(pct, bool) or not isinstance(pct, int) or not 0 < pct <= 100:
        raise invalid("quorum_threshold_percentage must be an integer in 1..100, or null")
    quorum = params.get("quorum_number")
    if quorum not in ("0x00", "00", "0x", "", None):
        raise invalid("quorum_number must be 00 (the reference network has one quorum)")
    timeout = params.get("timeout")
    timeout = settings.timeout if timeout is None else timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise invalid("timeout must be a positive number of seconds")
    signature = params.get("intent_signature")
    signature = "0x" if signature is None else signature
    if not isinstance(signature, str) or not HEX.match("0x" + signature.removeprefix("0x")):
        raise invalid("intent_signature must be hex (or null)")
    if signature.removeprefix("0x") and len(signature.removeprefix("0x")) != 130:
        raise invalid("intent_signature must be a 65-byte EIP-712 signature (or null)")
    wasm_args_hex = params.get("wasm_args")
    wasm_args_hex = "0x" if wasm_args_hex is None else wasm_args_hex
    if isinstance(wasm_args_hex, str) and not wasm_args_hex.startswith("0x"):
        wasm_args_hex = "0x" + wasm_args_hex  # the SDK strips the prefix
    wasm_args = _wasm_args(wasm_args_hex)
    x402 = wasm_args.get("x402")
    if x402 is not None:
        x402 = _check_x402(x402, intent)
    return TaskInput(
        client=client,
        intent=intent,
        spend_asset=spend.asset.lower(),
        spend_amount=spend.amount,
        spend_recipient=(spend.recipient or "").lower(),
        percentage=pct,
        timeout=min(float(timeout), MAX_TIMEOUT),
        intent_signature=signature if signature.startswith("0x") else "0x" + signature,
        wasm_args_hex=wasm_args_hex if isinstance(wasm_args_hex, str) else "0x",
        x402=x402,
    )


def _wasm_args(value: Any) -> dict[str, Any]:
    if value in (None, "", "0x"):
        return {}
    if not isinstance(value, str) or not HEX.match(value):
        raise invalid("wasm_args must be 0x-hex of UTF-8 JSON")
    try:
        parsed = strict_loads(bytes.fromhex(value.removeprefix("0x")))
    except ValueError as exc:
        raise invalid(f"wasm_args is not hex of acceptable UTF-8 JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise invalid("wasm_args must encode a JSON object")
    return parsed


def _check_x402(x402: Any, intent: TransactionIntent) -> dict[str, Any]:
    """A payment's x402 details, canonical, describing exactly the transfer authorized."""
    try:
        return canonical_x402(x402, intent)
    except AgentGuardError as exc:
        raise invalid(f"wasm_args.x402: {exc.message}") from None
