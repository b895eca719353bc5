"""The operator's fast comparison of the params a gateway sends with the registered ones
(``_same_params``: ``==`` plus the exact type at every integer and boolean) says "the same"
only where their canonical JSON is the same, over seeded and hostile variations; a request's
answer is the one the canonical comparison alone gives (real engine, real keys)."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest
from coincurve import PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

import agentguard.network.operator as operator_module
from agentguard._json import strict_loads
from agentguard.network._rpc import RPCError
from agentguard.network.operator import Operator, _same_params, _scalars
from agentguard.network.registry import Registry
from agentguard.policies import canonical_json

from .conftest import TOKEN, params
from .test_operator import registration, request

# Every agent_spend key configured (as benchmarks/_common.py FULL_13), plus values a lax
# comparison would confuse: booleans, zero, big integers, unicode and JSON-looking strings.
FULL: dict[str, Any] = {
    "max_per_tx": {TOKEN: "100000000000", "0x0000000000000000000000000000000000000000": "1"},
    "window_caps": [{"asset": TOKEN, "window_seconds": 86400, "max_amount": "1" + "0" * 30}],
    "rate_limits": [{"window_seconds": 3600, "max_count": 1_000_000_000}],
    "allow_plain_transfers": True,
    "time_windows": [{"days": [0, 1, 2, 3, 4, 5, 6], "start": "00:00", "end": "24:00"}],
    "flags": [True, False, 0, 1, None],
    "big": [(1 << 63) - 1, 1 << 63, (1 << 256) - 1, -(1 << 63)],
    "text": ["", "é", "ünï\u0000", '{"a": [1, 2]}', "[[[", "\\u0041", "\U0001f600"],
    "nested": {"a": {"b": [[], {}, [[1]], {"c": [False]}]}},
}


def _canonical_same(sent: Any, held: Any) -> bool:
    try:
        return canonical_json(sent) == canonical_json(held)
    except (TypeError, ValueError):
        return False


def _variants(value: Any, rng: random.Random) -> list[Any]:
    """``value`` changed in one place each: the kinds of change ``==`` does not see
    (``1``/``1.0``/``True``, ``0``/``-0.0``/``False``) and the kinds it does."""
    places: list[tuple[Any, Any]] = []  # (container, key) of every value below the top

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, inner in list(items):
            places.append((node, key))
            if isinstance(inner, dict | list):
                walk(inner)

    out: list[Any] = []
    for index in range(len(_places_of(value))):
        for change in _CHANGES:
            copied = copy.deepcopy(value)
            places.clear()
            walk(copied)
            container, key = places[index]
            changed = change(container[key], rng)
            if changed is _SAME:
                continue
            container[key] = changed
            out.append(copied)
    reordered = json.loads(json.dumps(value, sort_keys=True))
    out.append(dict(reversed(list(reordered.items()))))  # keys in another order: the same
    out.append({**copy.deepcopy(value), "extra": 1})
    out.append({k: v for k, v in value.items() if k != next(iter(value))})
    return out


def _places_of(value: Any) -> list[Any]:
    found: list[Any] = []

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for _, inner in items:
            found.append(inner)
            if isinstance(inner, dict | list):
                walk(inner)

    walk(value)
    return found


_SAME = object()


def _as_float(v: Any, rng: random.Random) -> Any:
    return float(v) if type(v) in (int, bool) and abs(v) < 1 << 53 else _SAME


def _as_bool(v: Any, rng: random.Random) -> Any:
    return bool(v) if type(v) is int and v in (0, 1) else _SAME


def _as_int(v: Any, rng: random.Random) -> Any:
    return int(v) if type(v) in (bool, float) and float(v).is_integer() else _SAME


def _negative_zero(v: Any, rng: random.Random) -> Any:
    return -0.0 if v == 0 and type(v) is not str else _SAME


def _as_text(v: Any, rng: random.Random) -> Any:
    return json.dumps(v) if type(v) is not str else _SAME


def _bumped(v: Any, rng: random.Random) -> Any:
    if type(v) is int:
        return v + rng.choice([1, -1, 1 << 64])
    if type(v) is str:
        return v + rng.choice(["x", "\u00e9", " ", "]"])
    return _SAME


def _wrapped(v: Any, rng: random.Random) -> Any:
    return [v]


def _emptied(v: Any, rng: random.Random) -> Any:
    return type(v)() if isinstance(v, dict | list) and v else _SAME


_CHANGES = (_as_float, _as_bool, _as_int, _negative_zero, _as_text, _bumped, _wrapped, _emptied)


@pytest.mark.parametrize("held", [FULL, params(), params(approval_above=5), {"a": 1.5}, {}])
def test_same_only_where_the_canonical_json_is_the_same(held: dict[str, Any]) -> None:
    rng = random.Random(3)
    scalars = _scalars(held)
    outcomes = set()
    for sent in [json.loads(json.dumps(held)), *_variants(held, rng)]:
        fast = _same_params(sent, held, scalars)
        if fast:
            assert _canonical_same(sent, held), sent
        outcomes.add((fast, _canonical_same(sent, held)))
    if scalars is not None and held:  # both sides reached (a float: never "the same")
        assert (True, True) in outcomes and (False, False) in outcomes
    if scalars is None:
        assert all(not fast for fast, _ in outcomes)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 256), max_value=1 << 256)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=4), _json, max_size=5), st.randoms())
def test_same_only_where_the_canonical_json_is_the_same_on_random_params(
    held: dict[str, Any], rng: random.Random
) -> None:
    scalars = _scalars(held)
    sent = json.loads(json.dumps(held))
    assert _same_params(sent, held, scalars) == (scalars is not None)  # a float: never
    for variant in _variants(held, rng) if held else []:
        if _same_params(variant, held, scalars):
            assert _canonical_same(variant, held), (variant, held)


def test_a_scalars_list_that_does_not_fit_the_sent_params_is_not_the_same() -> None:
    held = {"a": [1, 2]}
    assert not _same_params({"a": [1, 2]}, held, ((("a", 5), int),))  # a wrong place
    assert not _same_params(["a"], held, ())
    assert not _same_params({"a": [1, 2]}, held, None)


def _answers(operator: Operator, bodies: list[dict[str, Any]]) -> list[Any]:
    out = []
    for body in bodies:
        try:
            answer = operator.evaluate_and_sign(copy.deepcopy(body))
            out.append(answer["signature"])
        except RPCError as exc:
            out.append((exc.code, exc.message))
    return out


def test_requests_get_the_canonical_comparisons_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same requests (the registered params, then each variant of them) to two operators
    with the same key: one with the fast comparison, one with the canonical comparison alone;
    every signature and every refusal the same."""
    held = params(approval_above=7)
    rng = random.Random(9)
    bodies = []
    for sent in [held, *_variants(held, rng)]:
        body = request()
        body["registration"] = registration(config=held)
        body["params"] = sent
        bodies.append(body)
    key = PrivateKey(b"\x05" * 32)
    fast = _answers(Operator(key, Registry(":memory:")), bodies)
    with monkeypatch.context() as patched:
        patched.setattr(operator_module, "_same_params", lambda *a: False)
        slow = _answers(Operator(key, Registry(":memory:")), bodies)
    assert fast == slow
    assert isinstance(fast[0], str) and any(isinstance(a, tuple) for a in fast)


# registered params as an owner's JSON text, and the spellings a gateway could send at "a":
# numbers that are or are not the same JSON value, escapes of the same text, near-misses
_HELD_TEXTS = [
    '{"a":1}',
    '{"a":true}',
    '{"a":0}',
    '{"a":false}',
    '{"a":-1}',
    '{"a":123456789012345678901234567890}',
    '{"a":"1"}',
    '{"a":"\\u00e9"}',
    '{"a":null}',
    '{"a":[]}',
    '{"a":{}}',
    '{"a":[1,true,0,false,null]}',
    '{"a":[[1],[2,3]]}',
    '{"a":[{"x":1},{"x":true}]}',
    '{"a":{"b":[{"c":1}]}}',
    '{"a":1.0}',
    '{"a":-0.0}',
]
_SENT_AT_A = [
    *["1", "1.0", "1e0", "1E0", "10e-1", "0.1e1", "true", "false", "0", "-0", "-0.0"],
    *["0.0", "0e0", "-1", "-1.0", "null"],
    '"1"',
    '"true"',
    "[]",
    "{}",
    "123456789012345678901234567890",
    "123456789012345678901234567890.0",
    "1.2345678901234568e+29",
    '"\\u00e9"',
    '"\u00e9"',
    '"e\u0301"',
    '"\\u00c9"',
    "[1,true,0,false,null]",
    "[1.0,true,0,false,null]",
    "[true,1,0,false,null]",
    "[1,1,0,0,null]",
    "[1,true,-0,false,null]",
    "[1,true,0.0,false,null]",
    "[1,true,0,false]",
    "[[1],[2,3]]",
    "[[1.0],[2,3]]",
    "[[1],[2,3.0]]",
    "[[1],[2,true]]",
    '[{"x":1},{"x":true}]',
    '[{"x":1},{"x":1}]',
    '[{"x":true},{"x":true}]',
    '{"b":[{"c":1}]}',
    '{"b":[{"c":1.0}]}',
    '{"b":[{"c":true}]}',
]


def test_wire_spellings_are_the_same_only_where_the_canonical_json_is() -> None:
    """The gateway's params as the operator reads them off the wire (``strict_loads``: exact
    JSON types, so no value's own ``__eq__`` decides): every spelling at every place of each
    registered text, with whitespace and a repeated key (refused by the decoder) too. "The
    same" only where the canonical comparison says so; and it says so for each spelling of
    the registered value itself."""
    checked = same = 0
    for held_text in _HELD_TEXTS:
        held = strict_loads(held_text)
        scalars = _scalars(held)
        for at in _SENT_AT_A:
            for text in (f'{{"a":{at}}}', f'{{ "a" : {at} }}', f'{{"a":{at},"a":{at}}}'):
                try:
                    sent = strict_loads(text)
                except ValueError:
                    assert text.count('"a"') == 2  # only the repeated key is refused
                    continue
                checked += 1
                if _same_params(sent, held, scalars):
                    same += 1
                    assert _canonical_same(sent, held), (held_text, text)
    assert checked == len(_HELD_TEXTS) * len(_SENT_AT_A) * 2 and same > len(_HELD_TEXTS)
