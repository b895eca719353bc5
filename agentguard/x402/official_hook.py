"""Authorization for users of Coinbase's own ``x402`` client: an ``on_before_payment_creation``
hook that lets a payment be created only after the authorization network allowed it.

    client = x402Client()
    register_exact_evm_client(client, EthAccountSigner(account))
    client.on_before_payment_creation(authorization_hook(guard, payer=account.address))

The hook runs after x402 chose a requirement and before its signer is touched, and walks the
same guarded pipeline as every other entry point (local caps → authorize → bind → audit); a
refusal returns ``AbortResult`` and nothing is signed. Because x402's own signer signs, the
pipeline's port here signs nothing: the payment is recorded as delegated (``payment_delegated``)
and its reservation keeps counting the full amount (the hook never learns its nonce, so no
resolver can give it back), and the attestation's signing ticket is used up, so no agentguard
``Signer`` can sign a second payment under it. Unlike ``X402Auth`` it cannot bind the
signature to the attestation or guarantee one payment per request; use ``X402Auth`` for those.
This module needs the ``x402`` package; nothing else in agentguard imports it.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Literal

from agentguard._exceptions import (
    AgentGuardError,
    ConfigurationError,
    MissingExtra,
    OnchainCheckRequired,
    PaymentRequiredError,
)
from agentguard._guard import AsyncGuard, Guard
from agentguard._intent import PaymentIntent
from agentguard._tickets import SIGNATURES_CHECKED, redeem
from agentguard._verifier import VerifiedAttestation
from agentguard.ledger import Ledger, Limits
from agentguard.pipeline import (
    Action,
    AsyncRunner,
    AuditSink,
    Outcome,
    Prepared,
    Runner,
    Sent,
    Signed,
    StillCounted,
)
from agentguard.x402._select import Allowances
from agentguard.x402._wire import Requirement, parse_amount

try:
    from x402 import AbortResult, PaymentCreationContext
    from x402.schemas.v1 import PaymentRequirementsV1
except ImportError as exc:  # tests/cli/test_missing_extra.py; agentguard's X402Auth needs none
    raise MissingExtra(
        "x402", ["x402"], needed_by="agentguard.x402.official_hook (Coinbase's x402 client)"
    ) from exc

__all__ = ["AsyncAuthorizationHook", "AuthorizationHook", "authorization_hook"]

_KEEP = 256


def _intent(
    ctx: PaymentCreationContext, payer: str, allowances: Allowances | None
) -> PaymentIntent:
    req = ctx.selected_requirements
    version: Literal[1, 2]
    if isinstance(req, PaymentRequirementsV1):
        raw_amount, resource, version = req.max_amount_required, req.resource, 1
    else:
        info = getattr(ctx.payment_required, "resource", None)
        raw_amount, resource, version = req.amount, getattr(info, "url", "") or "", 2
    amount = parse_amount(raw_amount)
    if amount is None or amount == 0:
        raise PaymentRequiredError(f"amount {raw_amount!r} is not a positive canonical integer")
    if req.scheme not in ("exact", "upto"):
        raise PaymentRequiredError(f"scheme {req.scheme!r} cannot be authorized by agentguard")
    intent = PaymentIntent(
        payer=payer,
        scheme=req.scheme,
        network=str(req.network),
        asset=req.asset,
        amount=amount,
        pay_to=req.pay_to,
        resource=resource,
        x402_version=version,
    )
    if allowances is not None:
        refusal = allowances.refusal(
            Requirement(
                x402_version=version,
                scheme=req.scheme,
                network=intent.network,
                amount=amount,
                asset=intent.asset,
                pay_to=intent.pay_to,
                max_timeout_seconds=req.max_timeout_seconds,
                extra=req.extra or {},
                resource=resource,
                raw={},
            )
        )
        if refusal is not None:
            raise PaymentRequiredError(
                "the selected payment is outside the allowances", reasons=[refusal]
            )
    return intent


def _abort(exc: AgentGuardError) -> AbortResult:
    return AbortResult(reason=f"agentguard: {exc.message}")


class _Delegated:
    """The pipeline's port when x402's own signer signs: it signs and sends nothing."""

    def prepare(self, verified: VerifiedAttestation) -> Prepared:
        return Prepared()

    def sign(self, verified: VerifiedAttestation, prepared: Prepared) -> Signed:
        # x402's signer signs under this attestation: use its one signing ticket up, so no
        # agentguard Signer can sign a second payment under it (``hook.attestations``).
        ticket = redeem(verified.attestation, verified.intent, time.time())
        if ticket.assurance not in SIGNATURES_CHECKED:  # unchecked, or vault only: not here
            raise OnchainCheckRequired(
                f"attestation {verified.task_id} has assurance {ticket.assurance!r} (operator "
                "signatures unchecked, or a vault-only trust tier); x402's own signer would sign "
                "the payment on it"
            )
        return Signed(reference=f"x402-delegated:{verified.task_id}", payload=None)

    def abandon(self, prepared: Prepared) -> None:
        """Nothing was prepared."""

    def send(self, signed: Signed) -> Sent | Outcome:
        return StillCounted(
            "payment_delegated",
            "x402's own signer signs and sends this payment; it counts in full",
        )

    def confirm(self, signed: Signed) -> Outcome:
        raise ConfigurationError("a delegated payment has no confirmation")


class _Hook:
    def __init__(
        self, payer: str, allowances: Allowances | None, ledger: Ledger, limits: Limits
    ) -> None:
        self._payer, self._allowances, self._limits = payer, allowances, limits
        self._ledger = ledger
        self.attestations: deque[VerifiedAttestation] = deque(maxlen=_KEEP)

    def _action(self, ctx: PaymentCreationContext) -> Action:
        intent = _intent(ctx, self._payer, self._allowances)
        return Action(agent=self._payer, intent=intent, limits=self._limits, rail="payment")


class AuthorizationHook(_Hook):
    """The hook; ``attestations`` keeps the most recent verified attestations it obtained."""

    def __init__(
        self,
        guard: Guard,
        payer: str,
        allowances: Allowances | None,
        *,
        ledger: Ledger,
        limits: Limits,
        audit: AuditSink | None = None,
    ) -> None:
        super().__init__(payer, allowances, ledger, limits)
        self._runner = Runner(guard, ledger, audit)

    def __call__(self, ctx: PaymentCreationContext) -> AbortResult | None:
        try:
            settled = self._runner.run(self._action(ctx), _Delegated())
        except AgentGuardError as exc:
            return _abort(exc)
        self.attestations.append(settled.verified)
        return None


class AsyncAuthorizationHook(_Hook):
    """``AuthorizationHook`` for an ``AsyncGuard`` (works with the async ``x402Client`` only)."""

    def __init__(
        self,
        guard: AsyncGuard,
        payer: str,
        allowances: Allowances | None,
        *,
        ledger: Ledger,
        limits: Limits,
        audit: AuditSink | None = None,
    ) -> None:
        super().__init__(payer, allowances, ledger, limits)
        self._runner = AsyncRunner(guard, ledger, audit)

    async def __call__(self, ctx: PaymentCreationContext) -> AbortResult | None:
        try:
            settled = await self._runner.run(self._action(ctx), _Delegated())
        except AgentGuardError as exc:
            return _abort(exc)
        self.attestations.append(settled.verified)
        return None


def authorization_hook(
    guard: Guard | AsyncGuard,
    *,
    payer: str,
    allowances: Allowances | None = None,
    ledger: Ledger | None = None,
    limits: Limits | None = None,
    audit: AuditSink | None = None,
) -> AuthorizationHook | AsyncAuthorizationHook:
    """An ``on_before_payment_creation`` hook authorizing each payment with ``guard``.

    A ``Guard`` gives a blocking hook (``x402Client`` and ``x402ClientSync``); an
    ``AsyncGuard`` an async one (``x402Client`` only). ``ledger``/``limits``: the agent's
    budget (default: a process-local ledger without caps); ``audit``: the decision log.
    """
    ledger = ledger if ledger is not None else Ledger()
    limits = limits if limits is not None else Limits()
    if isinstance(guard, AsyncGuard):
        return AsyncAuthorizationHook(
            guard, payer, allowances, ledger=ledger, limits=limits, audit=audit
        )
    if isinstance(guard, Guard):
        return AuthorizationHook(
            guard, payer, allowances, ledger=ledger, limits=limits, audit=audit
        )
    raise ConfigurationError("authorization_hook needs an agentguard Guard or AsyncGuard")
