"""A task the watch cannot judge (its policy's probe times out: a hanging registration) no
longer holds every later task behind it: the watch defers it, keeps its cursor before it and
goes on judging, so a later fraud is reported in the same pass, exactly once. The deferred task
and its tries live in the cursor file: a restarted watch resumes the count."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentguard.challenge import Watcher
from agentguard.challenge._watch import MAX_RETRY_DELAY, Cursor
from agentguard.policies import Policy, _probe
from agentguard.policies._probe import probe_key
from tests.network.conftest import NETCHECK, UNIT, fresh_agent, fresh_client, params, transfer

from .inprocess import InProcessNetwork
from .probe_stub import use_probe_child, virtual_watcher

HANGS = Policy(
    name="netcheck-hangs",
    entrypoint=NETCHECK.entrypoint,
    modules={k: v + "\n# the probe hangs on this one\n" for k, v in NETCHECK.modules.items()},
    params_schema=NETCHECK.params_schema,
)
SLOW_PARAMS = params(max_per_tx=100 * UNIT)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessNetwork]:
    """Seq 1: an honest allow under a registration whose policy the challenger's probe cannot
    judge (stubbed below: it times out); seq 2: a fraud (two of three operators allow a 50 USDC
    spend over the 10 USDC cap) under another registration."""
    network = InProcessNetwork(tmp_path_factory.mktemp("net"), liars=2)
    slow, victim = fresh_client(), fresh_client()
    network.register(slow, HANGS, SLOW_PARAMS)
    network.register(victim, NETCHECK, params(max_per_tx=10 * UNIT))
    assert network.create(slow, transfer(fresh_agent(), 5 * UNIT))["attestation"]["decision"]
    fraud = network.create(victim, transfer(fresh_agent(), 50 * UNIT))
    assert fraud["attestation"]["decision"] == "allow"
    yield network
    network.close()


@pytest.fixture
def hanging(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The probe child: out of time for ``HANGS``, the real child otherwise; one entry per
    probe of ``HANGS``."""
    real = _probe._forked
    probed: list[bool] = []

    def child(request: bytes, timeout: float) -> tuple[str | None, bool]:
        if b"the probe hangs on this one" in request:
            probed.append(True)
            return _probe._verdict(None, False, timeout)
        return real(request, timeout)

    use_probe_child(monkeypatch, child)
    return probed


def _watch(net: InProcessNetwork, tmp: Path, now: list[float], **kw: Any) -> Any:
    return virtual_watcher(net, tmp, now, **kw).run()


def test_a_later_fraud_is_reported_while_a_hanging_task_waits_and_a_restart_keeps_its_count(
    net: InProcessNetwork, tmp_path: Path, hanging: list[bool]
) -> None:
    liars = {a.lower() for a in net.operator_addresses[:2]}
    key = probe_key(HANGS, SLOW_PARAMS).hex()
    now = [1_000_000.0]

    # a 30 s slice: the hanging task is tried once, the fraud behind it is judged at once
    first = _watch(net, tmp_path, now, until=now[0] + 30, retries=2)
    assert set(first.operators) == liars and len(first.records) == 1, first.text()
    assert first.retried == 1 and first.checked == 1
    cursor = Cursor.load(tmp_path / "cursor.json")
    assert (cursor.seq, cursor.ahead, cursor.deferred) == (0, 2, {1: key})
    assert cursor.keys[key][0] == 1

    # restarted (a new process would be the same): the count goes on from 1, not from 0
    second = _watch(net, tmp_path, now, until=now[0] + 60, retries=2)
    assert not second.records and not second.operators  # the fraud is not reported again
    assert second.retried == 1 and second.checked == 0
    cursor = Cursor.load(tmp_path / "cursor.json")
    assert cursor.keys[key][0] == 2 and cursor.deferred == {1: key} and cursor.seq == 0

    third = _watch(net, tmp_path, now, once=True, retries=2)
    assert not third.records and third.checked == 1
    (warning,) = third.warnings
    assert "probe failed 3 times in a row" in warning["warning"]
    cursor = Cursor.load(tmp_path / "cursor.json")
    assert (cursor.seq, cursor.ahead, cursor.deferred) == (2, 2, {})
    assert len(hanging) == 3  # one probe per counted try: nothing judged it in between


def test_a_cursor_file_of_before_reads_as_nothing_deferred(tmp_path: Path) -> None:
    path = tmp_path / "cursor.json"
    path.write_text('{"seq": 7, "horizon": 3}\n')
    cursor = Cursor.load(path)
    assert (cursor.seq, cursor.ahead, cursor.deferred, cursor.keys) == (7, 7, {}, {})
    cursor.deferred, cursor.keys, cursor.ahead = {8: "ab"}, {"ab": (2, 5.0)}, 12
    cursor.save(path)
    again = Cursor.load(path)
    assert (again.ahead, again.deferred, again.keys) == (12, {8: "ab"}, {"ab": (2, 5.0)})


def test_a_pause_read_back_is_never_longer_than_the_longest_one(tmp_path: Path) -> None:
    """A cursor written under a clock later set back (or edited) must not hold a deferred task
    for longer than one ``MAX_RETRY_DELAY``."""
    cursor = Cursor(deferred={3: "ab"}, keys={"ab": (2, 1e12), "cd": (1, 1_000_010.0)})
    watcher = Watcher(
        object(),  # type: ignore[arg-type]
        cursor_file=tmp_path / "cursor.json",
        out_dir=tmp_path,
        clock=lambda: 1_000_000.0,
    )
    watcher._resume(cursor)
    assert cursor.keys == {"ab": (2, 1_000_000.0 + MAX_RETRY_DELAY), "cd": (1, 1_000_010.0)}
