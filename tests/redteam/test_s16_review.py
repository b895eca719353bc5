"""Final review of session 16: the builtins refused before compiling, reached another way.

Rego calls ``a.b(x)`` and ``a["b"](x)`` alike, and rego-cpp 1.5.2 runs the builtin either
way: each refusal matched only the dotted spelling, so ``opa["runtime"]()`` still read the
process's environment, ``internal["print"](...)`` wrote to its stdout and ``time["now_ns"]()``
read the clock. ``uuid.rfc4122`` answers by how many the process made before (a fresh
challenger and a long-running operator disagree), like a clock.
"""

from __future__ import annotations

import pytest

from agentguard import IntentError, PaymentIntent
from agentguard._gateway import _wasm_args
from agentguard.policies import Policy
from agentguard.policies._engine import PolicyEngine, PolicyEngineError

SOURCES = {
    "opa bracket": 'reasons contains opa["runtime"]().env.S16_REVIEW_SECRET if true\nallow := false',
    "opa raw key": "reasons contains opa[`runtime`]().env.S16_REVIEW_SECRET if true\nallow := false",
    "opa spaced": 'allow if { x := opa [ "runtime" ] ( ); x.env.S16_REVIEW_SECRET != "" }',
    "opa commented": 'allow if { x := opa # a comment\n["runtime"](); x.env != {} }',
    "internal print": 'allow if { internal["print"](["S16-REVIEW-LOG"]) }',
    "time bracket": 'allow if { time["now_ns"]() > 1 }',
    "time raw key": "allow if { time[`now_ns`]() > 1 }",
    "time newline": 'allow if { x := time["now_ns"]\n(); x > 1 }',
    "jwt bracket": 'allow if { io.jwt["decode_verify"]("a.b.c", {}) }',
    "io bracket": 'allow if { io["jwt"].decode_verify("a.b.c", {}) }',
    "x509": 'allow if { crypto.x509.parse_and_verify_certificates("x") }',
    "uuid": 'allow if { startswith(uuid.rfc4122("x"), "1") }',
    "uuid bracket": 'allow if { startswith(uuid["rfc4122"]("x"), "1") }',
    "rand": 'allow if { rand.intn("x", 10) > 4 }',
}


@pytest.mark.parametrize("body", SOURCES.values(), ids=SOURCES.keys())
def test_a_refused_builtin_is_refused_however_it_is_spelled(
    body: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("S16_REVIEW_SECRET", "s3cr3t-review")
    policy = Policy("odd", "t.allow", {"t.rego": "package t\nimport rego.v1\n" + body + "\n"})
    with pytest.raises(PolicyEngineError, match="not supported") as refused:
        PolicyEngine().evaluate(policy, input={"x": 1}, params={}, wasm={})
    assert "s3cr3t" not in str(refused.value)
    assert "S16-REVIEW-LOG" not in capfd.readouterr().out


@pytest.mark.parametrize(
    "body",
    [
        "allow if input.opa.runtime == 1",  # input data named like a builtin
        'allow if { x := {"now_ns": 1}; x["now_ns"] == 1 }',  # a bracket that is not a call
        'allow if { "time[\\"now_ns\\"]()" != "" }',  # in a string
        'allow if { time.weekday(0) == "Thursday" }',  # the clock-free time builtins
        "allow if { count([1, 2]) == 2 }",
    ],
)
def test_what_only_looks_like_a_refused_builtin_still_compiles(body: str) -> None:
    policy = Policy("ok", "t.allow", {"t.rego": "package t\nimport rego.v1\n" + body + "\n"})
    decided = PolicyEngine().evaluate(policy, input={"opa": {"runtime": 1}}, params={}, wasm={})
    assert decided.decision == "allow"


def _payment() -> PaymentIntent:
    return PaymentIntent(
        payer="0x" + "11" * 20, scheme="upto", network="eip155:8453", asset="0x" + "22" * 20,
        amount=10_000, pay_to="0x" + "33" * 20, resource="https://api.example/x",
    )  # fmt: skip


@pytest.mark.parametrize("version", [True, 2.0])
def test_wasm_args_may_not_retype_a_payments_details(version: object) -> None:
    """Python's ``==`` took ``True`` for ``1`` and ``2.0`` for ``2``: the caller's details
    passed as the payment's own while the policy read ``true`` (or ``2.0``)."""
    intent = _payment()
    details = {**intent.wasm_args()["x402"], "x402_version": version}
    with pytest.raises(IntentError, match="differs"):
        _wasm_args(intent, {"x402": details})
    assert _wasm_args(intent, {"x402": dict(intent.wasm_args()["x402"])})  # its own: sent


@pytest.mark.parametrize("junk", [{1, 2}, b"raw", float("nan"), {1: "a", "b": 2}])
def test_wasm_args_that_are_not_json_are_an_intent_error(junk: object) -> None:
    with pytest.raises(IntentError, match="must be JSON"):
        _wasm_args(_payment(), {"extra": junk})
