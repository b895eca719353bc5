"""The watch's cursor and bounds: a crash (in-process, and a real SIGKILL of the CLI)
re-checks at most the batch in progress and never skips a task, so a lie recorded after the
crash point is still proven; ``max_tasks``, ``until``, ``once`` and ``interval`` hold."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentguard._exceptions import ConfigurationError
from agentguard.challenge import Quorum, Watcher
from agentguard.challenge import _watch as watch_module
from agentguard.challenge._watch import Cursor
from agentguard.network.state import open_state
from tests.network.conftest import NETCHECK, RPC, UNIT, fresh_eoa_client, params, transfer

from .watch_support import LyingNetwork

pytestmark = pytest.mark.integration

REAL_CHECK = watch_module.check_evidence
HONEST = 120  # tasks well under their cap first, then the lies


@pytest.fixture(scope="module")
def recorded() -> Iterator[tuple[LyingNetwork, list[str], list[str]]]:
    """A lying gateway's records: HONEST tasks of one client that stay under its cap, then
    four 5 USDC spends of another client with a 12 USDC cap (the last two are lies)."""
    with LyingNetwork(operators=3, timeout=5.0, startup_timeout=180.0) as net:
        rpc = RPC(net, net.api_key)
        calm, calm_key = fresh_eoa_client()
        net.register_policy_client(
            calm, NETCHECK, params(daily_cap=10_000 * UNIT, rate=10_000), owner_key=calm_key
        )
        liar, liar_key = fresh_eoa_client()
        net.register_policy_client(
            liar, NETCHECK, params(max_per_tx=5 * UNIT, daily_cap=12 * UNIT), owner_key=liar_key
        )
        order = [rpc.create(calm, transfer(calm, UNIT))["task_id"] for _ in range(HONEST)]
        lies = []
        for _ in range(4):
            time.sleep(1.05)
            result = rpc.create(liar, transfer(liar, 5 * UNIT))
            assert result["attestation"]["decision"] == "allow"
            order.append(result["task_id"])
            lies.append(result["task_id"])
        yield net, order, lies[2:]


class Crash(BaseException):
    """The process dies here (not an ``Exception``: nothing may handle it)."""


def quorum(net: LyingNetwork) -> Quorum:
    return Quorum(frozenset(a.lower() for a in net.operator_addresses), 2)


def watcher(net: LyingNetwork, tmp: Path, **kw: Any) -> tuple[Watcher, Any]:
    state = open_state(str(net.state_dir / "state.sqlite3"))
    kw.setdefault("once", True)
    return Watcher(
        state,
        cursor_file=tmp / "cursor.json",
        out_dir=tmp / "records",
        quorum=quorum(net),
        **kw,
    ), state


def spy(monkeypatch: pytest.MonkeyPatch, crash_at: int | None = None) -> list[str]:
    """Records the task ids the watch checks; raises at the ``crash_at``-th check."""
    seen: list[str] = []
    real = REAL_CHECK

    def checked(evidence: Any, *args: Any, **kwargs: Any) -> Any:
        if crash_at is not None and len(seen) == crash_at:
            raise Crash
        seen.append(evidence.task_id)
        return real(evidence, *args, **kwargs)

    monkeypatch.setattr(watch_module, "check_evidence", checked)
    return seen


def test_a_crash_mid_batch_rechecks_that_batch_only_and_skips_nothing(
    recorded: tuple[LyingNetwork, list[str], list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net, order, lies = recorded
    first = spy(monkeypatch, crash_at=47)
    w, state = watcher(net, tmp_path, batch=10)
    with pytest.raises(Crash):
        w.run()
    state.close()
    saved = Cursor.load(tmp_path / "cursor.json")
    assert first == order[:47]
    assert saved.seq > 0  # the four batches before the crash are saved...

    second = spy(monkeypatch)
    w, state = watcher(net, tmp_path, batch=10)
    report = w.run()
    state.close()
    assert second[0] == order[40]  # ...and only the crashed batch is checked again
    assert second == order[40:]  # never skipping a task
    assert report.history == lies


def test_a_killed_watch_resumes_from_its_cursor(
    recorded: tuple[LyingNetwork, list[str], list[str]], tmp_path: Path
) -> None:
    """A real SIGKILL of ``agentguard challenge watch`` mid-run, then a resumed run."""
    net, order, lies = recorded
    argv = [
        sys.executable,
        "-m",
        "agentguard.cli",
        "challenge",
        "watch",
        "--state",
        str(net.state_dir / "state.sqlite3"),
        "--cursor",
        str(tmp_path / "cursor.json"),
        "--out",
        str(tmp_path / "records"),
        "--batch",
        "3",
        "--threshold",
        "2",
        *[x for a in net.operator_addresses for x in ("--operator", a)],
    ]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "cursor.json").exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    saved = Cursor.load(tmp_path / "cursor.json")  # whole: written atomically
    assert saved.seq > 0
    done = subprocess.run(
        [*argv, "--once", "--json"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 1, done.stderr  # a discrepancy is proven
    report = json.loads(done.stdout)
    assert report["checked"] == len(order) - order.index(_task_at(net, saved.seq)) - 1
    records = sorted(p.name for p in (tmp_path / "records").iterdir())
    assert records == sorted(f"challenge-history-{t[2:]}.json" for t in lies)


def _task_at(net: LyingNetwork, seq: int) -> str:
    state = open_state(str(net.state_dir / "state.sqlite3"))
    try:
        (task,) = state.tasks(after=seq - 1, limit=1)
        return task.task_id
    finally:
        state.close()


def test_the_bounds_hold(
    recorded: tuple[LyingNetwork, list[str], list[str]], tmp_path: Path
) -> None:
    net, order, _ = recorded
    w, state = watcher(net, tmp_path / "max", batch=3, max_tasks=7)
    assert w.run().checked == 7
    state.close()
    assert _task_at(net, Cursor.load(tmp_path / "max" / "cursor.json").seq) == order[6]

    w, state = watcher(net, tmp_path / "until", until=time.time() - 1)
    assert w.run().checked == 0
    state.close()

    now = [1000.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    w, state = watcher(
        net,
        tmp_path / "poll",
        once=False,
        interval=5.0,
        until=1012.0,
        clock=lambda: now[0],
        sleep=sleep,
    )
    report = w.run()
    state.close()
    assert report.checked == len(order)  # caught up on the first poll...
    assert sleeps == [5.0, 5.0, 2.0]  # ...then polled every interval, the last cut at until


def test_bad_bounds_and_a_broken_cursor_are_refused(
    recorded: tuple[LyingNetwork, list[str], list[str]], tmp_path: Path
) -> None:
    net, _, _ = recorded
    for bad in ({"batch": 0}, {"batch": 5000}, {"max_tasks": -1}, {"interval": -1.0}):
        with pytest.raises(ConfigurationError):
            watcher(net, tmp_path, **bad)
    (tmp_path / "cursor.json").write_text("{not json")
    w, state = watcher(net, tmp_path)
    with pytest.raises(ConfigurationError, match="cursor file"):
        w.run()
    state.close()
