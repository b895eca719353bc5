"""A policy probe that runs out of time (or gets no child process) is maybe the machine's load,
not the policy: the watch must not pass the task unjudged, or loading the challenger's box
would hide a fraud for good. It keeps its cursor before the task and tries again later."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentguard._exceptions import ChallengeError, ChallengeRetry, ConfigurationError
from agentguard.challenge import Quorum, Watcher
from agentguard.challenge._evaluate import CHALLENGE_PROBE_TIMEOUT
from agentguard.challenge._watch import MAX_RETRY_DELAY, Cursor
from agentguard.policies import _probe
from tests.network.conftest import NETCHECK, UNIT, fresh_agent, fresh_client, params, transfer

from .inprocess import InProcessNetwork


@pytest.fixture(scope="module")
def fraud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessNetwork]:
    """Two of three operators allow two 50 USDC spends the policy's 10 USDC per-payment cap
    refuses: frauds a working watch proves from the record alone."""
    net = InProcessNetwork(tmp_path_factory.mktemp("net"), liars=2)
    client = fresh_client()
    net.register(client, NETCHECK, params(max_per_tx=10 * UNIT))
    for _ in range(2):
        spend = transfer(fresh_agent(), 50 * UNIT)
        assert net.create(client, spend)["attestation"]["decision"] == "allow"
    yield net
    net.close()


Outcome = Callable[[bytes, float], tuple[str | None, bool]]


def flaky(monkeypatch: pytest.MonkeyPatch, failures: list[Outcome | type[OSError]]) -> list[float]:
    """The probe's child: the given failures first (a timeout verdict, or an OSError), then the
    real child. Returns the time limits it was given."""
    real = _probe._forked
    limits: list[float] = []

    def child(request: bytes, timeout: float) -> tuple[str | None, bool]:
        limits.append(timeout)
        if failures:
            failure = failures.pop(0)
            if isinstance(failure, type):
                raise failure(11, "Resource temporarily unavailable")
            return failure(request, timeout)
        return real(request, timeout)

    monkeypatch.setattr(_probe, "_forked", child)
    monkeypatch.setattr(_probe, "_fork_safe", lambda: True)
    monkeypatch.setattr(_probe, "_verdicts", type(_probe._verdicts)())  # nothing probed yet
    monkeypatch.setattr(_probe, "_RETRY_AFTER", 0.0)  # the pauses are not slept here
    return limits


def timed_out(request: bytes, timeout: float) -> tuple[str | None, bool]:
    return _probe._verdict(None, False, timeout)


def watch(net: InProcessNetwork, tmp: Path, **kw: Any) -> tuple[Any, list[tuple[float, int]]]:
    """A pinned-quorum watch run to the end; each pause with the cursor saved at that time
    (its clock moves by the pauses alone)."""
    pauses: list[tuple[float, int]] = []
    cursor_file = tmp / "cursor.json"
    now = [1_000_000.0]

    def sleep(seconds: float) -> None:
        pauses.append((seconds, Cursor.load(cursor_file).seq))
        now[0] += seconds

    report = Watcher(
        net.gateway.state,
        cursor_file=cursor_file,
        out_dir=tmp / "records",
        quorum=Quorum(frozenset(a.lower() for a in net.operator_addresses), 2),
        once=True,
        sleep=sleep,
        clock=lambda: now[0],
        **kw,
    ).run()
    return report, pauses


def liars(net: InProcessNetwork) -> set[str]:
    return {a.lower() for a in net.operator_addresses[:2]}


@pytest.mark.parametrize("failure", [timed_out, OSError], ids=["timeout", "no-child"])
def test_a_probe_that_fails_once_still_leads_to_the_challenge(
    fraud: InProcessNetwork,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    failure: Outcome | type[OSError],
) -> None:
    """The attack: the challenger's box is loaded while it re-evaluates the fraudulent task.
    Before the fix the timeout became a ``ChallengeError``, the task was passed with a
    warning and the cursor saved past it: the fraud was never challenged."""
    limits = flaky(monkeypatch, [failure])
    report, pauses = watch(fraud, tmp_path, retry_delay=7.0)
    assert set(report.operators) == liars(fraud), report.text()
    assert len(report.records) == 2 and report.retried == 1
    # one pause, the cursor still before the task during it; the fraud's second task (same
    # policy) was judged fine meanwhile, so its key counts afresh and the retry is due at once
    assert pauses == [(0.0, 0)]
    assert Cursor.load(tmp_path / "cursor.json").seq == 2  # judged, then passed
    assert limits and all(t == CHALLENGE_PROBE_TIMEOUT > _probe.PROBE_TIMEOUT for t in limits)


def test_the_retries_back_off_and_are_bounded_per_policy_code(
    fraud: InProcessNetwork, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A policy that times out on every try would stall the watch (and every later task) for
    good: after ``retries`` tries the task is passed with a warning that says why, and a later
    task of the same code that times out too is passed at once (a source listing many would
    otherwise cost the whole backoff each)."""
    limits = flaky(monkeypatch, [timed_out] * 50)
    report, pauses = watch(fraud, tmp_path, retries=4, retry_delay=100.0)
    assert pauses == [(100.0, 0), (200.0, 0), (MAX_RETRY_DELAY, 0), (MAX_RETRY_DELAY, 0)]
    # each try probed again; the second task when first read (it waits with the first,
    # uncounted: the watch went on past the first) and when passed
    assert len(limits) == 7
    assert report.retried == 4 and not report.records and report.checked == 2
    first, second = report.warnings
    assert "probe failed 5 times in a row" in first["warning"]
    assert "time limit (20 s" in first["warning"], first
    assert "probe failed 6 times in a row" in second["warning"]
    assert Cursor.load(tmp_path / "cursor.json").seq == 2


def test_a_held_server_timeout_does_not_answer_the_challenger(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A timeout held from a server's 2 s probe (the same process) is no verdict for the
    challenger's 20 s one; one held from a 20 s probe is (for its 60 s)."""
    limits = flaky(monkeypatch, [timed_out, timed_out])
    monkeypatch.setattr(_probe, "_RETRY_AFTER", 60.0)
    good = NETCHECK
    with pytest.raises(_probe.PolicyRefused):
        _probe.probe(good, {})
    from agentguard.challenge._evaluate import _probe as challenger_probe

    for _ in range(2):
        with pytest.raises(ChallengeRetry):
            challenger_probe(good, {})
    assert limits == [_probe.PROBE_TIMEOUT, CHALLENGE_PROBE_TIMEOUT]


def test_a_crash_is_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash is the policy's own doing: a ``ChallengeError`` (unverifiable), not a retry."""
    from agentguard.challenge._evaluate import _probe as challenger_probe
    from agentguard.policies import Policy

    crashing = Policy(
        "segv", "t.allow", {"p.rego": "package t\nimport input.secret\nallow if { some v in "
                            "[secret]; secret }\n# retry test\n"},
    )  # fmt: skip
    with pytest.raises(ChallengeError, match="SIGSEGV") as caught:
        challenger_probe(crashing, {})
    assert not isinstance(caught.value, ChallengeRetry)
    flaky(monkeypatch, [timed_out])
    with pytest.raises(ChallengeRetry, match="could not be judged now"):
        challenger_probe(crashing, {})


def test_bad_retry_settings_are_refused(tmp_path: Path) -> None:
    for bad in ({"retries": -1}, {"retry_delay": 0.0}, {"retry_delay": MAX_RETRY_DELAY + 1}):
        with pytest.raises(ConfigurationError, match="retr"):
            Watcher(object(), cursor_file=tmp_path / "c", out_dir=tmp_path, **bad)  # type: ignore[arg-type]


def test_a_retry_pause_ends_at_until(
    fraud: InProcessNetwork, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--until`` bounds the run: a retry pause (up to 300 s) is cut to end there, not
    overshoot it by a whole pause."""
    flaky(monkeypatch, [timed_out] * 50)
    now = [1_000_000.0]

    def clock() -> float:
        return now[0]

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    slept: list[float] = []
    Watcher(
        fraud.gateway.state,
        cursor_file=tmp_path / "cursor.json",
        out_dir=tmp_path / "records",
        quorum=Quorum(frozenset(a.lower() for a in fraud.operator_addresses), 2),
        until=now[0] + 150.0,
        once=True,
        clock=clock,
        sleep=sleep,
        retries=6,
        retry_delay=100.0,
    ).run()
    assert slept == [100.0, 50.0]  # the second pause (200 s) cut to end at until
    assert now[0] == 1_000_150.0


def test_a_key_judged_again_after_its_exhaustion_counts_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Final review (session 17): load exhausts a policy's probe key (its task passed with a
    warning); then the machine judges a later task of that key fine. A fraud under it within
    the exhaustion's hour that meets ONE transient timeout must be deferred and then proven,
    not passed at once: a key judged again counts afresh."""
    real = _probe._forked
    (tmp_path / "net").mkdir()
    net = InProcessNetwork(tmp_path / "net", liars=2)
    try:
        client = fresh_client()
        net.register(client, NETCHECK, params(max_per_tx=10 * UNIT))
        for _ in range(2):
            assert net.create(client, transfer(fresh_agent(), 5 * UNIT))["attestation"]
        flaky(monkeypatch, [timed_out] * 10)  # a loaded hour: the key runs out of tries
        loaded, _ = watch(net, tmp_path, retries=2, retry_delay=10.0)
        assert loaded.checked == 2 and loaded.warnings
        assert any(n > 2 for n, _ in Cursor.load(tmp_path / "cursor.json").keys.values())
        assert net.create(client, transfer(fresh_agent(), 5 * UNIT))["attestation"]
        monkeypatch.setattr(_probe, "_forked", real)  # the box recovers: that task is judged
        healthy, _ = watch(net, tmp_path, retries=2, retry_delay=10.0)
        assert healthy.checked == 1 and not healthy.warnings
        assert Cursor.load(tmp_path / "cursor.json").keys == {}
        fraud = net.create(client, transfer(fresh_agent(), 50 * UNIT))
        assert fraud["attestation"]["decision"] == "allow"
        flaky(monkeypatch, [timed_out])  # one transient timeout (the wrapped child is real)
        later, _ = watch(net, tmp_path, retries=2, retry_delay=10.0)
        assert set(later.operators) == liars(net)
    finally:
        net.close()
