"""``Guard``: the façade users hold. It wires authorizer → verifier, and hands out the entry
points built on the one guarded pipeline (``agentguard.pipeline``):

    wallet = guard.wallet(signer=signer, web3=w3, ledger=ledger, limits=limits)
    auth = guard.x402(signer=signer, ledger=ledger, allowances=allowances, limits=limits)

Every entry point (wallet, x402 auth, decorators, LangChain tools) reaches ``Guard.authorize``
only through the pipeline's ``Authorize`` step; none signs on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self

from agentguard._attestation import Attestation
from agentguard._exceptions import VerificationError
from agentguard._gateway import AsyncAuthorizer, AsyncNewtonGateway, Authorizer, NewtonGateway
from agentguard._intent import PaymentIntent, TransactionIntent
from agentguard._logging import get_logger
from agentguard._verifier import ReplayGuard, VerifiedAttestation, Verifier

if TYPE_CHECKING:
    from web3 import Web3

    from agentguard._signer import Signer
    from agentguard.ledger import Ledger, Limits
    from agentguard.pipeline import AuditSink
    from agentguard.wallet import AsyncGuardedWallet, GuardedWallet
    from agentguard.x402 import Allowances, X402Auth

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

    def x402(
        self,
        *,
        signer: Signer,
        ledger: Ledger,
        allowances: Allowances,
        limits: Limits | None = None,
        vault: str | None = None,
        audit: AuditSink | None = None,
        **options: Any,
    ) -> X402Auth:
        """An ``httpx.Auth`` paying x402 answers through the pipeline under this guard."""
        from agentguard.x402 import X402Auth

        return X402Auth(
            signer=signer,
            guard=self,  # type: ignore[arg-type]
            ledger=ledger,
            allowances=allowances,
            limits=limits,
            vault=vault,
            audit=audit,
            **options,
        )

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

    def wallet(
        self,
        *,
        signer: Signer,
        web3: Web3,
        ledger: Ledger,
        limits: Limits,
        vault: str | None = None,
        audit: AuditSink | None = None,
        **options: Any,
    ) -> GuardedWallet:
        """A wallet whose every transaction goes through the pipeline under this guard."""
        from agentguard.wallet import GuardedWallet

        return GuardedWallet(
            signer=signer,
            guard=self,
            web3=web3,
            ledger=ledger,
            limits=limits,
            vault=vault,
            audit=audit,
            **options,
        )

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

    def wallet(
        self,
        *,
        signer: Signer,
        web3: Web3,
        ledger: Ledger,
        limits: Limits,
        vault: str | None = None,
        audit: AuditSink | None = None,
        **options: Any,
    ) -> AsyncGuardedWallet:
        """An async wallet on this guard (chain calls run in worker threads)."""
        from agentguard.wallet import AsyncGuardedWallet

        return AsyncGuardedWallet.on(
            self,
            signer=signer,
            web3=web3,
            ledger=ledger,
            limits=limits,
            vault=vault,
            audit=audit,
            **options,
        )

    async def aclose(self) -> None:
        await self.authorizer.aclose()

    async def __aenter__(self) -> AsyncGuard:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
