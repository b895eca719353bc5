"""The agent's wait, attacked (red team): nonsense from the caller is an agentguard error."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any, cast

import pytest

from agentguard import ApprovalRequired, ConfigurationError
from agentguard._gateway import ApprovalStatus
from agentguard.ledger import Ledger
from agentguard.pipeline import guarded
from agentguard.pipeline._runner import AsyncRunner, Runner

from .test_flow import action


@pytest.mark.parametrize("timeout", ["5", Decimal(5), Decimal("NaN"), complex(1, 0)])
def test_a_timeout_that_is_not_a_number_is_a_configuration_error(timeout: Any) -> None:
    """Attack: a tool's arguments (LLM-chosen, JSON) carry ``approval_timeout="5"``. Before the
    fix the flow raised ``TypeError`` (``Decimal("NaN")``: ``decimal.InvalidOperation``, and
    ``Decimal(5)`` passed the range check and failed later as ``float + Decimal``): a
    dependency's exception instead of a typed refusal. Now it is a ``ConfigurationError``
    before anything is held."""
    with pytest.raises(ConfigurationError, match="approval_timeout"):
        next(guarded(action(timeout)))


class _Audit(list[tuple[str, Any]]):
    def append(self, kind: str, record: Any = None) -> None:  # type: ignore[override]
        super().append((kind, record))


class _Waiting:
    """A guard whose policy always wants a person, and a gateway that says "pending" (or
    whatever ``status`` does) for ever."""

    def __init__(self, status: Any) -> None:
        self.authorizer = self
        self.approval_status = status
        self.asked = 0

    def authorize(self, intent: Any, wasm_args: Any = None) -> Any:
        self.asked += 1
        raise ApprovalRequired("a person must approve this")


def _hold_of(audit: _Audit) -> str:
    (record,) = [r for kind, r in audit if kind == "approval_pending"]
    return str(record["reservation"])


def test_an_interrupted_wait_gives_the_hold_back() -> None:
    """Attack: the agent waits (``approval_timeout=3600``) and the wait is interrupted (Ctrl-C, a
    framework killing the tool call). Before the fix the local hold stayed ``reserved`` for
    ``approval_timeout + hold_seconds``: an hour of budget gone though nothing can be signed
    for it (no attestation exists while waiting). Now the runner releases it on the way out."""

    def interrupted(intent_hash: str) -> Any:
        raise KeyboardInterrupt

    ledger, audit = Ledger(), _Audit()
    runner = Runner(cast(Any, _Waiting(interrupted)), ledger, audit)
    runner.approval_poll = 0
    with pytest.raises(KeyboardInterrupt):
        runner.run(action(3600), cast(Any, None))
    assert ledger.get(_hold_of(audit)).state == "released"


def test_a_cancelled_async_wait_gives_the_hold_back() -> None:
    """The same attack on the asyncio runner: ``asyncio.wait_for(wallet.transfer(...,
    approval_timeout=3600), 30)`` cancels the wait; before the fix the hold stayed for an hour."""

    async def scenario() -> tuple[Ledger, _Audit]:
        asked = asyncio.Event()

        async def pending(intent_hash: str) -> ApprovalStatus:
            asked.set()
            return ApprovalStatus(intent_hash=intent_hash, status="pending", expires_at=None)

        ledger, audit = Ledger(), _Audit()
        runner = AsyncRunner(cast(Any, _Waiting(pending)), ledger, audit)
        runner.approval_poll = 0.01
        task = asyncio.ensure_future(runner.run(action(3600), cast(Any, None)))
        await asked.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return ledger, audit

    ledger, audit = asyncio.run(scenario())
    assert ledger.get(_hold_of(audit)).state == "released"
