"""Proof that a signature came out of the pipeline: trace every step the runners execute and
every signature made in the process (``SigningSpy``), in one timeline.

``assert_signed_by_pipeline(n)``: exactly ``n`` signatures, each made inside a pipeline
``Sign`` step that came after that pass's ``Reserve → Authorize → Bind → Prepare`` and was
followed by ``MarkSigned`` before ``Send``. ``assert_gated_by_pipeline(n)``: for signatures
made by someone else's signer (the official x402 client), each came after a complete pass.
``only``: count only these kinds of signature (a payee's facilitator running in the same
process signs settlement transactions; an agent's payment is always typed data).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from agentguard.pipeline import AsyncRunner, Runner, Sign
from agentguard.testing import SigningSpy

_BEFORE_SIGN = ["Reserve", "Authorize", "Bind", "Prepare"]


def _subsequence(needle: list[str], hay: list[str]) -> bool:
    it = iter(hay)
    return all(any(h == n for h in it) for n in needle)


class PipelineTrace:
    def __init__(self, only: frozenset[str] | None = None) -> None:
        self.only = only
        self.spy = SigningSpy()
        self.timeline: list[str] = []  # step names and "SIGNATURE", in order
        self.in_sign: list[int] = []  # signatures made inside each Sign step
        self._saved: list[tuple[type, Any]] = []

    def __enter__(self) -> PipelineTrace:
        self.spy.__enter__()
        trace = self
        original = Runner.execute
        original_async = AsyncRunner.execute

        def execute(runner: Runner, step: Any, port: Any = None) -> Any:
            before = trace._mark(step)
            try:
                return original(runner, step, port)
            finally:
                trace._after(step, before)

        async def execute_async(runner: AsyncRunner, step: Any, port: Any = None) -> Any:
            before = trace._mark(step)
            try:
                return await original_async(runner, step, port)
            finally:
                trace._after(step, before)

        self._saved = [(Runner, original), (AsyncRunner, original_async)]
        Runner.execute = execute  # type: ignore[method-assign]
        AsyncRunner.execute = execute_async  # type: ignore[method-assign]
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for owner, original in self._saved:
            owner.execute = original  # type: ignore[attr-defined]
        self.spy.__exit__(t, e, tb)

    @property
    def signatures(self) -> int:
        return sum(1 for c in self.spy.calls if self.only is None or c in self.only)

    def _sync(self) -> None:
        while self.timeline.count("SIGNATURE") < self.signatures:
            self.timeline.append("SIGNATURE")

    def _mark(self, step: Any) -> int:
        self._sync()
        self.timeline.append(type(step).__name__)
        return self.signatures

    def _after(self, step: Any, before: int) -> None:
        if isinstance(step, Sign):
            self.in_sign.append(self.signatures - before)
        self._sync()

    def _passes(self) -> list[list[str]]:
        """The timeline cut after each signature."""
        self._sync()
        passes, current = [], []
        for item in self.timeline:
            current.append(item)
            if item == "SIGNATURE":
                passes.append(current)
                current = []
        return passes

    def assert_signed_by_pipeline(self, n: int) -> None:
        assert self.signatures == n, (self.spy.calls, self.timeline)
        assert sum(self.in_sign) == n and all(k <= 1 for k in self.in_sign), self.in_sign
        for chunk in self._passes():
            assert chunk[-2:] == ["Sign", "SIGNATURE"], chunk
            assert _subsequence(_BEFORE_SIGN, chunk), chunk
        rest = self.timeline
        for i, item in enumerate(rest):
            if item == "Sign" and i + 2 < len(rest) and rest[i + 1] == "SIGNATURE":
                after = rest[i + 2 :]
                assert "MarkSigned" in after and (
                    "Send" not in after or after.index("MarkSigned") < after.index("Send")
                ), after

    def assert_gated_by_pipeline(self, n: int) -> None:
        assert self.signatures == n, (self.spy.calls, self.timeline)
        for chunk in self._passes():
            assert _subsequence([*_BEFORE_SIGN, "Sign", "MarkSigned", "Send"], chunk), chunk
