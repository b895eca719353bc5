"""A stand-in for the policy probe's child and a watch on a virtual clock, shared by the
tests of the watch's retries and deferrals: the child decides each probe's verdict (a
timeout, or the real child's), and the watch's clock moves only by its own pauses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentguard.challenge import Quorum, Watcher
from agentguard.policies import _probe
from tests.challenge.inprocess import InProcessNetwork

Child = Callable[[bytes, float], tuple[str | None, bool]]


def use_probe_child(monkeypatch: pytest.MonkeyPatch, child: Child) -> None:
    """Every probe goes to ``child`` with an empty verdict cache and no held timeouts."""
    monkeypatch.setattr(_probe, "_forked", child)
    monkeypatch.setattr(_probe, "_fork_safe", lambda: True)
    monkeypatch.setattr(_probe, "_verdicts", type(_probe._verdicts)())
    monkeypatch.setattr(_probe, "_RETRY_AFTER", 0.0)


def virtual_watcher(net: InProcessNetwork, tmp: Path, now: list[float], **kw: Any) -> Watcher:
    """A pinned-quorum watch of ``net`` whose clock is ``now[0]``, moved by its pauses."""

    def sleep(seconds: float) -> None:
        now[0] += seconds

    return Watcher(
        net.gateway.state,
        cursor_file=tmp / "cursor.json",
        out_dir=tmp / "records",
        quorum=Quorum(frozenset(a.lower() for a in net.operator_addresses), 2),
        clock=lambda: now[0],
        sleep=sleep,
        retry_delay=60.0,
        **kw,
    )
