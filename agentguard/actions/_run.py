"""``Guard.run_call`` / ``AsyncGuard.run_call``: an offchain call through the one pipeline.

    local hold (rate caps; value 0) → authorize + verify ``name(string)`` → bind → use up the
    signing ticket → the call (``send``) → commit                                (audited)

With ``shadow=True`` nothing is held or enforced: the gateway's ``simulate`` evaluates the same
intent, the would-be decision is audited (kind ``shadow``) and logged, and the function is
always called — also when the gateway fails (that is logged and audited too).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentguard._exceptions import AgentGuardError, ConfigurationError
from agentguard._gateway import Simulation
from agentguard._intent import TransactionIntent
from agentguard._logging import get_logger
from agentguard.actions._intent import check_name, frozen_arguments, intent_for
from agentguard.actions._port import AsyncCallPort, CallPort, Invoke, call_async
from agentguard.pipeline import Action, AsyncRunner, AuditSink, Runner

if TYPE_CHECKING:
    from agentguard._guard import AsyncGuard, Guard
    from agentguard.ledger import Ledger, Limits

__all__ = ["invoker", "run_async", "run_sync"]

log = get_logger("agentguard.actions")


@dataclass(frozen=True, slots=True)
class Options:
    """What a call runs under; anything not given comes from ``guard.defaults``."""

    agent: str | None = None
    ledger: Ledger | None = None
    limits: Limits | None = None
    audit: AuditSink | None = None
    shadow: bool = False
    approval_timeout: float | None = None
    """Seconds to wait for a human when the policy asks for approval (``None``: refuse)."""

    def __post_init__(self) -> None:
        if type(self.shadow) is not bool:  # "false" from a config file is truthy: fail open
            raise ConfigurationError(
                f"shadow= takes True or False, not {type(self.shadow).__name__}; shadow mode "
                "turns enforcement off, so only shadow=True does that"
            )


@dataclass(frozen=True, slots=True)
class _Call:
    intent: TransactionIntent
    arguments: dict[str, Any]
    agent: str
    ledger: Ledger | None
    limits: Limits | None
    audit: AuditSink | None
    approval_timeout: float | None

    def action(self) -> Action:
        assert self.limits is not None  # checked in _prepare unless shadow
        return Action(
            agent=self.agent,
            intent=self.intent,
            limits=self.limits,
            rail="call",
            approval_timeout=self.approval_timeout,
        )


def invoker(fn: Callable[..., Any]) -> Invoke:
    """How ``run_call`` calls ``fn``: with the frozen copy of the arguments that was hashed if
    it takes one positional argument (so nothing the caller edits after authorization reaches
    it), else with none (then ``fn`` must not read values the caller may still edit)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature to read (some builtins): the old form
        return lambda _: fn()
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in parameters if p.kind in positional and p.default is p.empty]
    if len(required) == 1:
        return fn
    return lambda _: fn()


def _prepare(
    guard: Guard | AsyncGuard, name: str, arguments: Mapping[str, Any], o: Options
) -> _Call:
    """Everything checked before anyone is asked: configuration, name, arguments."""
    d = guard.defaults
    agent = o.agent if o.agent is not None else d.agent
    ledger = o.ledger if o.ledger is not None else d.ledger
    limits = o.limits if o.limits is not None else d.limits
    audit = o.audit if o.audit is not None else d.audit
    if agent is None:
        raise ConfigurationError(
            "an offchain call needs the agent whose action it is: pass agent= or give the guard "
            "a signer or vault (Guard.connect(..., signer=...))"
        )
    if not o.shadow and (ledger is None or limits is None):
        raise ConfigurationError(
            "an enforced call needs the agent's ledger and limits (local caps are checked before "
            "the network is asked): pass ledger= and limits= or set them on the guard"
        )
    check_name(name)
    frozen, canonical = frozen_arguments(arguments)
    intent = intent_for(agent, name, canonical, d.chain_id)
    return _Call(intent, frozen, agent, ledger, limits, audit, o.approval_timeout)


def _shadow(call: _Call, name: str, answer: Simulation | Exception) -> None:
    """Audit and log what the policy would have said, in an enforced decision's terms."""
    record: dict[str, Any] = {
        "rail": "call",
        "name": name,
        "intent": call.intent.wire(),
        "intent_hash": "0x" + call.intent.intent_hash.hex(),
    }
    if isinstance(answer, Simulation):
        record |= {
            "decision": answer.decision,
            "reasons": list(answer.reasons),
            "policy": answer.policy_id,
        }
    else:
        record |= {
            "decision": "unknown",
            "reasons": [],
            "policy": None,
            "error": type(answer).__name__,
            "detail": answer.message if isinstance(answer, AgentGuardError) else "",
        }
    if call.audit is not None:
        call.audit.append("shadow", record)
    level = log.info if record["decision"] == "allow" else log.warning
    level(
        "shadow decision (not enforced)",
        name=name,
        decision=record["decision"],
        reasons=record["reasons"],
        intent_hash=record["intent_hash"],
        **({"error": record["error"]} if "error" in record else {}),
    )


def _no_simulate(guard: Guard | AsyncGuard) -> Exception:
    return ConfigurationError(
        f"shadow mode needs an authorizer with simulate(); {type(guard.authorizer).__name__} "
        "has none"
    )


def run_sync(
    guard: Guard, name: str, arguments: Mapping[str, Any], invoke: Invoke, o: Options
) -> Any:
    call = _prepare(guard, name, arguments, o)
    if o.shadow:
        simulate = getattr(guard.authorizer, "simulate", None)
        answer: Simulation | Exception
        try:
            answer = simulate(call.intent) if simulate is not None else _no_simulate(guard)
        except Exception as exc:  # shadow mode never blocks; the failure is recorded
            answer = exc
        _shadow(call, name, answer)
        return invoke(call.arguments)
    assert call.ledger is not None
    port = CallPort(invoke, call.arguments)
    settled = Runner(guard, call.ledger, call.audit).run(call.action(), port)
    if port.raised is not None:
        raise port.raised
    return settled.outcome.result


async def _simulate(guard: Guard | AsyncGuard, intent: TransactionIntent) -> Simulation:
    simulate = getattr(guard.authorizer, "simulate", None)
    if simulate is None:
        raise _no_simulate(guard)
    if inspect.iscoroutinefunction(simulate):
        return await simulate(intent)  # type: ignore[no-any-return]
    return await asyncio.to_thread(simulate, intent)


async def run_async(
    guard: Guard | AsyncGuard,
    name: str,
    arguments: Mapping[str, Any],
    invoke: Invoke,
    o: Options,
    *,
    in_thread: bool,
) -> Any:
    call = _prepare(guard, name, arguments, o)
    if o.shadow:
        answer: Simulation | Exception
        try:
            answer = await _simulate(guard, call.intent)
        except Exception as exc:
            answer = exc
        _shadow(call, name, answer)
        return await call_async(invoke, call.arguments, in_thread=in_thread)
    assert call.ledger is not None
    port = AsyncCallPort(invoke, call.arguments, in_thread=in_thread)
    runner = AsyncRunner(guard, call.ledger, call.audit)
    # an async send with plain, inline prepare/sign: the runner takes either, per method
    settled = await runner.run(call.action(), port)  # type: ignore[arg-type]
    if port.raised is not None:
        raise port.raised
    return settled.outcome.result
