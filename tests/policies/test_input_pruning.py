"""Pushing only the input keys a policy can read (``_reads``) changes no evaluation.

The analysis is held to its rule (a literal key path, or "everything") on snippets of each
kind of reference, and the engine that prunes to an engine that pushes the whole document
(``prune=False``) on every bundled policy and on hostile hand-written ones, over seeded
random and hostile intents and ``data.wasm`` documents (keys missing, extra, mistyped, values
the engine refuses): the same ``Evaluation`` or the same error, every time.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest

from agentguard import policies
from agentguard._intent import TransactionIntent
from agentguard.policies import Policy, load
from agentguard.policies._engine import PolicyEngine, PolicyEngineError
from agentguard.policies._reads import Reads, reads
from agentguard.policies._testkit import ETH, PAYEE, ROUTER, USDC, erc20, eth, swap, wasm_for

_HEAD = "package t\nimport rego.v1\n"
BUNDLED = sorted(
    p.name for p in Path(policies.__file__).parent.iterdir() if (p / "policy.rego").is_file()
)


def _reads(source: str) -> Reads | None:
    return reads([_HEAD + source])


# Each reads more than literal key paths of input / data.wasm: the analysis gives up.
EVERYTHING = [
    "allow if count(input) > 0",
    "allow if input",
    "allow if data",
    "allow if { some k; input[k] == 1 }",
    "allow if { some k in input }",
    "allow if { some k, v in input; v == 1 }",
    "allow if every v in input { v }",
    "xs := [v | some v in input]",
    "xs := {k | input[k]}",
    "allow if walk(input, [p, v])",
    'allow if object.get(input, k, "") == ""',
    'allow if object.get(input, ["a", "b"], "") == ""',
    'allow if object.get(input, "a\\u002db", "") == ""',
    "reasons contains json.marshal(input)",
    "allow if { print(input) }",
    "import input\nallow if input.x",
    "import input as i\nallow if i.x",
    "f(x) := x.to\nallow if f(input) == 1",
    "allow if input.__agentguard_wasm__.now > 0",
    'allow if input["__agentguard_wasm__"]',
    "allow if data[x]",
    'allow if data["wasm"][k]',
    "allow if data.wasm[k]",
    "allow if data.wasm",
    "allow if count(data.wasm) > 0",
    "allow if object.keys(data.wasm)",
    "import data\nallow if data.wasm.now",
    "import data.wasm\nallow if wasm.now",
    "import data.wasm as w\nallow if w.now",
    "allow if input .x",
    "allow if input. x",
    "allow if input [0]",
    "allow if input[1]",
    'allow if input["a\\u002db"]',
    'allow if input["a\\"b"]',
    "allow if input[`a\\b`]",
    'object := {"get": 1}',
    "allow if { object := 1; object > 0 }",
    'object.get(x, k, d) := 1\nallow if object.get(input, "to", 0)',
    "import data.x.object\nallow if input.to",
    "import data.x as object\nallow if input.to",
    "package object\nallow if input.to",
    "default object.get(x, k, d) := 1\nallow if input.to",
    "allow if input.to\nobject.get(x, k, d) := 1",
    "allow if input.to ==\nobject.get(x, k, d) := 1",
    'allow if { x := object; x.get(input, "to", 1) }',
    "allow if input.to == 1 ∧ true",
    "# a comment ended by a lone CR\rallow if input[k]",
    "allow if input.to\x0ballow if input[k]",
    'allow if input.to == $"{input}"',
    'allow if input.to == "unterminated',
    "allow if input.to == `unterminated",
]
# Packages the analysis cannot place (wasm's rules read data.wasm by bare names).
PACKAGES = ["package wasm\nnow2 := now\n", "package data.wasm\n", 'package ["wasm"]\n', "package\n"]


@pytest.mark.parametrize("source", EVERYTHING)
def test_a_reference_it_cannot_bound_reads_everything(source: str) -> None:
    assert _reads(source) is None
    assert _reads("allow if input.to == data.wasm.now\n" + source) is None


@pytest.mark.parametrize("source", PACKAGES)
def test_a_package_it_cannot_place_reads_everything(source: str) -> None:
    assert reads([_HEAD + "allow if input.to\n", source]) is None


LITERAL = [
    ('allow if input.to == "x"', {"to"}, set()),
    ("allow if input.to.x[y]", {"to"}, set()),
    ('allow if input["a-b"] == 1', {"a-b"}, set()),
    ('allow if input[ "a b" ] == 1', {"a b"}, set()),
    ("allow if input[`raw key`] == 1", {"raw key"}, set()),
    ('allow if object.get(input, "k", "") == ""', {"k"}, set()),
    ('allow if object.get(input, `k`, "") == ""', {"k"}, set()),
    ('allow if object.get(input.f, "k", "") == ""', {"f"}, set()),
    ("import input.function as f\nallow if f.name", {"function"}, set()),
    ('import input["to"]\nallow if to', {"to"}, set()),
    ('p := object.get(input, "to", 0)', {"to"}, set()),
    ("allow if data.wasm.now > 0", set(), {"now"}),
    ('allow if data["wasm"]["x402"]', set(), {"x402"}),
    ("allow if data.wasm[`spend`].kind", set(), {"spend"}),
    ("import data.wasm.history\nallow if history", set(), {"history"}),
    ("allow if data.params.x[k] == data.other[k]", set(), set()),
    ("allow if input.data == data.wasm.now", {"data"}, {"now"}),
    ("allow if foo.input[k] == bar.data[j]", set(), set()),
    ("allow if object.remove(data.params, [input.to])", {"to"}, set()),
    (
        '# input[k] walk(input) data[x]\nallow if input.to == "input[k] data[x] \\" input"\n'
        'x := `input[y] " data`\ny := 1 # input',
        {"to"},
        set(),
    ),
    ("allow if input.x\r\nallow if input.y\tor := 1", {"x", "y"}, set()),
    ("inputs := 1\nmy_data := inputs\nallow if input_x", set(), set()),
]


@pytest.mark.parametrize(("source", "inputs", "wasm"), LITERAL)
def test_literal_key_paths_name_their_keys(source: str, inputs: set[str], wasm: set[str]) -> None:
    assert _reads(source) == Reads(frozenset(inputs), frozenset(wasm))


def test_the_bundled_policies_read_a_few_keys() -> None:
    """Not vacuous: each bundled policy is pruned (the differential below then tests it)."""
    found = {name: reads(load(name).modules.values()) for name in BUNDLED}
    assert found["agent_spend"] == Reads(
        frozenset({"chain_id", "data", "decoded_function_signature", "to", "value"}),
        frozenset({"approved", "history", "now", "spend"}),
    )
    assert found["time_window"] == Reads(frozenset(), frozenset({"now"}))
    assert len(BUNDLED) == 9 and all(r is not None for r in found.values())
    engine = PolicyEngine()
    intent = erc20(5)
    engine.evaluate(load("tx_cap"), input=intent.parsed(), params=CAP, wasm=wasm_for(intent))
    assert [c.reads for c in engine._compiled.values()] == [found["tx_cap"]]
    assert all(c.reads is None for c in _unpruned(intent))


CAP = {"max_per_tx": {USDC: "1000"}}


def _unpruned(intent: TransactionIntent) -> list[Any]:
    engine = PolicyEngine(prune=False)
    engine.evaluate(load("tx_cap"), input=intent.parsed(), params=CAP, wasm=wasm_for(intent))
    return list(engine._compiled.values())


# Hand-written policies that read input and data.wasm in every way, literal or not; each
# echoes what it saw in its reasons, so a value pushed differently shows.
HOSTILE = [
    'allow if input.to == input["to"]\nreasons contains json.marshal([input.to, input.value])',
    "reasons contains json.marshal(input)\nallow if count(input) > 3",
    'reasons contains k if { some k, v in input; is_string(v) }\nallow if input.value == "0"',
    "reasons contains json.marshal(data.wasm)\nallow if data.wasm.now > 0",
    'reasons contains json.marshal(object.get(input, "function", "none"))\n'
    'allow if object.get(input, "decoded_function_signature", "") != ""',
    "import input.function as f\nreasons contains json.marshal(f)\nallow if f.name",
    "reasons contains json.marshal(data.wasm.x402)\nallow if not data.wasm.x402",
    'reasons contains json.marshal(data["wasm"]["history"])\nallow if data.wasm.approved',
    "reasons contains json.marshal([k | some k in object.keys(data.wasm)])\nallow := true",
    "reasons contains json.marshal(input.__agentguard_wasm__)\nallow if input.to",
    "f(x) := x.decoded_function_arguments\nreasons contains json.marshal(f(input))\n"
    "allow if input.to",
    "reasons contains json.marshal([input.extra, input.missing, data.wasm.zzz])\n"
    "allow if data.wasm.zzz",
    "# input[k] data.wasm[k]\nreasons contains json.marshal(input.chain_id)\n"
    'x := "input[k]"\ny := `data.wasm[k]`\nallow if input.chain_id == "8453"',
    'reasons contains json.marshal(walk(input.function, [p, v]))\nallow if input["from"]',
    "reasons contains json.marshal([data.wasm.spend.amount, data.wasm.now])\n"
    "allow if to_number(data.wasm.spend.amount) < 1000",
]
HOSTILE_POLICIES = [
    Policy(
        name=f"h{i}",
        entrypoint=f"h{i}.allow",
        modules={"h.rego": f"package h{i}\nimport rego.v1\n{source}\n"},
        params_schema={},
    )
    for i, source in enumerate(HOSTILE)
]


def _bundled_params(rng: random.Random, policy: Policy) -> dict[str, Any]:
    """A random subset of the params the policy's schema names, in a random variant."""
    cap = rng.choice(["1", "1000", "1000000000000"])
    pool: dict[str, Any] = {
        "max_per_tx": {USDC: cap, ETH: rng.choice(["0", cap])},
        "window_caps": [{"asset": USDC, "window_seconds": 86400, "max_amount": cap}],
        "rate_limits": [{"window_seconds": 3600, "max_count": rng.choice([1, 5, 10**6])}],
        "allowed_recipients": rng.choice([[PAYEE], [ROUTER], [PAYEE, ROUTER]]),
        "denied_recipients": rng.choice([[ROUTER], ["0x000000000000000000000000000000000000dEaD"]]),
        "allowed_contracts": rng.choice([[USDC], [ROUTER], [USDC, PAYEE, ROUTER]]),
        "denied_contracts": ["0x000000000000000000000000000000000000bEEF"],
        "allowed_functions": rng.choice([["transfer(address,uint256)"], ["deposit()"], []]),
        "allow_plain_transfers": rng.choice([True, False]),
        "allowed_assets": rng.choice([[USDC], [ETH], [USDC, ETH]]),
        "allowed_chains": rng.choice([["8453"], ["1"]]),
        "time_windows": [{"days": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:00"}],
        "approval_above": {USDC: cap, ETH: cap},
    }
    names = [k for k in policy.params_schema.get("properties", {}) if k in pool]
    return {k: pool[k] for k in rng.sample(names, rng.randint(0, len(names)))}


def _hostile_value(rng: random.Random) -> Any:
    """A value the engine refuses or that rego-cpp takes in an unusual shape."""
    return rng.choice(
        [
            1 << 70,
            -(1 << 64),
            "[" * 200,
            "{" + '"a":1,' * 5000 + '"b":2}',
            "\ud800",
            {1: "non-string key"},
            {"ok": [1, 2.5, None, True]},
            {"set"},
            b"bytes",
            ("a", "tuple"),
            "plain",
            "x" * 5000,
        ]
    )


def _intent(rng: random.Random) -> TransactionIntent:
    amount = rng.choice([0, 1, 5, 999, 10**9, 10**13])
    return rng.choice(
        [
            lambda: erc20(amount, recipient=rng.choice([PAYEE, ROUTER])),
            lambda: erc20(amount, token=ROUTER),
            lambda: eth(amount, to=rng.choice([PAYEE, ROUTER]), chain_id=rng.choice([8453, 1])),
            lambda: swap(),
            lambda: swap(to=USDC),
        ]
    )()


def _document(rng: random.Random, intent: TransactionIntent) -> dict[str, Any]:
    """The parsed intent, now and then with keys dropped, added or replaced by hostile values."""
    doc = copy.deepcopy(intent.parsed())
    for _ in range(rng.choice([0, 0, 1, 2])):
        what, key = rng.random(), rng.choice([*doc, "extra", "missing", "__agentguard_wasm__"])
        if what < 0.3:
            doc.pop(key, None)
        else:
            doc[key] = _hostile_value(rng) if what < 0.7 else rng.choice(["0", "8453", {}, []])
    return doc


def _wasm(rng: random.Random, intent: TransactionIntent) -> dict[str, Any]:
    """``data.wasm`` as the gateway sends it, now and then with keys missing, extra or odd."""
    wasm: dict[str, Any] = wasm_for(
        intent,
        now=rng.choice([1763985600, 1763985600 + 12 * 3600, 1]),
        approved=rng.choice([True, False]),
        history=rng.choice(
            [None, {}, {"3600": {"count": 7, "spent": {}, "projected": {USDC: "10000"}}}]
        ),
    )
    for _ in range(rng.choice([0, 0, 1, 2, 3])):
        what = rng.random()
        key = rng.choice([*wasm, "x402", "zzz"])
        if what < 0.3:
            wasm.pop(key, None)
        elif what < 0.6:
            wasm[key] = _hostile_value(rng)
        else:
            wasm[key] = rng.choice([{"scheme": "exact"}, "x", 0, None, [1, {"a": "b"}]])
    return wasm


def _outcome(engine: PolicyEngine, policy: Policy, **kwargs: Any) -> Any:
    try:
        return engine.evaluate(policy, **kwargs)
    except Exception as exc:  # the same refusal counts as the same outcome
        return (type(exc).__name__, str(exc))


def test_pruning_changes_no_evaluation() -> None:
    rng = random.Random(20261203)
    pruned, whole = PolicyEngine(), PolicyEngine(prune=False)
    policies = [load(name) for name in BUNDLED] + HOSTILE_POLICIES
    kinds: set[str] = set()
    for policy in policies:
        variants = [_bundled_params(rng, policy) for _ in range(3)]
        for _ in range(40):
            intent = _intent(rng)
            kwargs = {
                "input": _document(rng, intent),
                "params": rng.choice(variants),
                "wasm": _wasm(rng, intent),
            }
            got = _outcome(pruned, policy, **copy.deepcopy(kwargs))
            assert got == _outcome(whole, policy, **kwargs), (policy.name, kwargs)
            kinds.add(got.decision if hasattr(got, "decision") else got[0])
    assert {"allow", "deny", "PolicyEngineError"} <= kinds, kinds


def test_hostile_policies_compile_and_some_are_pruned() -> None:
    """The hostile set is not vacuous: each runs, some pruned and some read everything."""
    intent = erc20(5)
    engine = PolicyEngine()
    for policy in HOSTILE_POLICIES:
        assert engine.evaluate(
            policy, input=intent.parsed(), params={}, wasm=wasm_for(intent)
        ).decision in ("allow", "deny")
    analysed = [reads(p.modules.values()) for p in HOSTILE_POLICIES]
    assert 4 <= sum(r is None for r in analysed) <= len(analysed) - 4


def test_a_policy_reading_an_absent_wasm_key_sees_it_undefined() -> None:
    """x402 is shimmed for every policy; pruned away or absent, ``data.wasm.x402`` is undefined."""
    policy = dataclasses.replace(HOSTILE_POLICIES[6])
    intent = erc20(5)
    for engine in (PolicyEngine(), PolicyEngine(prune=False)):
        result = engine.evaluate(policy, input=intent.parsed(), params={}, wasm=wasm_for(intent))
        assert result.decision == "allow" and result.reasons == ()


# A path with a string segment names ``object`` where no ``object`` token shows:
# ``object.get`` in package a.t then calls the policy's ``data.a.t.object.get``, which may
# read any key (here ``secret``), not the builtin that reads only its literal key.
_SHADOWS = [
    ('package a.t["object"]\nimport rego.v1\n', ""),
    ("package a.t [ `object` ]\nimport rego.v1\n", ""),
    ('package lib["object"]\nimport rego.v1\n', 'import data.lib["object"]\n'),
    ('package lib["object"]\nimport rego.v1\n', 'import data.lib[ "object" ] as object\n'),
    ('package a\nimport rego.v1\nt["object"].', ""),  # a rule head's path
    ('package a\nimport rego.v1\nt[`object`]["get"]', ""),
    ('package a\nimport rego.v1\nt[ "object" ].', ""),
]


@pytest.mark.parametrize(("package", "imports"), _SHADOWS)
def test_object_get_named_through_a_string_segment_reads_everything(
    package: str, imports: str
) -> None:
    head = "get" if package.endswith(("\n", ".")) else ""
    policy = Policy(
        name="shadow",
        entrypoint="a.t.allow",
        modules={
            "a.rego": "package a.t\nimport rego.v1\n"
            f'{imports}allow if object.get(input, "to", 0) == "s"\n',
            "b.rego": f"{package}{head}(o, k, d) := o.secret\n",
        },
    )
    assert reads(policy.modules.values()) is None
    document = {"input": {"to": "x", "secret": "s"}, "params": {}, "wasm": {}}
    if not package.endswith("\n"):  # a function head's path through brackets reads as a call
        for engine in (PolicyEngine(), PolicyEngine(prune=False)):
            with pytest.raises(PolicyEngineError, match="bracketed reference"):
                engine.evaluate(policy, **copy.deepcopy(document))
        return
    assert PolicyEngine().evaluate(policy, **copy.deepcopy(document)).decision == "allow"
    assert PolicyEngine(prune=False).evaluate(policy, **document).decision == "allow"


@pytest.mark.parametrize(
    "statement",
    [
        'package t["x"]',
        "package t[`x`]",
        'import data.lib["obj\\u0065ct"]',
        "import data.x[0]",
        'package t.x\nimport rego.v1\nimport data.y["object"] as w',
        "import data.y[`x`].z as",
    ],
)
def test_a_package_or_import_with_more_than_names_reads_everything(statement: str) -> None:
    assert reads([f"{statement}\nallow if input.to\n"]) is None


def test_an_entrypoint_in_package_wasm_reads_everything() -> None:
    """The engine's own module reads ``data.<entrypoint>`` (and the package's reasons): with
    the entrypoint in ``wasm`` that is a wasm key no policy module names."""
    policy = Policy(
        name="w", entrypoint="wasm.approved", modules={"t.rego": _HEAD + "allow if input.to\n"}
    )
    kwargs = {"input": {"to": "x"}, "params": {}, "wasm": {"approved": True, "reasons": ["r"]}}
    for engine in (PolicyEngine(), PolicyEngine(prune=False)):
        got = engine.evaluate(policy, **copy.deepcopy(kwargs))
        assert (got.decision, got.reasons) == ("allow", ("r",))


# Fragments of random policies (package a.t): references the analysis reads, names it must
# not take for what they look like, and other modules that define what those names call.
_REFS = [
    *("input.to", 'input["to"]', "input[`secret`]", "input.secret", 'input[ "secret" ]'),
    *('object.get(input, "to", 0)', 'object.get(input, "secret", 0)', "object.get(input,`to`,0)"),
    *("data.wasm.now", "data.wasm.zz", 'data["wasm"].now', 'data.wasm["zz"]', "x.input"),
    *("data.a.t.h", 'data.a.t["h"]', "h", "f(input.to)", "data.lib.get(input.to, 1, 2)"),
    *('object.get(input.to, "secret", 0)', '"input.secret"', "`data.wasm.zz`", "data.a.u.g"),
    *('object.get({"secret": 1}, "secret", 0)', "input", "data.wasm", "object.get(input, k, 0)"),
]
_IMPORTS = ["", "import input.secret\n", "import data.wasm.zz\n", 'import input["to"]\n']
_IMPORTS += ["import data.a.u.g\n", "import data.lib.get as object_get\n", "import data.lib\n"]
_OTHERS = [
    "package a.u\nimport rego.v1\ng := input.secret\n",
    'package a.u\nimport rego.v1\ng := object.get(input, "secret", 1)\n',
    "package a.u\nimport rego.v1\ng := data.wasm.zz\n",
    'package a.u\nimport rego.v1\ng := "x"\ng2 := data.a.t.h\n',
    'package a\nimport rego.v1\nt["object"].get(o, k, d) := o.secret\n',
    "package a\nimport rego.v1\nt.object.get(o, k, d) := o.secret\n",
    'package a.t["object"]\nimport rego.v1\nget(o, k, d) := o.secret\n',
]  # not object := {"get": 1}: object.get(...) then aborts the process in rego-cpp 1.5.2


def _random_policy(rng: random.Random) -> Policy:
    def expr() -> str:
        r, s = rng.choice(_REFS), rng.choice(_REFS)
        shapes = [f"x := {r}", f'json.marshal({r}) != "q"', f"{r} == {s}", f"not {r}"]
        shapes += [f"some v in [{r}]", f"every v in [{r}] {{ v }}", f"is_string({r})"]
        return rng.choice(shapes)

    space = rng.choice([" ", "\t", "\n\t", " # input.secret\n ", "\r\n "])
    source = "package a.t\nimport rego.v1\n" + rng.choice(_IMPORTS) + rng.choice(_IMPORTS)
    key = rng.choice(['"to"', '"secret"', "input.k"])
    source += f"k := {key}\nf(a) := a\n"
    source += f"h := {rng.choice(_REFS)}\n"
    source += f"reasons contains json.marshal([{rng.choice(_REFS)}, {rng.choice(_REFS)}])\n"
    source += f"allow if {{{space}{expr()}; {expr()}{space}}}\n"
    source += rng.choice(["", f"allow if {rng.choice(_REFS)} else := false\n"])
    return Policy(
        name="r",
        entrypoint="a.t.allow",
        modules={
            "t.rego": source,
            "lib.rego": "package lib\nimport rego.v1\nget(a, b, c) := a\n",
            "u.rego": rng.choice(_OTHERS),
        },
    )


def test_random_policies_evaluate_the_same_pruned() -> None:
    """Seeded random policies over the fragments above, some pruned, some reading everything,
    some not compiling: pruned and whole engines give the same Evaluation or the same error."""
    rng = random.Random(1203)
    seen: set[tuple[bool, str]] = set()
    for _ in range(150):
        policy = _random_policy(rng)
        values = ["x", "s", 1, True]
        kwargs = {
            "input": {"to": rng.choice(values), "secret": rng.choice(values), "k": "to"},
            "params": {},
            "wasm": {"now": 5, "zz": rng.choice(values)},
        }
        got = _outcome(PolicyEngine(), policy, **copy.deepcopy(kwargs))
        assert got == _outcome(PolicyEngine(prune=False), policy, **kwargs), policy.modules
        pruned = reads(policy.modules.values()) is not None
        seen.add((pruned, got.decision if hasattr(got, "decision") else got[0]))
    assert {(True, "allow"), (True, "deny"), (False, "allow"), (False, "deny")} <= seen, seen
