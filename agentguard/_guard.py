"""``Guard``: the façade users hold. It wires authorizer → verifier (→ ledger → signer).

Every entry point (wallet, x402 auth, decorators, LangChain tools) goes through
``Guard.authorize``; none signs on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Self

from agentguard._attestation import Attestation
from agentguard._exceptions import VerificationError
from agentguard._gateway import AsyncAuthorizer, AsyncNewtonGateway, Authorizer, NewtonGateway
from agentguard._intent import PaymentIntent, TransactionIntent
from agentguard._logging import get_logger
from agentguard._verifier import ReplayGuard, VerifiedAttestation, Verifier

__all__ = ["AsyncGuard", "Guard"]

log = get_logger("agentguard.guard")
Intent = TransactionIntent | PaymentIntent


class _Connect:
    """``connect``: one gateway client and one verifier configured from the same facts."""

    _gateway_class: ClassVar[type[NewtonGateway] | type[AsyncNewtonGateway]]

    def __init__(self, authorizer: Any, verifier: Verifier) -> None:
        self.authorizer = authorizer
        self.verifier = verifier

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        policy_client: str,
        operators: Iterable[str],
        api_key: str | None = None,
        threshold_percentage: int = 66,
        policy_id: str | None = None,
        replay_guard: ReplayGuard | None = None,
        **gateway_options: Any,
    ) -> Self:
        gateway = cls._gateway_class(
            url,
            policy_client=policy_client,
            api_key=api_key,
            quorum_threshold_percentage=threshold_percentage,
            **gateway_options,
        )
        verifier = Verifier(
            operators,
            policy_client=policy_client,
            threshold_percentage=threshold_percentage,
            policy_id=policy_id,
            replay_guard=replay_guard,
        )
        return cls(gateway, verifier)

    def _verify(self, attestation: Attestation, intent: Intent) -> VerifiedAttestation:
        try:
            return self.verifier.verify(attestation, intent)
        except VerificationError as exc:
            log.warning("attestation rejected", error=type(exc).__name__, detail=exc.message)
            raise


class Guard(_Connect):
    """Authorize, then verify: the result is the only thing a signer accepts."""

    _gateway_class = NewtonGateway
    authorizer: Authorizer

    def authorize(
        self, intent: Intent, *, wasm_args: Mapping[str, Any] | None = None
    ) -> VerifiedAttestation:
        return self._verify(self.authorizer.authorize(intent, wasm_args=wasm_args), intent)

    def close(self) -> None:
        self.authorizer.close()

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncGuard(_Connect):
    """``Guard`` for asyncio code."""

    _gateway_class = AsyncNewtonGateway
    authorizer: AsyncAuthorizer

    async def authorize(
        self, intent: Intent, *, wasm_args: Mapping[str, Any] | None = None
    ) -> VerifiedAttestation:
        attestation = await self.authorizer.authorize(intent, wasm_args=wasm_args)
        return self._verify(attestation, intent)

    async def aclose(self) -> None:
        await self.authorizer.aclose()

    async def __aenter__(self) -> AsyncGuard:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
