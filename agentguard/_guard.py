"""``Guard``: the façade users hold. It wires authorizer → verifier, and hands out the entry
points built on the one guarded pipeline (``agentguard.pipeline``):

    wallet = guard.wallet(signer=signer, web3=w3, ledger=ledger, limits=limits)
    auth = guard.x402(signer=signer, ledger=ledger, allowances=allowances, limits=limits)
    result = guard.run_call("send_email", {"to": to}, lambda: smtp.send(to))  # offchain call

    @guard.action                 # the same, as a decorator (agentguard.actions)
    def send_email(to: str) -> None: ...

    @guard.action(wallet=wallet)  # the function returns a TransactionIntent; wallet sends it
    def pay(to: str) -> TransactionIntent: ...

What a call leaves out comes from ``guard.defaults`` (set by ``Guard.connect(signer=...,
budget=...)`` or ``Guard.from_env()``); an explicit argument always wins.

Every entry point (wallet, x402 auth, decorators, LangChain tools) reaches ``Guard.authorize``
only through the pipeline's ``Authorize`` step; none signs on its own.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

from agentguard._attestation import Attestation
from agentguard._defaults import Defaults
from agentguard._exceptions import ConfigurationError, VerificationError
from agentguard._gateway import (
    AsyncAuthorizer,
    AsyncNewtonGateway,
    Authorizer,
    NewtonGateway,
    is_newton_url,
    probe_network,
)
from agentguard._intent import PaymentIntent, TransactionIntent
from agentguard._logging import get_logger
from agentguard._tiers import MinimumTiers
from agentguard._verifier import AttestationVerifier, ReplayGuard, VerifiedAttestation, Verifier

if TYPE_CHECKING:
    from collections.abc import Mapping as EnvMapping

    from web3 import Web3

    from agentguard._signer import Signer
    from agentguard.budget import Budget
    from agentguard.ledger import Ledger, Limits
    from agentguard.pipeline import AuditSink
    from agentguard.policies import Policy
    from agentguard.wallet import AsyncGuardedWallet, GuardedWallet
    from agentguard.x402 import Allowances, X402Auth

__all__ = ["AsyncGuard", "Guard"]

log = get_logger("agentguard.guard")
T = TypeVar("T")
_POLICY_ID = re.compile(r"^0x[0-9a-fA-F]{64}\Z")
NEWTON_OPTIONS = frozenset({"certificate_verifier", "source_avs", "max_lifetime", "block_time"})
"""What ``Guard.connect(newton={...})`` passes on to ``agentguard.newton.NewtonVerifier``: the
contracts to read (another chain, a staging deployment, a test table) and the ticket's life."""
Intent = TransactionIntent | PaymentIntent
_ENV = {
    "signer": "AGENTGUARD_PRIVATE_KEY_FILE (or AGENTGUARD_PRIVATE_KEY)",
    "web3": "AGENTGUARD_RPC_URL",
    "ledger": "AGENTGUARD_LEDGER",
    "limits": "AGENTGUARD_BUDGET",
    "allowances": "AGENTGUARD_BUDGET with a per-call cap",
}
"""Where ``Guard.from_env`` takes each default from, for the error that says it is missing."""


def _defaults(
    signer: Signer | None,
    web3: Web3 | None,
    ledger: Ledger | None,
    budget: Budget | Limits | None,
    audit: AuditSink | None,
    vault: str | None,
    chain_id: int | None,
) -> Defaults:
    """``connect``'s keyword defaults, checked: a budget's chain is the guard's chain."""
    from agentguard._signer import Signer
    from agentguard.budget import Budget
    from agentguard.ledger import Ledger, Limits

    if signer is not None and not isinstance(signer, Signer):
        # never echoed: a raw key passed here by mistake must not reach a message or a repr
        raise ConfigurationError(
            f"signer= takes an agentguard.Signer (Signer.from_key(...)), "
            f"not a {type(signer).__name__}"
        )
    if ledger is not None and not isinstance(ledger, Ledger):
        raise ConfigurationError(f"ledger= takes an agentguard.ledger.Ledger, got {ledger!r:.60}")
    if chain_id is not None and (
        isinstance(chain_id, bool) or not isinstance(chain_id, int) or chain_id <= 0
    ):
        raise ConfigurationError(f"chain_id must be a positive int, got {chain_id!r}")
    if budget is not None and not isinstance(budget, Budget | Limits):
        raise ConfigurationError(
            "budget= takes an agentguard.Budget (e.g. Budget('20 USDC per day')) or a Limits"
        )
    if isinstance(budget, Budget):
        if chain_id is not None and chain_id != budget.chain_id:
            raise ConfigurationError(
                f"budget is for chain {budget.chain_id} but chain_id={chain_id}; "
                f"write Budget(..., chain_id={chain_id})"
            )
        chain_id = budget.chain_id
    if vault is not None:
        from agentguard._verifier import _address

        vault = _address(vault, "vault")
    return Defaults(
        signer=signer,
        web3=web3,
        ledger=ledger,
        limits=budget.limits() if isinstance(budget, Budget) else budget,
        audit=audit,
        vault=vault,
        chain_id=8453 if chain_id is None else chain_id,
        budget=budget if isinstance(budget, Budget) else None,
    )


def _missing(entry: str, keyword: str) -> ConfigurationError:
    return ConfigurationError(
        f"guard.{entry}() needs {keyword}=: pass it, or set it once with "
        f"Guard.connect(..., {'budget' if keyword == 'limits' else keyword}=...) "
        f"or the environment ({_ENV[keyword]}) and Guard.from_env()"
    )


def _allowances(limits: Limits | None, defaults: Defaults) -> Allowances:
    """x402 allowances from the budget: per token, what one call may spend."""
    from agentguard.x402 import Allowances

    if defaults.budget is not None and (limits is None or limits == defaults.limits):
        caps = {a: int(v) for a, v in defaults.budget.params()["max_per_tx"].items()}
    else:
        caps = dict(limits.per_tx) if limits is not None else {}
    # x402 pays tokens only (EIP-3009 / Permit2): never the native asset's zero address
    caps = {asset: cap for asset, cap in caps.items() if cap > 0 and int(asset, 16) != 0}
    if not caps:
        raise _missing("x402", "allowances")
    return Allowances(assets=caps, chain_ids=(defaults.chain_id,))


def _pinned_policy_id(
    policy_client: str,
    policy_id: str | None,
    policy: str | Policy | None,
    params: Mapping[str, Any] | None,
    expire_after: int,
    *,
    any_policy: bool,
) -> str | None:
    """The policy id ``connect`` pins: given, computed from the policy, or (loudly) none."""
    if type(any_policy) is not bool:  # "false" from a config file is truthy: it would unpin
        raise ConfigurationError(
            f"any_policy= takes True or False, not {type(any_policy).__name__}; only "
            "any_policy=True accepts any policy the gateway chooses"
        )
    if any_policy:
        if policy_id is not None or policy is not None:
            raise ConfigurationError("any_policy=True contradicts policy_id= / policy=")
        log.warning(
            "Guard.connect(any_policy=True): attestations under ANY policy the gateway chooses "
            "are accepted; pin policy_id= unless you trust the gateway with your funds",
            policy_client=policy_client,
        )
        return None
    if policy_id is not None and (
        not isinstance(policy_id, str) or not _POLICY_ID.match(policy_id)
    ):
        raise ConfigurationError("policy_id must be 0x followed by 64 hex digits")
    computed: str | None = None
    if policy is not None:
        from agentguard.policies import load
        from agentguard.policies import policy_id as compute_policy_id

        try:
            resolved = load(policy) if isinstance(policy, str) else policy
        except KeyError as exc:
            raise ConfigurationError(str(exc.args[0])) from None
        if params is None:
            raise ConfigurationError("policy= needs the params= the policy client registered")
        try:
            raw = compute_policy_id(policy_client, resolved, dict(params), expire_after)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot compute the policy id (policy_client must be a 0x address, params "
                f"plain JSON, expire_after an integer): {exc}"
            ) from None
        computed = "0x" + raw.hex()
    elif params is not None:
        raise ConfigurationError("params= is only used with policy=")
    if policy_id is not None and computed is not None and policy_id.lower() != computed:
        raise ConfigurationError(
            f"policy_id {policy_id} is not the id of the given policy, params and expire_after "
            f"({computed})"
        )
    pinned = policy_id or computed
    if pinned is None:
        raise ConfigurationError(
            "Guard.connect needs the policy the policy client registered: pass policy_id= "
            "(as register_policy_client returned it) or policy= and params= (and expire_after=); "
            "any_policy=True accepts any policy the gateway chooses (unsafe)"
        )
    return pinned


def _verifier(
    url: str,
    info: Mapping[str, Any] | None,
    *,
    policy_client: str,
    operators: Iterable[str] | None,
    threshold_percentage: int | None,
    policy_id: str | None,
    replay_guard: ReplayGuard | None,
    web3: Web3 | None,
    newton: Mapping[str, Any] | None,
    quorum_number: str,
    tiers: MinimumTiers | Mapping[str, Mapping[str, int | str]] | None = None,
    high_threshold: int | None = None,
) -> AttestationVerifier:
    """What verifies this network's attestations: with ``operators``, the ECDSA quorum
    ``Verifier`` (the reference network); without, Newton's BLS quorum checked against Newton's
    contracts (``agentguard.newton.NewtonVerifier``, with the ``newton`` options). Operators are
    never taken from the gateway: a reference network reached without them is a configuration
    error."""
    if operators is not None:
        if newton:
            raise ConfigurationError(
                "newton= options configure Newton's BLS verifier; with operators=[...] the "
                "network is an ECDSA quorum (the reference network): pass one or the other"
            )
        return Verifier(
            operators,
            policy_client=policy_client,
            threshold_percentage=66 if threshold_percentage is None else threshold_percentage,
            policy_id=policy_id,
            replay_guard=replay_guard,
            tiers=tiers,
            high_threshold=high_threshold,
        )
    if tiers is not None or high_threshold is not None:
        raise ConfigurationError(
            "tiers= and high_threshold= configure the reference network's signed trust tiers; "
            "Newton's BLS attestations carry no tier (ask for a higher quorum there with "
            "threshold_percentage=)"
        )
    if info is not None and info.get("scheme") == "ecdsa":
        raise ConfigurationError(
            f"{url} is an agentguard reference network (ECDSA operator quorum): pass "
            "operators=[...] (AGENTGUARD_OPERATORS), the addresses of its operators as you "
            "configured them; agentguard never takes the operator set from the gateway"
        )
    if web3 is None:
        raise ConfigurationError(
            "Guard.connect without operators= (AGENTGUARD_OPERATORS) verifies Newton's BLS "
            "attestations against Newton's contracts, and needs web3= (AGENTGUARD_RPC_URL) "
            "for the chain; for the reference network pass operators=[...]"
        )
    from agentguard.newton import NewtonVerifier  # BLS: loaded only for a Newton network

    if newton is not None and not isinstance(newton, Mapping):
        raise ConfigurationError("newton= takes a mapping of NewtonVerifier options")
    options = dict(newton or {})
    unknown = sorted(set(options) - NEWTON_OPTIONS)
    if unknown:
        raise ConfigurationError(
            f"newton= takes {', '.join(sorted(NEWTON_OPTIONS))}; not {', '.join(unknown)}"
        )
    return NewtonVerifier(
        policy_client=policy_client,
        web3=web3,
        policy_id=policy_id,
        threshold_percentage=threshold_percentage,
        replay_guard=replay_guard,
        quorum_number=quorum_number,
        **options,
    )


class _Connect:
    """``connect``: one gateway client and one verifier configured from the same facts."""

    _gateway_class: ClassVar[type[NewtonGateway] | type[AsyncNewtonGateway]]

    def __init__(
        self, authorizer: Any, verifier: AttestationVerifier, defaults: Defaults | None = None
    ) -> None:
        self.authorizer = authorizer
        self.verifier = verifier
        self.defaults = defaults if defaults is not None else Defaults()

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        policy_client: str,
        operators: Iterable[str] | None = None,
        api_key: str | None = None,
        threshold_percentage: int | None = None,
        policy_id: str | None = None,
        policy: str | Policy | None = None,
        params: Mapping[str, Any] | None = None,
        expire_after: int = 300,
        any_policy: bool = False,
        replay_guard: ReplayGuard | None = None,
        signer: Signer | None = None,
        web3: Web3 | None = None,
        ledger: Ledger | None = None,
        budget: Budget | Limits | None = None,
        audit: AuditSink | None = None,
        vault: str | None = None,
        chain_id: int | None = None,
        newton: Mapping[str, Any] | None = None,
        tiers: MinimumTiers | Mapping[str, Mapping[str, int | str]] | None = None,
        high_threshold: int | None = None,
        **gateway_options: Any,
    ) -> Self:
        """Connect to a gateway; the verifier accepts only the policy the owner registered.

        Pass the registered ``policy_id`` (``ReferenceNetwork.register_policy_client`` returns
        it), or ``policy=`` (a bundled name or a ``Policy``), ``params=`` and ``expire_after=``
        to compute it locally (with a ``Budget`` and no ``params=``, ``budget.params()``).
        Without a pin a gateway could choose the policy (an ``allow := true`` one) and its
        attestations would verify; ``any_policy=True`` accepts that risk explicitly and is
        logged as a warning.

        ``signer``, ``web3``, ``ledger``, ``budget`` (a ``Budget``, or ``Limits``), ``audit``,
        ``vault`` and ``chain_id`` become ``guard.defaults``, used by ``guard.wallet()`` and
        ``guard.x402()`` for whatever they are not given.

        The verifier follows from what the network is: ``operators=`` (the reference
        network's ECDSA quorum) gives a ``Verifier`` over exactly those addresses (threshold
        66 % unless given); no ``operators`` means Newton, whose BLS quorum is checked against
        Newton's contracts through ``web3``. Connecting asks the gateway once
        (``agentguard_networkInfo``) whether it deduplicates retried tasks (only then is a
        ``newt_createTask`` whose answer was lost sent again) and whether it is a reference
        network; its operator set is never asked for.

        ``newton=`` (a mapping; ``NEWTON_OPTIONS``) configures the BLS verifier:
        ``certificate_verifier`` and ``source_avs`` (Newton's published Base / Base Sepolia
        deployments unless given), ``max_lifetime`` and ``block_time``. Not with ``operators``.

        ``tiers=`` (``MinimumTiers`` or its mapping, the shape of the policies' ``tiers``
        param) is the least trust tier this client accepts per action, judged from what the
        calldata moves; ``high_threshold=`` the signatures tier ``high`` needs (default: every
        operator). See docs/trust-tiers.md. Reference network (``operators``) only.
        """
        defaults = _defaults(signer, web3, ledger, budget, audit, vault, chain_id)
        if policy is not None and params is None and defaults.budget is not None:
            params = defaults.budget.params()
        pinned = _pinned_policy_id(
            policy_client, policy_id, policy, params, expire_after, any_policy=any_policy
        )
        if isinstance(operators, str | bytes):
            raise ConfigurationError("operators must be a list of operator addresses")
        probed = "transport" not in gateway_options
        info = probe_network(url, api_key) if probed else None
        if info is not None and is_newton_url(url):
            info = {**info, "dedupes": False}  # Newton's gateway never deduplicates: not believed
        gateway_options.setdefault("dedupe", bool(info and info["dedupes"]))
        if probed:  # only a reference network (it answered the probe) keeps task bookkeeping
            gateway_options.setdefault("bookkeeping", info is not None and not is_newton_url(url))
            gateway_options.setdefault(
                "compact", bool(info and info.get("compact_answers")) and not is_newton_url(url)
            )
        threshold = threshold_percentage
        if operators is not None and threshold is None:
            threshold = 66  # the reference gateway aims for the quorum the verifier requires
        verifier = _verifier(
            url,
            info,
            policy_client=policy_client,
            operators=operators,
            threshold_percentage=threshold,
            policy_id=pinned,
            replay_guard=replay_guard,
            web3=defaults.web3,
            newton=newton,
            quorum_number=gateway_options.get("quorum_number", "00"),
            tiers=tiers,
            high_threshold=high_threshold,
        )
        gateway = cls._gateway_class(
            url,
            policy_client=policy_client,
            api_key=api_key,
            quorum_threshold_percentage=threshold,
            policy_id=pinned,
            **gateway_options,
        )
        return cls(gateway, verifier, defaults)

    @classmethod
    def from_env(cls, environ: EnvMapping[str, str] | None = None) -> Self:
        """A guard configured from ``AGENTGUARD_*`` variables (``os.environ`` by default);
        see docs/configuration.md. A malformed variable is a ``ConfigurationError`` naming it."""
        from agentguard._env import connect_options

        return cls.connect(**connect_options(environ))

    def _entry(
        self,
        entry: str,
        signer: Signer | None,
        ledger: Ledger | None,
        limits: Limits | None,
        vault: str | None,
        audit: AuditSink | None,
    ) -> tuple[Signer, Ledger, Limits | None, str | None, AuditSink | None]:
        """An entry point's arguments, each given or taken from ``defaults``."""
        d = self.defaults
        signer = signer if signer is not None else d.signer
        ledger = ledger if ledger is not None else d.ledger
        if signer is None:
            raise _missing(entry, "signer")
        if ledger is None:
            raise _missing(entry, "ledger")
        return (
            signer,
            ledger,
            limits if limits is not None else d.limits,
            vault if vault is not None else d.vault,
            audit if audit is not None else d.audit,
        )

    def _wallet_args(
        self,
        signer: Signer | None,
        web3: Web3 | None,
        ledger: Ledger | None,
        limits: Limits | None,
        vault: str | None,
        audit: AuditSink | None,
    ) -> dict[str, Any]:
        signer, ledger, limits, vault, audit = self._entry(
            "wallet", signer, ledger, limits, vault, audit
        )
        web3 = web3 if web3 is not None else self.defaults.web3
        if web3 is None:
            raise _missing("wallet", "web3")
        if limits is None:
            raise _missing("wallet", "limits")
        return {
            "signer": signer,
            "web3": web3,
            "ledger": ledger,
            "limits": limits,
            "vault": vault,
            "audit": audit,
        }

    def x402(
        self,
        *,
        signer: Signer | None = None,
        ledger: Ledger | None = None,
        allowances: Allowances | None = None,
        limits: Limits | None = None,
        vault: str | None = None,
        audit: AuditSink | None = None,
        **options: Any,
    ) -> X402Auth:
        """An ``httpx.Auth`` paying x402 answers through the pipeline under this guard.

        Without ``allowances=`` it may pay, per token, what the budget lets one call spend.
        """
        from agentguard.x402 import X402Auth

        signer, ledger, limits, vault, audit = self._entry(
            "x402", signer, ledger, limits, vault, audit
        )
        if allowances is None:
            allowances = _allowances(limits, self.defaults)
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

    def action(
        self,
        name: str | Callable[..., Any] | None = None,
        *,
        wallet: GuardedWallet | AsyncGuardedWallet | None = None,
        shadow: bool = False,
        agent: str | None = None,
        ledger: Ledger | None = None,
        limits: Limits | None = None,
        audit: AuditSink | None = None,
        approval_timeout: float | None = None,
    ) -> Any:
        """Decorate a function so it runs only once authorized (``@guard.action`` or
        ``@guard.action("name", ...)``); see ``agentguard.actions._decorate``. Without
        ``wallet=`` the call is the action (``run_call``); with it the function returns a
        ``TransactionIntent`` that the wallet authorizes, signs and sends (its ``Receipt``
        is returned). On an ``AsyncGuard`` the decorated function is a coroutine function.
        ``approval_timeout``: seconds to wait for a human when the policy asks for one."""
        from agentguard.actions._decorate import action
        from agentguard.actions._run import Options

        options = Options(
            agent=agent,
            ledger=ledger,
            limits=limits,
            audit=audit,
            shadow=shadow,
            approval_timeout=approval_timeout,
        )
        return action(self, name, wallet=wallet, options=options)  # type: ignore[arg-type]

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
        """Ask the network about ``intent`` and verify its answer: the ticket a ``Signer``
        accepts, or a typed error (``PolicyDenied``, ``QuorumNotReached``, ...)."""
        return self._verify(self.authorizer.authorize(intent, wasm_args=wasm_args), intent)

    def wallet(
        self,
        *,
        signer: Signer | None = None,
        web3: Web3 | None = None,
        ledger: Ledger | None = None,
        limits: Limits | None = None,
        vault: str | None = None,
        audit: AuditSink | None = None,
        **options: Any,
    ) -> GuardedWallet:
        """A wallet whose every transaction goes through the pipeline under this guard."""
        from agentguard.wallet import GuardedWallet

        args = self._wallet_args(signer, web3, ledger, limits, vault, audit)
        return GuardedWallet(guard=self, **args, **options)

    def run_call(
        self,
        name: str,
        arguments: Mapping[str, Any],
        fn: Callable[[], T] | Callable[[dict[str, Any]], T],
        *,
        agent: str | None = None,
        ledger: Ledger | None = None,
        limits: Limits | None = None,
        audit: AuditSink | None = None,
        shadow: bool = False,
        approval_timeout: float | None = None,
    ) -> T:
        """Call ``fn`` only after an attestation for ``call_intent(agent, name, arguments)``
        was verified (local caps first, audited, committed); returns what ``fn`` returns. A
        ``fn`` taking one argument gets the frozen copy of ``arguments`` that was hashed (use
        it: the caller's objects may change after authorization); else ``fn()``. An
        exception from ``fn`` is re-raised and the call stays counted. ``shadow=True``:
        evaluate and record the would-be decision, then always call ``fn``."""
        from agentguard.actions._run import Options, invoker, run_sync

        options = Options(
            agent=agent,
            ledger=ledger,
            limits=limits,
            audit=audit,
            shadow=shadow,
            approval_timeout=approval_timeout,
        )
        return run_sync(self, name, arguments, invoker(fn), options)  # type: ignore[no-any-return]

    def flush(self, timeout: float = 5.0) -> int:
        """Wait (at most ``timeout`` s) until the gateway was told what became of every
        attestation (commit/release run in the background); returns how many calls are still
        pending. The local ledger never waits for this: it settles synchronously."""
        from agentguard.pipeline import flush

        return flush(self, timeout)

    def close(self) -> None:
        """Drain the pending gateway bookkeeping (bounded; what is left stays counted by the
        network), then close the gateway client."""
        self.flush()
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
        """``Guard.authorize`` for asyncio code."""
        attestation = await self.authorizer.authorize(intent, wasm_args=wasm_args)
        if not getattr(self.verifier, "blocking", True):  # CPU only: a thread hop costs more
            return self._verify(attestation, intent)
        # off the event loop: a verifier may block on RPC round trips (NewtonVerifier reads
        # the chain 4-8 times), which would stall every other coroutine of the agent
        return await asyncio.to_thread(self._verify, attestation, intent)

    def wallet(
        self,
        *,
        signer: Signer | None = None,
        web3: Web3 | None = None,
        ledger: Ledger | None = None,
        limits: Limits | None = None,
        vault: str | None = None,
        audit: AuditSink | None = None,
        **options: Any,
    ) -> AsyncGuardedWallet:
        """An async wallet on this guard (chain calls run in worker threads)."""
        from agentguard.wallet import AsyncGuardedWallet

        args = self._wallet_args(signer, web3, ledger, limits, vault, audit)
        return AsyncGuardedWallet.on(self, **args, **options)

    async def run_call(
        self,
        name: str,
        arguments: Mapping[str, Any],
        fn: Callable[[], T | Awaitable[T]] | Callable[[dict[str, Any]], T | Awaitable[T]],
        *,
        agent: str | None = None,
        ledger: Ledger | None = None,
        limits: Limits | None = None,
        audit: AuditSink | None = None,
        shadow: bool = False,
        approval_timeout: float | None = None,
    ) -> T:
        """``Guard.run_call`` for asyncio: an awaitable ``fn()`` result is awaited; a plain
        (not ``async def``) ``fn`` runs in a worker thread."""
        import inspect

        from agentguard.actions._run import Options, invoker, run_async

        options = Options(
            agent=agent,
            ledger=ledger,
            limits=limits,
            audit=audit,
            shadow=shadow,
            approval_timeout=approval_timeout,
        )
        in_thread = not inspect.iscoroutinefunction(fn)
        invoke = invoker(fn)
        return await run_async(self, name, arguments, invoke, options, in_thread=in_thread)  # type: ignore[no-any-return]

    async def flush(self, timeout: float = 5.0) -> int:
        """``Guard.flush`` for asyncio."""
        from agentguard.pipeline import aflush

        return await aflush(self, timeout)

    async def aclose(self) -> None:
        """``Guard.close`` for asyncio: drain the gateway bookkeeping, then close."""
        await self.flush()
        await self.authorizer.aclose()

    async def __aenter__(self) -> AsyncGuard:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
