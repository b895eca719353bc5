"""``@guard.action``: a decorated function is authorized before it runs (or, with ``wallet=``,
the intent it returns is authorized, signed and sent).

Two forms, on sync and async functions alike:

* the call is the action (no ``wallet=``): the arguments, bound to the function's signature
  with defaults applied (so positional and keyword calls give the same intent), become
  ``call_intent(agent, name, arguments)``; the function runs only after an attestation for
  exactly that intent was verified, and receives the frozen copy of the arguments that was
  hashed. Arguments that are not plain JSON are an ``IntentError`` before anything is asked.
* the intent form (``wallet=``): the function returns a ``TransactionIntent``, which goes
  through ``wallet.send`` (the wallet's own ledger, limits and audit log); the ``Receipt`` is
  returned. ``shadow=True`` is refused here: nothing is signed without an attestation.

On an ``AsyncGuard`` (or an ``AsyncGuardedWallet``) the decorated function is a coroutine
function; a blocking function then runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agentguard._exceptions import ConfigurationError, IntentError
from agentguard._intent import TransactionIntent
from agentguard.actions._intent import check_name
from agentguard.actions._run import Options, run_async, run_sync

if TYPE_CHECKING:
    from agentguard._guard import AsyncGuard, Guard
    from agentguard.wallet import AsyncGuardedWallet, GuardedWallet

__all__ = ["action"]


def action(
    guard: Guard | AsyncGuard,
    name: str | Callable[..., Any] | None,
    *,
    wallet: GuardedWallet | AsyncGuardedWallet | None,
    options: Options,
) -> Any:
    """The decorator (``name`` may be the function itself: ``@guard.action`` without parens)."""
    if wallet is not None:
        if options.shadow:
            raise ConfigurationError(
                "shadow=True cannot be used with wallet=: the function returns an intent to be "
                "SIGNED, and agentguard never signs anything without an attestation; shadow "
                "mode is for offchain calls only (drop wallet=)"
            )
        if any(
            v is not None for v in (options.agent, options.ledger, options.limits, options.audit)
        ):
            raise ConfigurationError(
                "with wallet= the wallet's own agent, ledger, limits and audit log apply; "
                "do not pass agent=, ledger=, limits= or audit="
            )
    if callable(name):
        return _decorate(guard, name, None, wallet, options)
    if name is not None:
        check_name(name)
    return lambda fn: _decorate(guard, fn, name, wallet, options)


def _decorate(
    guard: Guard | AsyncGuard,
    fn: Callable[..., Any],
    name: str | None,
    wallet: GuardedWallet | AsyncGuardedWallet | None,
    options: Options,
) -> Callable[..., Any]:
    from agentguard._guard import AsyncGuard
    from agentguard.wallet import AsyncGuardedWallet

    if not callable(fn):
        raise ConfigurationError(f"@guard.action decorates a function, not {fn!r:.60}")
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        # calling it only builds the generator: the body would run after the attestation was
        # used up and the call committed, whenever it is iterated (if ever)
        raise ConfigurationError(
            f"@guard.action cannot decorate the generator function {fn.__name__}: its body runs "
            "later, outside the authorization; decorate a function that does the action and "
            "returns its result"
        )
    is_async = inspect.iscoroutinefunction(fn)
    if wallet is not None:
        if is_async or isinstance(guard, AsyncGuard) or isinstance(wallet, AsyncGuardedWallet):
            return functools.wraps(fn)(_intent_async(fn, wallet, options.approval_timeout))
        return functools.wraps(fn)(_intent_sync(fn, wallet, options.approval_timeout))
    name = check_name(name if name is not None else getattr(fn, "__name__", None))
    signature = inspect.signature(fn)

    def prepare(args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise IntentError(f"{name}: {exc}") from None
        bound.apply_defaults()
        return bound

    def invoker(bound: inspect.BoundArguments) -> Callable[[dict[str, Any]], Any]:
        def invoke(frozen: dict[str, Any]) -> Any:
            bound.arguments.update(frozen)  # exactly what was hashed, not the caller's objects
            return fn(*bound.args, **bound.kwargs)

        return invoke

    if is_async or isinstance(guard, AsyncGuard):

        async def call_async(*args: Any, **kwargs: Any) -> Any:
            bound = prepare(args, kwargs)
            return await run_async(
                guard, name, bound.arguments, invoker(bound), options, in_thread=not is_async
            )

        return functools.wraps(fn)(call_async)

    assert not isinstance(guard, AsyncGuard)
    sync_guard = guard

    def call_sync(*args: Any, **kwargs: Any) -> Any:
        bound = prepare(args, kwargs)
        return run_sync(sync_guard, name, bound.arguments, invoker(bound), options)

    return functools.wraps(fn)(call_sync)


def _checked(intent: object, fn: Callable[..., Any]) -> TransactionIntent:
    if type(intent) is not TransactionIntent:
        raise IntentError(
            f"{getattr(fn, '__name__', 'the function')} is decorated with wallet= and must "
            f"return a TransactionIntent, not {type(intent).__name__}; nothing was sent"
        )
    return intent


def _intent_sync(fn: Callable[..., Any], wallet: Any, timeout: float | None) -> Callable[..., Any]:
    def send(*args: Any, **kwargs: Any) -> Any:
        return wallet.send(_checked(fn(*args, **kwargs), fn), approval_timeout=timeout)

    return send


def _intent_async(fn: Callable[..., Any], wallet: Any, timeout: float | None) -> Callable[..., Any]:
    blocking = not inspect.iscoroutinefunction(fn)

    async def send(*args: Any, **kwargs: Any) -> Any:
        if blocking:
            intent = await asyncio.to_thread(fn, *args, **kwargs)
        else:
            intent = await fn(*args, **kwargs)
        checked = _checked(intent, fn)
        if inspect.iscoroutinefunction(wallet.send):
            return await wallet.send(checked, approval_timeout=timeout)
        return await asyncio.to_thread(wallet.send, checked, approval_timeout=timeout)

    return send
