"""PolicyEngine on real regopy: decision rules, error paths, and that caching never leaks."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import pytest

from agentguard.policies import Policy, load
from agentguard.policies._engine import PolicyEngine, PolicyEngineError
from agentguard.policies._testkit import USDC, erc20, wasm_for


def policy(source: str, entrypoint: str = "t.allow", **schema: Any) -> Policy:
    return Policy(
        name="t",
        entrypoint=entrypoint,
        modules={"t.rego": "package t\nimport rego.v1\n" + source},
        params_schema=schema,
    )


# Allows iff input.x == data.params.x and data.wasm.y is true; says what it saw.
ECHO = policy(
    """
default allow := false
allow if {
\tinput.x == data.params.x
\tdata.wasm.y == true
}
reasons contains concat("", ["x=", format_int(input.x, 10), " p=", format_int(data.params.x, 10)])
reasons contains concat(",", sort(object.keys(data.wasm)))
"""
)


def run(engine: PolicyEngine, p: Policy, x: int, px: int, wasm: dict[str, Any]) -> tuple[str, ...]:
    """(decision, what the policy saw of input and params, the data.wasm keys it saw)."""
    result = engine.evaluate(p, input={"x": x}, params={"x": px}, wasm=wasm)
    seen = sorted(result.reasons, key=lambda r: not r.startswith("x="))
    return (result.decision, *seen)


def test_cached_policies_never_carry_state_between_calls() -> None:
    """Same policy and input, alternating wasm and params: each answer matches its own call."""
    engine = PolicyEngine()
    allow = run(engine, ECHO, 1, 1, {"y": True, "x402": {"a": 1}})
    assert allow == ("allow", "x=1 p=1", "x402,y")
    assert run(engine, ECHO, 1, 1, {"y": False}) == ("deny", "x=1 p=1", "y")
    assert run(engine, ECHO, 1, 2, {"y": True}) == ("deny", "x=1 p=2", "y")
    assert run(engine, ECHO, 2, 2, {"y": True}) == ("allow", "x=2 p=2", "y")
    assert run(engine, ECHO, 1, 1, {"y": True, "x402": {"a": 1}}) == allow
    assert run(engine, ECHO, 1, 1, {}) == ("deny", "x=1 p=1", "")


def test_a_tiny_cache_evicts_without_mixing_params() -> None:
    engine = PolicyEngine(max_bundles=1)
    for _ in range(2):
        assert run(engine, ECHO, 1, 1, {"y": True})[0] == "allow"
        assert run(engine, ECHO, 1, 2, {"y": True})[0] == "deny"


def test_threads_get_their_own_answers() -> None:
    engine = PolicyEngine()
    wrong: list[tuple[int, tuple[str, ...]]] = []

    def worker(n: int) -> None:
        for i in range(10):
            x = n * 100 + i
            got = run(engine, ECHO, x, x if i % 2 else x + 1, {"y": True})
            want = "allow" if i % 2 else "deny"
            if got[0] != want or got[1] != f"x={x} p={x if i % 2 else x + 1}":
                wrong.append((x, got))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_policy_sees_wasm_as_data_wasm_and_intent_fields_as_input() -> None:
    intent = erc20(5)
    probe = policy(
        """
allow if {
\tinput.to == data.wasm.spend.asset_checksummed
\tdata.wasm.spend.amount == "5"
\tinput.decoded_function_arguments[1] == "5"
\tinput.chain_id == "8453"
\tdata.wasm.history["86400"].count == 0
\tcount(data.wasm) == 6
}
"""
    )
    wasm = wasm_for(intent)
    wasm["spend"]["asset_checksummed"] = intent.to
    wasm["x402"] = {"scheme": "exact"}
    result = PolicyEngine().evaluate(probe, input=intent.parsed(), params={}, wasm=wasm)
    assert result.decision == "allow"


def test_undefined_entrypoint_is_a_deny_that_says_so() -> None:
    result = PolicyEngine().evaluate(policy("x := 1\n", "t.allow"), input={}, params={}, wasm={})
    assert result.decision == "deny"
    assert result.reasons == ("policy entrypoint t.allow is undefined; denied",)


@pytest.mark.parametrize(
    ("value", "kind"), [('"true"', "string"), ("1", "number"), ("{true}", "set")]
)
def test_non_boolean_entrypoint_is_a_deny(value: str, kind: str) -> None:
    result = PolicyEngine().evaluate(policy(f"allow := {value}\n"), input={}, params={}, wasm={})
    assert result.decision == "deny"
    assert result.reasons == (
        f"policy entrypoint t.allow returned a {kind}, not a boolean; denied",
    )


def test_approval_required_only_when_not_allowed_and_exactly_true() -> None:
    engine = PolicyEngine()
    both = policy("allow := true\napproval_required := true\n")
    assert engine.evaluate(both, input={}, params={}, wasm={}).decision == "allow"
    ask = policy('allow := false\napproval_required := true\nreasons := ["ask"]\n')
    assert engine.evaluate(ask, input={}, params={}, wasm={}).reasons == ("ask",)
    assert engine.evaluate(ask, input={}, params={}, wasm={}).decision == "approval_required"
    truthy = policy('allow := false\napproval_required := "yes"\n')
    assert engine.evaluate(truthy, input={}, params={}, wasm={}).decision == "deny"


def test_reasons_are_sorted_deduplicated_and_survive_quotes_and_unicode() -> None:
    p = policy(
        """
default allow := false
reasons contains concat("", ["b: ", input.s])
reasons contains "a"
reasons contains concat("", ["a"])
"""
    )
    result = PolicyEngine().evaluate(p, input={"s": 'he said "hé" \\ ok'}, params={}, wasm={})
    assert result.reasons == ("a", 'b: he said "hé" \\ ok')


def test_compile_errors_point_at_the_line() -> None:
    bad = policy("allow if {\n\tinput.x ==\n}\n")
    with pytest.raises(
        PolicyEngineError, match=r"does not compile: t\.rego:4:10: Invalid boolean operator"
    ):
        PolicyEngine().evaluate(bad, input={}, params={}, wasm={})


def test_runtime_errors_raise() -> None:
    conflict = policy("allow := true\nallow := false if input.x == 1\n")
    with pytest.raises(PolicyEngineError, match="conflicting rule values"):
        PolicyEngine().evaluate(conflict, input={"x": 1}, params={}, wasm={})
    missing = policy("allow if no_such_function(1)\n")
    with pytest.raises(PolicyEngineError, match="Function not found: no_such_function"):
        PolicyEngine().evaluate(missing, input={}, params={}, wasm={})


def test_with_is_refused_before_it_can_crash_the_process() -> None:
    source = 'allow if {\n\tx := input.y\n\tdata.t.z with input as {"y": x}\n}\nz := true\n'
    with pytest.raises(PolicyEngineError, match="'with' keyword is not supported"):
        PolicyEngine().evaluate(policy(source), input={}, params={}, wasm={})


def test_with_in_strings_and_comments_is_fine() -> None:
    in_a_string = policy('allow := "with" == "with" # with\n')
    assert PolicyEngine().evaluate(in_a_string, input={}, params={}, wasm={}).decision == "allow"


@pytest.mark.parametrize("entrypoint", ["allow", "data.t.allow", "t.allow;x", "t..allow"])
def test_malformed_entrypoints_are_refused(entrypoint: str) -> None:
    with pytest.raises(PolicyEngineError, match=r"must look like 'package\.rule'"):
        PolicyEngine().evaluate(policy("allow := true\n", entrypoint), input={}, params={}, wasm={})


def test_inputs_rego_would_wrap_are_refused() -> None:
    with pytest.raises(PolicyEngineError, match="does not fit in 64 bits"):
        PolicyEngine().evaluate(ECHO, input={"x": 1 << 64}, params={"x": 1}, wasm={})


@pytest.mark.parametrize(
    ("text", "mentions"),
    [
        ("[" * 40 + "]" * 40, "nests deeper"),
        ('{"a":' * 40 + "1" + "}" * 40, "nests deeper"),
        ("1," * 5000 + "1", "more than 4096"),  # no bracket at all: still counted
    ],
)
def test_strings_a_policy_could_unmarshal_are_bounded(text: str, mentions: str) -> None:
    """Strings skip the JSON-text check only when they cannot fail it (no bracket, too short
    to hold 4,096 values); a deep or a long list-like string still never reaches rego-cpp."""
    for where in ({"input": {"x": text}, "wasm": {}}, {"input": {}, "wasm": {"y": [text]}}):
        with pytest.raises(PolicyEngineError, match=mentions):
            PolicyEngine().evaluate(ECHO, params={"x": 1}, **where)


def test_a_precomputed_params_key_selects_the_same_bundle() -> None:
    """``params_json`` (what an operator computes once per registration) is the key the
    engine would compute itself: answers match the uncached call's."""
    from agentguard.policies import canonical_json

    engine = PolicyEngine()
    for px in (1, 2):
        key = canonical_json({"params": {"x": px}})
        keyed = engine.evaluate(
            ECHO, input={"x": 1}, params={"x": px}, wasm={"y": True}, params_json=key
        )
        assert keyed == engine.evaluate(ECHO, input={"x": 1}, params={"x": px}, wasm={"y": True})
        assert keyed.decision == ("allow" if px == 1 else "deny")


def test_wasm_keys_must_be_rego_identifiers() -> None:
    with pytest.raises(PolicyEngineError, match="not a Rego identifier"):
        PolicyEngine().evaluate(ECHO, input={"x": 1}, params={"x": 1}, wasm={"bad-key": 1})


def test_params_are_checked_against_the_schema() -> None:
    with pytest.raises(
        PolicyEngineError, match=r"do not match its schema at max_per_tx/0x.*100 is not of type"
    ):
        PolicyEngine().evaluate(
            load("tx_cap"),
            input=erc20(1).parsed(),
            params={"max_per_tx": {USDC: 100}},
            wasm=wasm_for(erc20(1)),
        )


def test_a_cached_bundle_never_skips_another_policy_objects_schema_check() -> None:
    engine = PolicyEngine()
    loose = policy("allow := true\n")
    strict = policy("allow := true\n", required=["cap"])
    assert loose.code_hash == strict.code_hash
    assert engine.evaluate(loose, input={}, params={}, wasm={}).decision == "allow"
    with pytest.raises(PolicyEngineError, match="'cap' is a required property"):
        engine.evaluate(strict, input={}, params={}, wasm={})


LATE_IMPORT = """
import resource, frozenlist  # a C++ extension loads libstdc++ privately, as web3 does
from agentguard.policies import Policy
from agentguard.policies._engine import PolicyEngine
p = Policy("w", "w.allow", {"w.rego": "package w\\nimport rego.v1\\n"
    "allow if time.weekday(input.ns) != concat(\\"\\", [input.pad, \\"x\\"])\\n"})
engine = PolicyEngine()
def run(k):
    return engine.evaluate(p, input={"ns": k * 3600 * 10**9, "pad": str(10**12 + k)},
                           params={}, wasm={})
for k in range(300): assert run(k).decision == "allow"
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for k in range(300, 1300): run(k)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_rego_cpp_shares_one_allocator_with_an_earlier_libstdcxx() -> None:
    """Without _share_libstdcxx this aborts (free(): invalid pointer) and leaks per query."""
    done = subprocess.run(
        [sys.executable, "-c", LATE_IMPORT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-500:]
    assert int(done.stdout) < 1024  # KB of peak RSS growth over 1000 evaluations
