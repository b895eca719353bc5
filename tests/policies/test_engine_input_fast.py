"""The engine's input builder (``_engine._set_input``) against the walker it replaced.

The reference below is the previous walker, verbatim: every document either becomes the very
same rego-cpp input tree (compared as the JSON rego-cpp prints for it) or is refused with the
same error, on seeded random documents and on hostile ones (big integers, non-string keys,
JSON-looking strings, unsupported types, mappings that are not dicts). The decided-output
cache is pinned too: an engine that remembers outputs answers what a fresh one answers.
"""

from __future__ import annotations

import ctypes
import functools
import random
import types
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from regopy.rego_shared import rego_node_json

from agentguard.policies import _engine, load
from agentguard.policies._engine import PolicyEngine, PolicyEngineError
from agentguard.policies._reads import Reads
from agentguard.policies._testkit import USDC, erc20, wasm_for

_lib = ctypes.CDLL(_engine._lib._name)  # its own prototypes: regopy's stay untouched
_lib.regoNewInput.restype = ctypes.c_void_p
_lib.regoFreeInput.argtypes = [ctypes.c_void_p]
_lib.regoInputNode.restype = ctypes.c_void_p
_lib.regoInputNode.argtypes = [ctypes.c_void_p]
_lib.regoInputSize.restype = ctypes.c_uint32
_lib.regoInputSize.argtypes = [ctypes.c_void_p]
_INT64 = 1 << 63


def _reference(handle: int, val: Any) -> int:
    """The walker ``_engine`` used before (one call per node), kept as the reference."""
    lib = _engine._lib
    string, integer, boolean = lib.regoInputString, lib.regoInputInt, lib.regoInputBoolean
    item, obj, array = lib.regoInputObjectItem, lib.regoInputObject, lib.regoInputArray

    def add(handle: int, val: Any) -> int:
        kind = type(val)
        if kind is str:
            if "[" in val or "{" in val or len(val) > _engine._MAX_JSON_VALUES:
                _engine._check_json_text(val)
            return int(string(handle, val.encode()))
        if kind is dict or isinstance(val, Mapping):
            failed = 0
            for k, v in val.items():
                if type(k) is not str:
                    raise PolicyEngineError("policy documents need string keys")
                failed |= string(handle, k.encode()) | add(handle, v) | item(handle)
            return failed | int(obj(handle, len(val)))
        if kind is bool:
            return int(boolean(handle, val))
        if kind is int:
            if not -_INT64 <= val < _INT64:
                raise PolicyEngineError(
                    f"input number {val} does not fit in 64 bits; pass amounts as decimal strings"
                )
            return int(integer(handle, val))
        if kind is list or kind is tuple:
            failed = 0
            for v in val:
                failed |= add(handle, v)
            return failed | int(array(handle, len(val)))
        if val is None:
            return int(lib.regoInputNull(handle))
        if kind is float:
            return int(lib.regoInputFloat(handle, val))
        raise PolicyEngineError(f"cannot pass a {kind.__name__} to a policy")

    return add(handle, val)


def _built(push: Callable[[int, Any], int], document: Any) -> tuple[Any, ...]:
    """What ``push`` makes of ``document``: the printed tree and the stack depth, or the
    error it raised (type and message)."""
    handle = _lib.regoNewInput()
    try:
        try:
            failed = push(handle, document)
        except (PolicyEngineError, UnicodeEncodeError) as exc:
            return ("refused", type(exc).__name__, str(exc))
        size = _lib.regoInputSize(handle)
        node = _lib.regoInputNode(handle)
        return ("built", bool(failed), size, rego_node_json(node) if node else None)
    finally:
        _lib.regoFreeInput(handle)


_STRINGS = [
    "",
    "a",
    "0x" + "ab" * 20,
    "héllo ✓",
    'quo"te\\back',
    "[1,2]",
    "{}",
    '{"a":[1,{"b":2}]}',
    "[" * 40 + "]" * 40,
    '{"a":' * 40 + "1" + "}" * 40,
    "1," * 5000 + "1",
    "[" + "1," * 5000 + "1]",
    '["' + "," * 5000 + '"]',
    "x" * 5000,
    "\ud800",
]


def _value(rng: random.Random, depth: int) -> Any:
    pick = rng.randrange(14 if depth < 4 else 8)
    if pick < 3:
        return rng.choice(_STRINGS) if rng.random() < 0.3 else f"s{rng.randrange(1000)}"
    if pick == 3:
        return rng.choice([0, 1, -1, _INT64 - 1, -_INT64, _INT64, -_INT64 - 1, 1 << 200])
    if pick == 4:
        return rng.choice([True, False, None])
    if pick == 5:
        return rng.choice([0.5, -2.25, 1e300])
    if pick == 6:
        return rng.choice([b"bytes", {1, 2}, object(), 3j]) if rng.random() < 0.05 else "t"
    if pick == 7:
        return rng.randrange(-1000, 1000)
    if pick < 11:
        obj: dict[Any, Any] = {f"k{i}": _value(rng, depth + 1) for i in range(rng.randrange(0, 5))}
        if rng.random() < 0.05:
            obj[rng.choice([1, None, ("t",), b"k"])] = "v"
        if rng.random() < 0.1:
            return types.MappingProxyType(obj)
        return obj
    seq = [_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    return tuple(seq) if rng.random() < 0.3 else seq


def test_random_documents_build_the_same_tree_or_the_same_refusal() -> None:
    rng = random.Random(20261201)
    outcomes = set()
    for _ in range(3000):
        document = {f"f{i}": _value(rng, 0) for i in range(rng.randrange(1, 6))}
        old, new = _built(_reference, document), _built(_engine._node, document)
        assert new == old, document
        outcomes.add(new[0] if new[0] == "built" else new[2][:30])
    # the seeds reach every kind of outcome, not just the easy one
    assert "built" in outcomes
    assert len(outcomes) >= 5, outcomes


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"a": {}},
        {"a": []},
        {"a": ()},
        [],
        "top-level string",
        5,
        None,
        {"a": {"b": {"c": ["[1]", "{}", 1, None, True, 0.25]}}},
        {"__agentguard_wasm__": {"now": 1, "history": {"60": {"count": 0, "spent": {}}}}},
        types.MappingProxyType({"a": "b"}),
        {"a": 1 << 64},
        {"a": [-(1 << 63) - 1]},
        {1: "non-string key"},
        {"a": {"b": b"bytes"}},
        {"a": {1, 2}},
        {"deep": "[" * 40 + "]" * 40},
        {"long": ["1," * 5000 + "1"]},
        {"lone": "\ud800"},
        {"key\ud800": "v"},
    ],
)
def test_hostile_documents_build_the_same_tree_or_the_same_refusal(document: Any) -> None:
    assert _built(_engine._node, document) == _built(_reference, document)


def test_a_real_operator_input_builds_the_same_tree() -> None:
    intent = erc20(7)
    document = {**intent.parsed(), _engine._WASM_KEY: wasm_for(intent)}
    built = _built(_engine._node, document)
    assert built[0] == "built" and not built[1]
    assert built == _built(_reference, document)
    assert USDC.lower()[2:] in built[3].lower()


def test_remembered_outputs_answer_as_a_fresh_engine() -> None:
    """Allow, deny with reasons, again and again through one engine (the cache hit), each
    equal to a fresh engine's answer (no cache); the cache stays bounded."""
    policy = load("tx_cap")
    params = {"max_per_tx": {USDC.lower(): "1000"}}
    warm = PolicyEngine()
    for round_ in range(3):
        for amount in (1, 999, 1000, 1001, 5000, 1):
            intent = erc20(amount)
            document, wasm = intent.parsed(), wasm_for(intent)
            remembered = warm.evaluate(policy, input=document, params=params, wasm=wasm)
            fresh = PolicyEngine().evaluate(policy, input=document, params=params, wasm=wasm)
            assert remembered == fresh, (round_, amount)
    decisions = {e.decision for e in warm._decided.values()}
    assert decisions == {"allow", "deny"}
    assert 0 < len(warm._decided) <= _engine._MAX_DECIDED


def test_the_decided_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_engine, "_MAX_DECIDED", 3)
    policy = load("tx_cap")
    params = {"max_per_tx": {USDC.lower(): "1"}}
    engine = PolicyEngine()
    for amount in range(2, 12):  # each denial names its amount: a distinct output each
        intent = erc20(amount)
        result = engine.evaluate(
            policy, input=intent.parsed(), params=params, wasm=wasm_for(intent)
        )
        assert result.decision == "deny"
        assert len(engine._decided) <= 3


def test_rego_cpp_giving_no_output_is_a_policy_engine_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """regopy raises its own untyped ``RegoError`` when rego-cpp returns no output; the
    operator must see a ``PolicyEngineError`` (a typed refusal), never regopy's exception."""
    import regopy

    def no_output(*_: object) -> int:
        raise regopy.RegoError("no output")

    policy = load("tx_cap")
    params = {"max_per_tx": {USDC.lower(): "1"}}
    intent = erc20(5)
    engine = PolicyEngine()
    monkeypatch.setattr(_engine._rs, "rego_bundle_query_entrypoint", no_output)
    with pytest.raises(PolicyEngineError, match="failed to evaluate"):
        engine.evaluate(policy, input=intent.parsed(), params=params, wasm=wasm_for(intent))


def _pruned(handle: int, document: Any, only: Reads) -> int:
    return _engine._pruned(handle, document, only.input, only)


def test_a_pruned_document_builds_the_kept_keys_tree_or_the_same_refusal() -> None:
    """``_pruned`` (the input keys a policy reads, ``_reads``) against ``_node``: the very tree
    ``_node`` builds of the document holding only the kept keys, and a refusal exactly when
    the whole document is refused, with the same error (the keys left out are still checked,
    in order)."""
    rng = random.Random(20261203)
    outcomes = set()
    for _ in range(2000):
        document = {f"f{i}": _value(rng, 0) for i in range(rng.randrange(0, 6))}
        wasm = {f"w{i}": _value(rng, 1) for i in range(rng.randrange(0, 4))}
        document[_engine._WASM_KEY] = wasm
        reads = Reads(
            frozenset(rng.sample([*document, "f9"], rng.randrange(0, len(document) + 2))),
            frozenset(rng.sample([*wasm, "w9"], rng.randrange(0, len(wasm) + 2))),
        )
        kept = {k: v for k, v in document.items() if k in reads.input}
        kept[_engine._WASM_KEY] = {k: v for k, v in wasm.items() if k in reads.wasm}
        whole = _built(_engine._node, document)
        new = _built(functools.partial(_pruned, only=reads), document)
        assert new == (whole if whole[0] == "refused" else _built(_engine._node, kept)), reads
        outcomes.add(new[0] if new[0] == "built" else new[2][:30])
    assert "built" in outcomes
    assert len(outcomes) >= 5, outcomes


@pytest.mark.parametrize(
    "where",
    ["input key", "input value", "pruned input value", "wasm key", "wasm value", "params"],
)
@pytest.mark.parametrize("prune", [True, False])
def test_a_lone_surrogate_anywhere_is_a_policy_engine_error(where: str, prune: bool) -> None:
    """Text with a lone surrogate has no UTF-8 form; the operator must see its typed refusal,
    whether or not the policy reads the key that holds it."""
    policy = load("tx_cap")
    intent = erc20(5)
    kwargs: dict[str, Any] = {
        "input": intent.parsed(),
        "params": {"max_per_tx": {USDC.lower(): "1"}},
        "wasm": wasm_for(intent),
    }
    bad = "\udc80"
    if where == "input key":
        kwargs["input"][bad] = 1
    elif where == "input value":
        kwargs["input"]["to"] = bad
    elif where == "pruned input value":
        kwargs["input"]["unread"] = {"a": [bad]}
    elif where == "wasm key":
        kwargs["wasm"][bad] = 1
    elif where == "wasm value":
        kwargs["wasm"]["history"] = {"60": {bad: "1"}}
    else:
        kwargs["params"]["max_per_tx"][bad] = "1"
    with pytest.raises(PolicyEngineError, match="lone surrogates"):
        PolicyEngine(prune=prune).evaluate(policy, **kwargs)


@pytest.mark.parametrize("key", ["data", "input"])
def test_a_wasm_key_naming_a_root_document_is_refused(key: str) -> None:
    """A generated ``data := ...`` rule in package wasm aborts the process in rego-cpp
    (``shape rego-rule has no field rego-baseobject``): refused before it is compiled."""
    intent = erc20(5)
    wasm = {**wasm_for(intent), key: 1}
    with pytest.raises(PolicyEngineError, match="not a Rego identifier"):
        PolicyEngine().evaluate(load("tx_cap"), input=intent.parsed(), params={}, wasm=wasm)
