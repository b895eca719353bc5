"""Red team of 04976f0: agent_spend's filters against 15178d2 on hostile single-key cases.

Each case is a filter's edge the old bodies decide differently only if the filter is wrong:
rego-cpp ``in`` against lists of non-strings (numbers, arrays, objects), approval thresholds
of every type beside a "*" entry, spend assets of every type, rate counts as floats and huge
ints, clocks as floats. The bundled module must answer each as the frozen one (schema off).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from agentguard.policies._engine import PolicyEngine
from tests.policies import golden
from tests.policies.test_agent_spend_differential import _answer, _policies

REFERENCE = Path(__file__).parents[1] / "policies" / "agent_spend_15178d2.rego"
USDC = golden.USDC


def _wasm(**changes: Any) -> dict[str, Any]:
    wasm: dict[str, Any] = {
        "now": golden.MONDAY_NOON,
        "intent_hash": "0x" + "ab" * 32,
        "approved": False,
        "spend": {"kind": "transfer", "asset": USDC, "amount": "5", "recipient": golden.PAYEE},
        "history": {"3600": {"count": 0, "spent": {}, "projected": {USDC: "5"}}},
    }
    return wasm | changes


def _cases() -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    document, _ = golden._action(random.Random(1))
    cases = []
    odd = ["5", "1", "true", '["x"]', "x", "[]", "0x5", "[5]", '["5"]']
    lists: list[Any] = [[5], [1.0], [True], [None], [["x"]], [[]], [{}], [[5]], [["5"]], {"k": 5}]
    for value in odd:
        for items in lists:
            base = {"max_per_tx": {"*": "100"}}
            spend = {"kind": "transfer", "asset": value, "amount": "5", "recipient": value}
            cases.append((base | {"allowed_contracts": items}, document | {"to": value}, _wasm()))
            cases.append((base | {"allowed_assets": items}, document, _wasm(spend=spend)))
            cases.append((base | {"denied_recipients": items}, document, _wasm(spend=spend)))
            signed = document | {"decoded_function_signature": value}
            cases.append((base | {"allowed_functions": items}, signed, _wasm()))
    thresholds: list[Any] = ["10", "05", "", ["1", "2", "3"], {"a": 1, "b": 2}, 5, False, "9" * 99]
    for threshold in thresholds:
        for amount in ["5", "05", "50", "500", "", "+50"]:
            for star in (None, "1"):
                table = {USDC: threshold} | ({"*": star} if star else {})
                spend = {"kind": "transfer", "asset": golden.USDC_CHECKSUM, "amount": amount}
                spend["recipient"] = golden.PAYEE
                params = {"allowed_recipients": [golden.PAYEE], "approval_above": table}
                cases.append((params, document, _wasm(spend=spend)))
    for count in [0, 0.5, -1, 2**63 - 1, 2**64, 9007199254740993, 1e20, 1.5]:
        for limit in [1, 1.0, 2.5, 2**64, 9007199254740993, 1e20]:
            params = {"rate_limits": [{"window_seconds": 3600, "max_count": limit}]}
            history = {"3600": {"count": count, "spent": {}, "projected": {USDC: "5"}}}
            cases.append((params, document, _wasm(history=history)))
    for now in [float(golden.MONDAY_NOON), golden.MONDAY_NOON + 0.5]:
        for days in [[0], [0.0], "0", {"a": 0}, 0]:
            window = {"days": days, "start": "00:00", "end": "23:59"}
            cases.append(({"time_windows": [window]}, document, _wasm(now=now)))
    return cases


def test_hostile_filter_edges_answer_as_15178d2() -> None:
    policies = _policies(REFERENCE)
    engines = {"old": PolicyEngine(max_bundles=128), "new": PolicyEngine(max_bundles=128)}
    decisions = set()
    for params, document, wasm in _cases():
        old, new = (
            _answer(engines[side], policies[side, False], params, document, wasm)
            for side in ("old", "new")
        )
        assert new == old, (params, document, wasm)
        decisions.add(old[0] if isinstance(old, tuple) else old.decision)
    assert {"allow", "deny", "approval_required"} <= decisions
