"""``Guard``: the façade users hold. It wires authorizer → verifier (→ ledger → signer).

Every entry point (wallet, x402 auth, decorators, LangChain tools) goes through
``Guard.authorize``; none signs on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from agentguard._attestation import Attestation
from agentguard._exceptions import VerificationError
from agentguard._gateway import AsyncNewtonGateway, NewtonGateway
from agentguard._intent import PaymentIntent, TransactionIntent
from agentguard._logging import get_logger
from agentguard._verifier import ReplayGuard, VerifiedAttestation, Verifier

__all__ = ["AsyncGuard", "Guard"]

log = get_logger("agentguard.guard")
Intent = TransactionIntent | PaymentIntent
_G = TypeVar("_G", NewtonGateway, AsyncNewtonGateway)


def _connect(
    gateway_cls: type[_G],
    url: str,
    policy_client: str,
    operators: Iterable[str],
    api_key: str | None,
    threshold_percentage: int,
    policy_id: str | None,
    replay_guard: ReplayGuard | None,
    gateway_options: Mapping[str, Any],
) -> tuple[_G, Verifier]:
    gateway = gateway_cls(
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
    return gateway, verifier


def _verify(verifier: Verifier, attestation: Attestation, intent: Intent) -> VerifiedAttestation:
    try:
        return verifier.verify(attestation, intent)
    except VerificationError as exc:
        log.warning("attestation rejected", error=type(exc).__name__, detail=exc.message)
        raise


class Guard:
    """Authorize, then verify: the result is the only thing a signer accepts."""

    def __init__(self, authorizer: NewtonGateway, verifier: Verifier) -> None:
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
    ) -> Guard:
        return cls(
            *_connect(
                NewtonGateway,
                url,
                policy_client,
                operators,
                api_key,
                threshold_percentage,
                policy_id,
                replay_guard,
                gateway_options,
            )
        )

    def authorize(
        self, intent: Intent, *, wasm_args: Mapping[str, Any] | None = None
    ) -> VerifiedAttestation:
        attestation = self.authorizer.authorize(intent, wasm_args=wasm_args)
        return _verify(self.verifier, attestation, intent)

    def close(self) -> None:
        self.authorizer.close()

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncGuard:
    """``Guard`` for asyncio code."""

    def __init__(self, authorizer: AsyncNewtonGateway, verifier: Verifier) -> None:
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
    ) -> AsyncGuard:
        return cls(
            *_connect(
                AsyncNewtonGateway,
                url,
                policy_client,
                operators,
                api_key,
                threshold_percentage,
                policy_id,
                replay_guard,
                gateway_options,
            )
        )

    async def authorize(
        self, intent: Intent, *, wasm_args: Mapping[str, Any] | None = None
    ) -> VerifiedAttestation:
        attestation = await self.authorizer.authorize(intent, wasm_args=wasm_args)
        return _verify(self.verifier, attestation, intent)

    async def aclose(self) -> None:
        await self.authorizer.aclose()

    async def __aenter__(self) -> AsyncGuard:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
