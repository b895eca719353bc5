"""Interrupted after the payment was signed but before it was sent (red team): the hold goes
back only while the signed payment is unreachable from anything the caller keeps (the
request, the exception it catches and the frames on its traceback), and an interruption
while the "signed" record is written keeps it counted."""

from __future__ import annotations

import asyncio
import gc
from types import FunctionType, ModuleType
from typing import Any

import httpx
import pytest

from agentguard import Signer
from agentguard.ledger import Ledger
from agentguard.pipeline import Signed
from agentguard.x402 import X402Auth

from .conftest import ALLOWANCES
from .fakes import FakeServer
from .test_interrupted import FORMS, Audit, _async_client, _client, counted


def _reachable(root: object, depth: int = 7) -> list[object]:
    """Every object ``root`` refers to within ``depth`` hops (frames' and generators' locals
    included), not entering modules, classes or functions (shared, not the caller's)."""
    seen: dict[int, object] = {}
    todo = [root]
    for _ in range(depth):
        nxt: list[object] = []
        for obj in todo:
            if id(obj) in seen or isinstance(obj, ModuleType | type | FunctionType):
                continue
            seen[id(obj)] = obj
            nxt += gc.get_referents(obj)
            if isinstance(obj, BaseException):
                tb = obj.__traceback__
                while tb is not None:
                    nxt += tb.tb_frame.f_locals.values()
                    tb = tb.tb_next
        todo = nxt
    return list(seen.values())


@pytest.mark.parametrize("form", FORMS)
def test_an_interrupt_after_signing_releases_and_leaves_no_signed_payment_behind(
    form: str, signer: Signer, guard: Any, ledger: Ledger
) -> None:
    server = FakeServer()
    mark = ledger.mark_signed

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        mark(*args, **kwargs)
        raise KeyboardInterrupt

    ledger.mark_signed = interrupted  # type: ignore[method-assign]
    audit = Audit()
    auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES, audit=audit)
    request = httpx.Request("GET", "http://shop.test/paid")
    http = _client(auth, form, transport=server.transport())
    with http, pytest.raises(KeyboardInterrupt) as caught:
        http.send(request)
    assert counted(ledger, signer) == (0, 0) and server.payments == []
    assert audit.kinds == ["authorized", "released"]  # the unwinding ran (with the port)
    assert not any(k.lower().startswith("x-payment") for k in request.headers)
    leaked = [o for o in _reachable(caught.value) if isinstance(o, Signed)]
    assert leaked == []


@pytest.mark.parametrize("form", FORMS)
def test_an_interrupt_while_the_signed_record_is_written_stays_counted(
    form: str, signer: Signer, guard: Any, ledger: Ledger
) -> None:
    server = FakeServer()

    class Interrupting(Audit):
        def append(self, kind: str, record: Any) -> None:
            super().append(kind, record)
            if kind == "signed":
                raise KeyboardInterrupt

    audit = Interrupting()
    auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES, audit=audit)
    http = _client(auth, form, transport=server.transport())
    with http, pytest.raises(KeyboardInterrupt):
        http.get("http://shop.test/paid")
    # the record already told the sink a payment was signed: never given back (until proof)
    assert server.payments == [] and counted(ledger, signer) == (1, 10_000)
    assert audit.kinds == ["authorized", "signed"]


@pytest.mark.parametrize("form", FORMS)
async def test_a_cancel_after_signing_releases_async(
    form: str, signer: Signer, guard: Any, ledger: Ledger
) -> None:
    """The async drivers unwind with the run's port too (a cancel seen as the signed hold is
    marked, as a cancelled ledger call would raise it)."""
    server = FakeServer()
    mark = ledger.mark_signed

    def cancelled(*args: Any, **kwargs: Any) -> Any:
        mark(*args, **kwargs)
        raise asyncio.CancelledError

    ledger.mark_signed = cancelled  # type: ignore[method-assign]
    audit = Audit()
    auth = X402Auth(signer=signer, guard=guard, ledger=ledger, allowances=ALLOWANCES, audit=audit)
    request = httpx.Request("GET", "http://shop.test/paid")
    http = _async_client(auth, form, transport=server.async_transport())
    async with http:
        with pytest.raises(asyncio.CancelledError) as caught:
            await http.send(request)
    assert counted(ledger, signer) == (0, 0) and server.payments == []
    assert audit.kinds == ["authorized", "released"]
    assert not any(k.lower().startswith("x-payment") for k in request.headers)
    assert [o for o in _reachable(caught.value) if isinstance(o, Signed)] == []
