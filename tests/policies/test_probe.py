"""The policy probe (``agentguard.policies._probe``) with real regopy: what crashes or hangs the
engine in a child is refused, everything else passes, and each verdict is reached once."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from agentguard.policies import Policy, _probe, bundled, load
from agentguard.policies._engine import PolicyEngine, PolicyEngineError
from agentguard.policies._probe import PolicyRefused, probe, probe_count

SEGV = "package t\nimport input.secret\nallow if { some v in [secret]; secret }"
ABORT = 'package a.t\nobject := {"get": 1}\nallow if object.get(input, "secret", 0) else := false'
HANG = (
    "package t\nallow if { some i in numbers.range(1, 3000); "
    "some j in numbers.range(1, 3000); i * j == -1 }"
)
SPEND_PARAMS: dict[str, Any] = {
    "max_per_tx": {"0x" + "b2" * 20: "1000000"},
    "allowed_recipients": ["0x" + "c3" * 20],
    "window_caps": [{"asset": "0x" + "b2" * 20, "window_seconds": 3600, "max_amount": "5"}],
}
_serial = iter(range(1 << 30))


def policy(source: str, entrypoint: str = "t.allow") -> Policy:
    """A new code hash each time (a comment), so no earlier verdict answers."""
    return Policy("t", entrypoint, {"p.rego": f"{source}\n# {next(_serial)}\n"})


@pytest.mark.parametrize(
    ("source", "entrypoint", "said"),
    [(SEGV, "t.allow", "(SIGSEGV)"), (ABORT, "a.t.allow", "(SIGABRT)")],
)
def test_a_crash_is_refused_with_what_happened(source: str, entrypoint: str, said: str) -> None:
    with pytest.raises(PolicyRefused) as refused:
        probe(policy(source, entrypoint), {})
    assert isinstance(refused.value, PolicyEngineError)
    assert said in str(refused.value) and "it is refused" in str(refused.value)


def test_a_hang_is_refused_at_the_time_limit() -> None:
    started = time.monotonic()
    with pytest.raises(PolicyRefused, match="time limit"):
        probe(policy(HANG), {}, timeout=0.3)
    assert time.monotonic() - started < 5  # killed, not waited for (it runs for minutes)


@pytest.mark.parametrize("name", bundled())
def test_every_bundled_policy_passes(name: str) -> None:
    for params in ({}, SPEND_PARAMS):
        probe(load(name), params)


def test_a_policy_error_passes_and_the_engine_reports_it_as_before() -> None:
    broken = policy("package t\nallow if {")
    probe(broken, {})
    with pytest.raises(PolicyEngineError, match="does not compile") as error:
        PolicyEngine().evaluate(broken, input={}, params={}, wasm={})
    assert not isinstance(error.value, PolicyRefused)


def test_each_verdict_is_reached_once_refusals_too() -> None:
    good, bad = policy("package t\nallow if input.to"), policy(SEGV)
    probe(good, {})
    with pytest.raises(PolicyRefused):
        probe(bad, {})
    before = probe_count()
    for _ in range(3):
        probe(good, {})
        with pytest.raises(PolicyRefused, match="SIGSEGV"):
            probe(bad, {})
    assert probe_count() == before
    probe(good, {"other": "params"})  # another configuration is probed on its own
    assert probe_count() == before + 1


def test_a_process_with_threads_probes_in_a_fresh_interpreter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fork would copy a lock another thread holds; with a second thread running the child
    is a new interpreter, which judges the same."""
    forked: list[bytes] = []
    monkeypatch.setattr(_probe, "_forked", lambda request, timeout: forked.append(request))
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        probe(policy("package t\nallow if input.to"), {})
        with pytest.raises(PolicyRefused, match="SIGABRT"):
            probe(policy(ABORT, "a.t.allow"), {})
        with pytest.raises(PolicyRefused, match="time limit"):
            probe(policy(HANG), {}, timeout=0.3)
    finally:
        stop.set()
        other.join()
    assert forked == []
