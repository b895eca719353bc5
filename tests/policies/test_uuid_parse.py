"""``uuid.parse`` reads only its argument (deterministic): allowed when called as
``uuid.parse(``; every other ``uuid.*`` (``uuid.rfc4122`` answers by how many the process made
before) stays refused, however it is spelled."""

from __future__ import annotations

import pytest

from agentguard.policies import Policy
from agentguard.policies._engine import PolicyEngine, PolicyEngineError

UUID = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"


def _policy(body: str) -> Policy:
    return Policy("u", "t.allow", {"t.rego": "package t\nimport rego.v1\n" + body + "\n"})


def test_uuid_parse_compiles_and_answers_alike_each_time() -> None:
    policy = _policy(
        "default allow := false\n"
        'allow if { p := uuid.parse(input.id); p.version == 1; p.variant == "RFC4122" }\n'
        'reasons contains "bad" if not uuid.parse(input.id)'
    )
    engine = PolicyEngine()
    for _ in range(3):
        assert engine.evaluate(policy, input={"id": UUID}, params={}, wasm={}).decision == "allow"
    second = PolicyEngine()  # a fresh process's engine (a challenger) agrees
    denied = second.evaluate(policy, input={"id": "not-a-uuid"}, params={}, wasm={})
    assert denied.decision == "deny" and denied.reasons == ("bad",)


@pytest.mark.parametrize(
    "body",
    [
        'allow if { startswith(uuid.rfc4122("x"), "1") }',
        'allow if { startswith(uuid["rfc4122"]("x"), "1") }',
        'allow if { uuid.parse(uuid.rfc4122("x")) }',  # an allowed call around a refused one
        'allow if { uuid . parse("x") }',  # only the exact spelling is allowed
        'allow if { uuid.parse\n("x") }',
        'allow if { uuid["parse"]("x") }',
        'allow if { uuid.parsex("x") }',
        "allow if { x := uuid.parse; x }",
        'allow if { rand.intn("x", 10) > 4 }',
    ],
)
def test_every_other_uuid_spelling_is_refused(body: str) -> None:
    with pytest.raises(PolicyEngineError, match="not supported"):
        PolicyEngine().evaluate(_policy(body), input={}, params={}, wasm={})
