"""Red team (session 9): the async runner decides per call whether a port method is a coroutine
function. A hostile agent host owns the port: it can re-point a method's ``__code__`` after the
first call, hang a ``__func__`` on a callable object, or let a function die and a new one take
its ``id``. Each time the runner must answer as ``inspect.iscoroutinefunction`` on the object
it is about to call does, or a step's result is lost (a coroutine never awaited) or a sync
step's done work is reported as failed (``await`` on a plain value)."""

from __future__ import annotations

import asyncio
import functools
import inspect
from typing import Any

import pytest

from agentguard.pipeline._runner import AsyncRunner, _coroutine
from agentguard.pipeline._steps import Confirm


def _runner() -> AsyncRunner:
    return AsyncRunner(guard=None, ledger=None)  # type: ignore[arg-type]  # port steps only


def _confirm(port: Any) -> Any:
    return asyncio.run(_runner().execute(Confirm(signed=b"sig"), port))  # type: ignore[arg-type]


async def _async_template(self: Any, signed: Any) -> str:
    return "async-confirmed"


def _sync_template(self: Any, signed: Any) -> str:
    return "sync-confirmed"


@pytest.mark.parametrize("blocking", [True, False])
def test_a_method_re_pointed_to_async_code_after_the_first_call_is_awaited(
    blocking: bool,
) -> None:
    class Port:
        def confirm(self, signed: Any) -> str:
            return "sync-confirmed"

    port = Port()
    port.blocking = blocking  # type: ignore[attr-defined]
    assert _confirm(port) == "sync-confirmed"
    Port.confirm.__code__ = _async_template.__code__  # the host swaps the body
    assert inspect.iscoroutinefunction(port.confirm)
    result = _confirm(port)
    # a remembered "sync" verdict hands back an un-awaited coroutine: the result is lost
    assert result == "async-confirmed"


def test_a_method_re_pointed_to_sync_code_after_the_first_call_is_called() -> None:
    class Port:
        async def confirm(self, signed: Any) -> str:
            return "async-confirmed"

    port = Port()
    assert _confirm(port) == "async-confirmed"
    Port.confirm.__code__ = _sync_template.__code__
    assert not inspect.iscoroutinefunction(port.confirm)
    # a remembered "async" verdict awaits a str: TypeError after the step already ran
    assert _confirm(port) == "sync-confirmed"


class _SyncWithAsyncFunc:
    """A plain callable that carries an unrelated coroutine function as ``__func__``."""

    __func__ = staticmethod(_async_template)  # the function itself, unbound

    def __call__(self, signed: Any) -> str:
        return "sync-confirmed"


def test_a_callable_object_is_judged_by_itself_not_by_a_func_attribute() -> None:
    class Port:
        blocking = False
        confirm = _SyncWithAsyncFunc()

    assert not inspect.iscoroutinefunction(Port().confirm)
    assert _confirm(Port()) == "sync-confirmed"


def test_id_reuse_never_answers_for_the_dead_function() -> None:
    for _ in range(200):
        namespace: dict[str, Any] = {}
        exec("def f(signed):\n    return 1\n", namespace)
        sync = namespace.pop("f")
        assert _coroutine(sync) is False
        old = id(sync)
        del sync  # freed by its reference count: the next function may take its address
        exec("async def f(signed):\n    return 1\n", namespace)
        fresh = namespace.pop("f")
        if id(fresh) == old:  # the same address: must still be judged afresh
            assert _coroutine(fresh) is True
        assert _coroutine(fresh) is True


def test_partials_and_bound_methods_answer_as_inspect() -> None:
    class Port:
        async def a(self, signed: Any) -> None: ...

        def s(self, signed: Any) -> None: ...

    port = Port()
    cases: list[Any] = [
        port.a, port.s, functools.partial(port.a), functools.partial(port.s),
        functools.partial(_async_template, None), _SyncWithAsyncFunc(),
        staticmethod(_async_template), classmethod(_sync_template), None, 3,
    ]  # fmt: skip
    for _ in range(2):
        for case in cases:
            assert _coroutine(case) == inspect.iscoroutinefunction(case), case


def test_a_decoy_with_a_func_attribute_cannot_poison_the_verdict_on_the_real_method() -> None:
    """A decoy port whose ``confirm`` is a sync callable claiming another port's coroutine
    function as its ``__func__`` runs first; the real port's async ``confirm`` must still be
    awaited (a verdict remembered per ``__func__`` would be the decoy's: "sync")."""

    async def real_confirm(self: Any, signed: Any) -> str:
        return "async-confirmed"

    class Decoy:
        blocking = False

        class _Call:
            __func__ = staticmethod(real_confirm)

            def __call__(self, signed: Any) -> str:
                return "decoy"

        confirm = _Call()

    class Port:
        blocking = False
        confirm = real_confirm

    assert _confirm(Decoy()) == "decoy"
    assert _confirm(Port()) == "async-confirmed"
