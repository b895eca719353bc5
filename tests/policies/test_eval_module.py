"""The engine's generated result rule (``_engine._EVAL_MODULE``) against the one it replaced.

The reference below is an earlier module, verbatim (one rule per case, every body tried,
the result an object). On seeded random policies whose entrypoint, ``reasons``,
``approval_required`` and ``tier`` take every kind of value (undefined, booleans, strings with
quotes and unicode, numbers, sets of mixed kinds, arrays, objects, null, conflicting rules)
and whose rules depend on the input, both print the same four values (the module under test
as an array ``[entry, reasons, approval, tier]``) or the same failure, and the engine decides
the same ``Evaluation`` (the reference's values read as that array), or both refuse with the
same error; the bundled agent_spend too.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from regopy import rego_shared as rs

from agentguard.policies import Policy, load
from agentguard.policies import _engine as engine_module
from agentguard.policies._engine import PolicyEngine, PolicyEngineError
from agentguard.policies._testkit import PAYEE, ROUTER, USDC, erc20, wasm_for

_REFERENCE = """package {package}
import rego.v1
default entry := "undefined"
entry := "true" if data.{entrypoint} == true
entry := "false" if data.{entrypoint} == false
entry := type_name(x) if {{
	x := data.{entrypoint}
	not is_boolean(x)
}}
default reasons := []
reasons := [base64.encode(x)] if {{
	x := data.{policy_package}.reasons
	is_string(x)
}}
reasons := [base64.encode(r) | some r in x; is_string(r)] if {{
	x := data.{policy_package}.reasons
	not is_string(x)
}}
default approval := false
approval := true if data.{policy_package}.approval_required == true
default tier := 0
tier := data.{policy_package}.tier
result := {{"entry": entry, "reasons": reasons, "approval": approval, "tier": tier}}
"""
# The engine reads the result as an array: the reference's same values, in that order.
_REFERENCE_AS_ARRAY = _REFERENCE.replace(
    'result := {{"entry": entry, "reasons": reasons, "approval": approval, "tier": tier}}',
    "result := [entry, reasons, approval, tier]",
)

# Rego values of every kind a policy rule can produce (None: the rule is not defined).
_VALUES = [
    None,
    "true",
    "false",
    '"true"',
    '"he said \\"hé\\" \\\\ ok ✓"',
    "1",
    "-1",
    "0",
    "3",
    "7",
    "8",
    "1.5",
    "null",
    "[]",
    '["b", "a", "b"]',
    "set()",
    '{"a", "b"}',
    '{1, "a", true}',
    '{"k": "v", "n": 1}',
    "{}",
    "input.x",
    "input.s",
    "input.x > 3",
    "[input.s, input.s]",
]


def _rule(name: str, value: str | None, rng: random.Random) -> str:
    """``name`` defined as ``value``: unconditionally, when the input says so, or twice with
    another value under a condition (conflicting values when both hold)."""
    if value is None:
        return ""
    shape = rng.randrange(4)
    if shape == 0:
        return f"{name} := {value}\n"
    if shape == 1:
        return f"{name} := {value} if input.x > 2\n"
    if shape == 2:
        other = rng.choice([v for v in _VALUES if v is not None])
        return f"{name} := {value} if input.x > 2\n{name} := {other} if input.x > 5\n"
    fallback = rng.choice(["true", "2", '"z"'])
    if value.startswith("input"):  # a default is a constant
        return f"{name} := {value}\n"
    return f'default {name} := {value}\n{name} := {fallback} if input.s == "go"\n'


def _policy(rng: random.Random, index: int) -> Policy:
    entry = rng.choice([*_VALUES, "true", "false", "input.x > 3", "input.x > 3"])
    approval = rng.choice([*_VALUES, None, "true", "input.x > 5"])
    tier = rng.choice([*_VALUES, None, None, "0", "3", "7"])
    rules = (
        _rule("allow", entry, rng)
        + _rule("reasons", rng.choice(_VALUES), rng)
        + _rule("approval_required", approval, rng)
        + _rule("tier", tier, rng)
    )
    if rng.random() < 0.3:  # a partial set instead of a complete rule
        rules = rules.replace("reasons := ", "reasons_base := ")
        rules += 'reasons contains "r" if input.x > 1\nreasons contains input.s if input.x > 4\n'
    return Policy(
        name=f"p{index}",
        entrypoint=f"p{index}.allow",
        modules={"p.rego": f"package p{index}\nimport rego.v1\n{rules}"},
    )


def _inputs(rng: random.Random) -> list[dict[str, Any]]:
    strings = ["go", "", 'q"uote', "hé ✓", "[1, 2]", "\\"]
    return [
        {"x": rng.randrange(-2, 9), "s": rng.choice(strings)},
        {"x": rng.randrange(0, 9)},
        {"s": rng.choice(strings)},
        {},
    ]


def _values(ok: bool, text: str) -> Any:
    """The printed result's four values in the engine's order, else the output as printed."""
    if not ok or text.startswith("(error"):
        return (ok, text)
    result = json.loads(text)["expressions"][0]
    if isinstance(result, dict):
        assert list(result) == ["approval", "entry", "reasons", "tier"], text
        result = [result["entry"], result["reasons"], result["approval"], result["tier"]]
    assert isinstance(result, list) and len(result) == 4, text
    return (ok, result)


def _outcome(policy: Policy, document: dict[str, Any], module: str) -> tuple[Any, ...]:
    """(printed values, Evaluation) under the result rule ``module``, or the error."""
    saved = engine_module._EVAL_MODULE
    engine_module._EVAL_MODULE = module
    try:
        compiled = engine_module._compile(policy, b'{"params":{}}', ())
        engine_module._EVAL_MODULE = _REFERENCE_AS_ARRAY if module == _REFERENCE else module
        evaluation = PolicyEngine().evaluate(policy, input=document, params={}, wasm={})
    except PolicyEngineError as exc:
        return ("error", str(exc))
    finally:
        engine_module._EVAL_MODULE = saved
    engine_module._set_input(compiled.interpreter, {**document, engine_module._WASM_KEY: {}})
    output = rs.rego_bundle_query_entrypoint(
        compiled.interpreter._impl, compiled.bundle._impl, engine_module._RESULT
    )
    try:
        printed = _values(rs.rego_output_ok(output), rs.rego_output_string(output))
    finally:
        rs.rego_free_output(output)
    return (printed, evaluation)


def test_the_reference_is_not_the_module_under_test() -> None:
    assert engine_module._EVAL_MODULE != _REFERENCE
    assert _REFERENCE_AS_ARRAY != _REFERENCE


def test_random_policies_get_the_reference_modules_answers() -> None:
    rng = random.Random(20261202)
    kinds: list[str] = []
    for index in range(80):
        policy = _policy(rng, index)
        for document in _inputs(rng):
            new = _outcome(policy, document, engine_module._EVAL_MODULE)
            old = _outcome(policy, document, _REFERENCE)
            assert new == old, (policy.modules, document)
            kinds.append(new[0] if new[0] == "error" else new[1].decision)
    # the corpus reaches every kind of answer
    assert {"allow", "deny", "approval_required", "error"} <= set(kinds), sorted(kinds)


def test_every_entry_and_reasons_kind_alone() -> None:
    for index, value in enumerate(v for v in _VALUES if v is not None):
        for name in ("allow", "reasons", "approval_required", "tier"):
            rules = f"{name} := {value}\n"
            if name != "allow":
                rules += "allow := false\n"
            policy = Policy(
                name="k",
                entrypoint=f"k{index}.allow",
                modules={"k.rego": f"package k{index}\nimport rego.v1\n{rules}"},
            )
            document = {"x": 4, "s": 'q"é'}
            assert _outcome(policy, document, engine_module._EVAL_MODULE) == _outcome(
                policy, document, _REFERENCE
            ), rules


def _decided(policy: Policy, document: dict[str, Any], wasm: dict[str, Any], params: Any) -> Any:
    """Both modules' ``Evaluation`` of a real policy, each from a fresh engine."""
    answers = []
    for module in (engine_module._EVAL_MODULE, _REFERENCE_AS_ARRAY):
        saved = engine_module._EVAL_MODULE
        engine_module._EVAL_MODULE = module
        try:
            answers.append(
                PolicyEngine().evaluate(policy, input=document, params=params, wasm=wasm)
            )
        finally:
            engine_module._EVAL_MODULE = saved
    return answers


@pytest.mark.parametrize("amount", [1, 10**6, 10**6 + 1, 10**30])
def test_agent_spend_gets_the_reference_modules_answers(amount: int) -> None:
    intent = erc20(amount)
    for params, approved in [
        ({"max_per_tx": {USDC: "1000000"}, "allowed_recipients": [PAYEE]}, False),
        ({"max_per_tx": {USDC: "1000000"}, "allowed_recipients": [ROUTER]}, False),
        ({"approval_above": {USDC: "1000"}, "allowed_recipients": [PAYEE]}, False),
        ({"approval_above": {USDC: "1000"}, "allowed_recipients": [PAYEE]}, True),
        ({"max_per_tx": {USDC: "1"}, "approval_above": {USDC: "1000"}}, True),
    ]:
        new, old = _decided(
            load("agent_spend"), intent.parsed(), wasm_for(intent, approved=approved), params
        )
        assert new == old, params


_EVAL = "package __agentguard_eval__\nimport rego.v1\n"


@pytest.mark.parametrize(
    "module",
    [
        _EVAL + 'entry := "true" if input.x > 2\n',
        "# a comment\npackage   __agentguard_eval__ # another\nimport rego.v1\n"
        "reasons := [] if input.x > 2\n",
        "package wasm\nimport rego.v1\napproved := true if input.x > 2\n",
        "package wasm.extra\nimport rego.v1\nnow := 1\n",
    ],
)
def test_a_policy_cannot_add_rules_to_the_generated_packages(module: str) -> None:
    """A module in the result rule's package made ``entry`` "true" while the entrypoint was
    undefined (allow, for a policy OPA denies); ``data.wasm`` is the gateway's alone."""
    policy = Policy(
        name="inject",
        entrypoint="inject.allow",
        modules={"p.rego": "package inject\nimport rego.v1\n", "x.rego": module},
    )
    with pytest.raises(PolicyEngineError, match="reserved"):
        PolicyEngine().evaluate(policy, input={"x": 4}, params={}, wasm={})


def test_a_package_merely_named_alike_is_not_refused() -> None:
    policy = Policy(
        name="alike",
        entrypoint="wasm_x.allow",
        modules={"p.rego": 'package wasm_x\nimport rego.v1\nallow if input.s == "package wasm"\n'},
    )
    evaluation = PolicyEngine().evaluate(policy, input={"s": "package wasm"}, params={}, wasm={})
    assert evaluation.decision == "allow"


def test_a_module_named_like_a_generated_one_is_refused_not_replaced() -> None:
    """The generated modules used to replace a policy module of the same name, unseen: a
    module holding a deny rule vanished."""
    policy = Policy(
        name="named",
        entrypoint="named.allow",
        modules={
            "p.rego": "package named\nimport rego.v1\nallow if not deny\n",
            "__agentguard_eval__.rego": "package named\nimport rego.v1\ndeny := true\n",
        },
    )
    with pytest.raises(PolicyEngineError, match="reserved"):
        PolicyEngine().evaluate(policy, input={}, params={}, wasm={})


# Values that reach each branch of the else chains through rego-cpp's odd corners: builtin
# errors (rego-cpp yields a value or undefined, never a query error), error-valued entries,
# values that compare oddly with booleans, sets and objects holding booleans.
_ODD_VALUES = [
    "1/0",
    "1/0 == 1",
    "count(5) > 0",
    'to_number("x")',
    'json.unmarshal("{")',
    "input.x / 0",
    "{1/0}",
    '{"a": 1/0}',
    "1.0",
    "0.0",
    "[true]",
    "{true}",
    "{false}",
    '{"a": true}',
    'sum(["a"])',
    'object.get(input, "b", false)',
    "input.b",
    "input.l[0]",
    "true == true",
    "input.s",
    '{"r", input.s}',
]


def _odd_rule(name: str, rng: random.Random) -> str:
    """``name`` through each kind of rule body: else chains, partial sets, defaults, print."""
    v, w = rng.choice(_ODD_VALUES), rng.choice([*_ODD_VALUES, "true", "false", '"s"'])
    return rng.choice(
        [
            "",
            f"{name} := {v}\n",
            f"{name} := {v} if {{ input.x > 2 }} else := {w}\n",
            f"{name} := {v} if {{ input.x > 2 }} else := {w} if {{ input.x < 1 }}\n",
            f"{name} contains {v} if input.x > 1\n{name} contains {w} if input.x > 3\n",
            f"default {name} := {w}\n{name} := {v} if input.x > 3\n",
            f'{name} if {{ print("p", input.x); {v} }}\n',
            f"{name} := {v} if input.x > 2\n{name} := {w} if input.x > 5\n",
        ]
    )


def test_odd_values_and_rule_shapes_get_the_reference_modules_answers() -> None:
    rng = random.Random(6)
    kinds: set[str] = set()
    for index in range(40):
        rules = "".join(
            _odd_rule(name, rng) for name in ("allow", "reasons", "approval_required", "tier")
        )
        policy = Policy(
            name=f"o{index}",
            entrypoint=f"o{index}.allow",
            modules={"o.rego": f"package o{index}\nimport rego.v1\n{rules}"},
        )
        for document in [
            {"x": rng.randrange(-1, 8), "b": rng.choice([True, False, 1, "true"]), "l": [False]},
            {"x": 3, "b": True, "l": [True], "s": rng.choice(["", 'q"é', "true", "[1]"])},
            {},
        ]:
            new = _outcome(policy, document, engine_module._EVAL_MODULE)
            assert new == _outcome(policy, document, _REFERENCE), (rules, document)
            kinds.add(new[0] if new[0] == "error" else new[1].decision)
    assert kinds == {"allow", "deny", "approval_required", "error"}, kinds


@pytest.mark.parametrize(
    ("rules", "entrypoint"),
    [
        ('allow[k] := v if { some k, v in {"k": true, "j": 1} }', "k.allow.k"),
        ('allow[k] := v if { some k, v in {"k": true, "j": 1} }', "k.allow.j"),
        ('allow contains "k"', "k.allow.k"),
        ("allow := x if { some x in [true, false] }", "k.allow"),
        ("allow := input.f[_]", "k.allow"),
        ('reasons := x if { some x in ["a", ["b"]] }\nallow := false', "k.allow"),
        ("allow := data.__agentguard_eval__.reasons == []\nreasons := input.s", "k.allow"),
        ("allow := true\nreasons := [data.__agentguard_eval__.entry]", "k.allow"),
        ("allow := data.__agentguard_eval__.tier == 0\ntier := 0", "k.allow"),
        ('allow := data.__agentguard_eval__.entry == "undefined"', "k.allow"),
        ("allow := x if { x := data.k.reasons }\nreasons := true", "k.allow"),
        ("allow(x) := true", "k.allow"),
    ],
)
def test_hostile_entrypoints_get_the_reference_modules_answers(rules: str, entrypoint: str) -> None:
    """Entrypoints inside partial objects and sets, multi-valued (conflicting) rules, rules
    that read the result rule's own parts, a function: same answers, same errors."""
    policy = Policy(
        name="k",
        entrypoint=entrypoint,
        modules={"k.rego": f"package k\nimport rego.v1\n{rules}\n"},
    )
    for document in ({"x": 4, "s": "go", "f": [True, False]}, {"s": ["a", 1]}):
        assert _outcome(policy, document, engine_module._EVAL_MODULE) == _outcome(
            policy, document, _REFERENCE
        )
