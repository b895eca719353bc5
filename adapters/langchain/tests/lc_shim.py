"""A stand-in for ``Guard.run_call`` / ``AsyncGuard.run_call`` and ``agentguard.explain`` (issue 8,
actions part) until they land; ``install`` does nothing once the real ones exist.

Same contract, on today's public API: the intent is ``call_intent`` (``name(string)`` with the
canonical JSON of the arguments, to the offchain target, value 0), authorized by the real
gateway and verified; ``fn`` runs only after that. ``shadow=True`` authorizes, records and runs
``fn`` whatever the answer. No ledger hold: the real ``run_call`` adds it.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

import agentguard
from agentguard import AgentGuardError, AsyncGuard, ConfigurationError, Guard, TransactionIntent

OFFCHAIN_TARGET = to_checksum_address(keccak(b"agentguard.offchain-call")[12:])
SHADOW_LOG: list[tuple[str, str]] = []


def call_intent(
    agent: str, name: str, arguments: Mapping[str, Any], *, chain_id: int
) -> TransactionIntent:
    text = json.dumps(dict(arguments), sort_keys=True, separators=(",", ":"), allow_nan=False)
    signature = f"{name}(string)"
    return TransactionIntent(
        from_=agent,
        to=OFFCHAIN_TARGET,
        value=0,
        data=keccak(signature.encode())[:4] + abi_encode(["string"], [text]),
        chain_id=chain_id,
        function_signature=signature,
    )


def _intent(guard: Guard | AsyncGuard, name: str, arguments: Mapping[str, Any], agent: str | None):
    agent = agent or guard.defaults.agent
    if agent is None or guard.defaults.ledger is None or guard.defaults.limits is None:
        raise ConfigurationError("run_call needs agent, ledger and limits (guard.defaults)")
    return call_intent(agent, name, arguments, chain_id=guard.defaults.chain_id)


def _run_call(
    self: Guard,
    name: str,
    arguments: Mapping[str, Any],
    fn: Callable[[], Any],
    *,
    agent: str | None = None,
    shadow: bool = False,
    **_: Any,
) -> Any:
    intent = _intent(self, name, arguments, agent)
    try:
        self.authorize(intent)
    except AgentGuardError as exc:
        if not shadow:
            raise
        SHADOW_LOG.append((name, type(exc).__name__))
    return fn()


async def _arun_call(
    self: AsyncGuard,
    name: str,
    arguments: Mapping[str, Any],
    fn: Callable[[], Any],
    *,
    agent: str | None = None,
    shadow: bool = False,
    **_: Any,
) -> Any:
    intent = _intent(self, name, arguments, agent)
    try:
        await self.authorize(intent)
    except AgentGuardError as exc:
        if not shadow:
            raise
        SHADOW_LOG.append((name, type(exc).__name__))
    result = fn()
    return await result if inspect.isawaitable(result) else result


def _explain(exc: BaseException, **_: Any) -> str:
    reasons = getattr(exc, "reasons", None)
    why = "; ".join(reasons) if reasons else getattr(exc, "message", str(exc))
    return f"agentguard refused this ({type(exc).__name__}): {why}. {getattr(exc, 'hint', '')}"


def install(monkeypatch: pytest.MonkeyPatch | None = None) -> bool:
    """Patches in the stand-ins where the real ones are missing; True if it patched any.
    Without ``monkeypatch`` (a subprocess running an example) the patch stays."""
    patch: Callable[[object, str, object], None] = (
        setattr
        if monkeypatch is None
        else lambda target, name, value: monkeypatch.setattr(target, name, value, raising=False)
    )
    patched = False
    if not hasattr(Guard, "run_call"):
        patch(Guard, "run_call", _run_call)
        patch(AsyncGuard, "run_call", _arun_call)
        patched = True
    if not hasattr(agentguard, "explain"):
        patch(agentguard, "explain", _explain)
        patched = True
    return patched
