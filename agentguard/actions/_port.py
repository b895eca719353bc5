"""The pipeline's port for an offchain call: nothing to sign, ``send`` is the call itself.

``sign`` uses up the attestation's one signing ticket (like the official x402 hook), so the
attestation can authorize this call once and can never reach an agentguard ``Signer``. ``send``
calls the function with the frozen arguments that were hashed and returns its result:

* it returns: ``Landed`` — committed (value 0; the call counts against rate caps);
* it raises: the call happened, partly happened or we cannot know, and nothing can ever prove
  otherwise, so it is committed too (``outcome: raised``, the exception's type in the audit
  record, never its text) and the exception is handed back to the caller unchanged;
* it is interrupted (cancelled, ``KeyboardInterrupt``): nothing is recorded after
  ``MarkSigned``, so the reservation stays counted.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

from agentguard._exceptions import ConfigurationError, OnchainCheckRequired
from agentguard._tickets import SIGNATURES_CHECKED, redeem
from agentguard._verifier import VerifiedAttestation
from agentguard.pipeline import Landed, Outcome, Prepared, Sent, Signed

__all__ = ["AsyncCallPort", "CallPort"]

Invoke = Callable[[dict[str, Any]], Any]


class _CallPort:
    blocking = False  # prepare/sign/abandon do no I/O: the async runner runs them inline

    def __init__(self, invoke: Invoke, arguments: dict[str, Any]) -> None:
        self._invoke, self._arguments = invoke, arguments
        self.raised: Exception | None = None

    def prepare(self, verified: VerifiedAttestation) -> Prepared:
        return Prepared()

    def sign(self, verified: VerifiedAttestation, prepared: Prepared) -> Signed:
        ticket = redeem(verified.attestation, verified.intent, time.time())
        if ticket.assurance not in SIGNATURES_CHECKED:  # unchecked, or vault only: not here
            raise OnchainCheckRequired(
                f"attestation {verified.task_id} has assurance {ticket.assurance!r} (operator "
                "signatures unchecked, or a vault-only trust tier); the offchain call would run "
                "on it"
            )
        return Signed(reference=f"call:{verified.task_id}", payload=None)

    def abandon(self, prepared: Prepared) -> None:
        """Nothing was prepared."""

    def confirm(self, signed: Signed) -> Outcome:
        raise ConfigurationError("an offchain call has no confirmation step")

    def _returned(self, result: Any) -> Landed:
        return Landed("called", record={"outcome": "returned"}, result=result)

    def _raised(self, exc: Exception) -> Landed:
        self.raised = exc
        return Landed("call_raised", record={"outcome": "raised", "error": type(exc).__name__})


class CallPort(_CallPort):
    """For ``Runner``: calls the function in the caller's thread."""

    def send(self, signed: Signed) -> Sent | Outcome:
        try:
            result = self._invoke(self._arguments)
        except Exception as exc:
            return self._raised(exc)
        return self._returned(result)


class AsyncCallPort(_CallPort):
    """For ``AsyncRunner``: awaits what the function returns; ``in_thread`` runs a blocking
    function in a worker thread first."""

    def __init__(self, invoke: Invoke, arguments: dict[str, Any], *, in_thread: bool) -> None:
        super().__init__(invoke, arguments)
        self._in_thread = in_thread

    async def send(self, signed: Signed) -> Sent | Outcome:
        try:
            result = await call_async(self._invoke, self._arguments, in_thread=self._in_thread)
        except Exception as exc:
            return self._raised(exc)
        return self._returned(result)


async def call_async(invoke: Invoke, arguments: dict[str, Any], *, in_thread: bool) -> Any:
    """Run ``invoke(arguments)`` from asyncio: in a worker thread if it blocks, and await what
    it returns if that is awaitable."""
    if in_thread:
        result = await asyncio.to_thread(invoke, arguments)
    else:
        result = invoke(arguments)
    if inspect.isawaitable(result):
        result = await result
    return result
