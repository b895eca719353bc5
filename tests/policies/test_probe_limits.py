"""A held probe verdict answers only the time limits it speaks for: a pass under a long limit
says nothing of a short one, a timeout under a short limit nothing of a long one, a fault
answers every limit. The child is replaced by a stub, so each verdict is chosen."""

from __future__ import annotations

import pytest

from agentguard.policies import Policy, _probe
from agentguard.policies._probe import PolicyRefused, probe

_serial = iter(range(1 << 30))
_TIMEOUT = _probe._verdict(None, False, 2.0)
_FAULT = ("crashed the policy engine (SIGSEGV) while being compiled or evaluated", True)


class _Child:
    """Stands for both kinds of child: answers ``verdict`` and counts the probes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.verdict: tuple[str | None, bool] = (None, True)
        self.limits: list[float] = []
        monkeypatch.setattr(_probe, "_verdicts", type(_probe._verdicts)())
        monkeypatch.setattr(_probe, "_forked", self)
        monkeypatch.setattr(_probe, "_spawned", self)

    def __call__(self, request: bytes, timeout: float) -> tuple[str | None, bool]:
        self.limits.append(timeout)
        return self.verdict


def _policy() -> Policy:
    return Policy("t", "t.allow", {"p.rego": f"package t\nallow := true\n# {next(_serial)}\n"})


def test_a_pass_under_a_long_limit_does_not_answer_a_shorter_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    child = _Child(monkeypatch)
    policy, params = _policy(), {"n": 1}
    probe(policy, params, timeout=20.0)  # the challenger's limit: it finishes in, say, 5 s
    child.verdict = _TIMEOUT
    with pytest.raises(PolicyRefused):  # a server's 2 s probe is its own question
        probe(policy, params, timeout=2.0)
    assert child.limits == [20.0, 2.0]
    probe(policy, params, timeout=20.0)  # the 20 s pass still answers 20 s and longer
    probe(policy, params, timeout=30.0)
    with pytest.raises(PolicyRefused):  # and the 2 s timeout answers 2 s and shorter
        probe(policy, params, timeout=1.0)
    assert child.limits == [20.0, 2.0]


def test_a_pass_under_a_short_limit_answers_every_longer_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    child = _Child(monkeypatch)
    policy = _policy()
    probe(policy, {}, timeout=2.0)
    for limit in (2.0, 5.0, 20.0):
        probe(policy, {}, timeout=limit)
    assert child.limits == [2.0]
    child.verdict = _TIMEOUT
    with pytest.raises(PolicyRefused):
        probe(policy, {}, timeout=1.0)
    assert child.limits == [2.0, 1.0]


def test_a_timeout_under_a_short_limit_is_probed_again_under_a_longer_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    child = _Child(monkeypatch)
    policy = _policy()
    child.verdict = _TIMEOUT
    with pytest.raises(PolicyRefused):
        probe(policy, {}, timeout=2.0)
    child.verdict = (None, True)
    probe(policy, {}, timeout=20.0)
    assert child.limits == [2.0, 20.0]


def test_a_fault_answers_every_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    child = _Child(monkeypatch)
    policy = _policy()
    child.verdict = _FAULT
    for limit in (2.0, 0.5, 60.0):
        with pytest.raises(PolicyRefused) as refused:
            probe(policy, {}, timeout=limit)
        assert refused.value.lasting
    assert child.limits == [2.0]


def test_an_expired_timeout_is_probed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    child = _Child(monkeypatch)
    now = [1000.0]
    monkeypatch.setattr(_probe.time, "monotonic", lambda: now[0])
    policy, params = _policy(), {"a": [1, 2]}
    child.verdict = _TIMEOUT
    with pytest.raises(PolicyRefused):
        probe(policy, params, timeout=2.0)
    now[0] += _probe._RETRY_AFTER - 1
    with pytest.raises(PolicyRefused):
        probe(policy, params, timeout=2.0)
    assert child.limits == [2.0]
    now[0] += 2
    child.verdict = (None, True)
    probe(policy, params, timeout=2.0)
    assert child.limits == [2.0, 2.0]
