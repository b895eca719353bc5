"""The bundled agent_spend against its module as of commit 15178d2, with every check configured.

``agent_spend_15178d2.rego`` is that module verbatim (before the rewrite that gave window_caps,
rate_limits, denied_recipients, allowed_contracts, the function checks, allowed_assets,
time_windows and approval_above a filter that passes a clean action in one body). Every case
goes through the real engine once per module, with the same lib/amounts, params, input and
data.wasm, and must give the same ``Evaluation`` (decision, reasons, tier) or fail in both.

Unlike ``test_agent_spend_differential.py`` (the two common checks), these cases configure
most of the 13 keys at once and put the action at each filter's edges: history totals and
counts around every window cap and rate limit (shorter, equal, longer, not strings or
numbers, missing), clocks around every time window's start and end, midnight and the day
boundary, before 1970 and not integers, amounts around the approval thresholds, addresses in
and out of every list in any letter case, plain transfers, calls to OFFCHAIN_TARGET, unlisted
functions. With the schema off every key and every item inside it also takes junk values.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from agentguard.policies._engine import Evaluation, PolicyEngine
from tests.policies import golden
from tests.policies import test_agent_spend_differential as differential
from tests.policies.test_agent_spend_differential import (
    JUNK,
    KEYS,
    ODD_AMOUNTS,
    _answer,
    _case_letter,
    _kinds,
    _policies,
)

REFERENCE = Path(__file__).with_name("agent_spend_15178d2.rego")
DAY = 86400
# junk for the items inside the list-valued keys (the schema refuses all of them)
ITEM_JUNK: list[Any] = [None, 5, -1, 1.5, "", "3600", "x", [], {}, [1], True, "MON", 7]


def _minutes(hhmm: Any) -> int | None:
    if isinstance(hhmm, str) and len(hhmm) == 5 and hhmm[2] == ":":
        return int(hhmm[:2]) * 60 + int(hhmm[3:])
    return None


def _junk_items(r: random.Random, params: dict[str, Any]) -> None:
    """Schema off: junk inside the items of window_caps, rate_limits and time_windows."""
    for key, fields in (
        ("window_caps", ("asset", "window_seconds", "max_amount")),
        ("rate_limits", ("window_seconds", "max_count")),
        ("time_windows", ("days", "start", "end")),
    ):
        items = params.get(key)
        if not isinstance(items, list) or not items or r.random() < 0.4:
            continue
        picked = r.choice(items)
        if not isinstance(picked, dict):
            continue
        item = dict(picked)
        field = r.choice(fields)
        if r.random() < 0.2:
            item.pop(field, None)
        else:
            item[field] = r.choice(ITEM_JUNK)
        items.append(item)
        if r.random() < 0.3:
            items.append(r.choice(ITEM_JUNK))


def _params(r: random.Random, schema: bool) -> dict[str, Any]:
    """Most of the 13 keys (tiers and approvers sometimes), mixed letter case in the lists;
    with the schema off, junk for whole keys and inside their items."""
    params = {k: golden.PARAM_MAKERS[k](r) for k in KEYS if r.random() < 0.75}
    for key in ("allowed_contracts", "denied_contracts", "allowed_assets", "denied_recipients"):
        if isinstance(params.get(key), list):
            params[key] = [_case_letter(r, a) for a in params[key]]
    if isinstance(params.get("window_caps"), list) and r.random() < 0.5:
        params["window_caps"].append(
            {"asset": golden.USDC, "window_seconds": 86400, "max_amount": r.choice(golden.AMOUNTS)}
        )
    if r.random() < 0.3:
        params["time_windows"] = [{"days": list(range(7)), "start": "00:00", "end": "24:00"}]
    if not schema:
        for key in KEYS:
            if r.random() < 0.1:
                params[key] = r.choice(JUNK)
        _junk_items(r, params)
        for key in ("max_per_tx", "approval_above"):
            if isinstance(params.get(key), dict) and r.random() < 0.3:
                asset = r.choice([*golden.ASSETS, golden.USDC_CHECKSUM, "*"])
                params[key][asset] = r.choice([*golden.AMOUNTS, *ODD_AMOUNTS, *JUNK])
        if isinstance(params.get("allow_plain_transfers"), bool) and r.random() < 0.3:
            params["allow_plain_transfers"] = r.choice(["true", 1, None])
    return params


def _caps(params: dict[str, Any], key: str, field: str) -> list[Any]:
    items = params.get(key)
    return (
        [i[field] for i in items if isinstance(i, dict) and field in i]
        if isinstance(items, list)
        else []
    )


def _near(r: random.Random, value: Any) -> Any:
    """A decimal string around ``value`` (shorter, equal, one more or less, a digit longer)."""
    if not (isinstance(value, str) and value.isdigit()):
        return r.choice(golden.AMOUNTS)
    n = str(max(int(value) + r.choice([-10, -1, 0, 0, 1, 10]), 0))
    return r.choice([n, n, n, n + "0", n[:-1] or "0"])


def _history(r: random.Random, params: dict[str, Any], asset: Any) -> dict[str, Any]:
    windows = {str(w) for w in _caps(params, "window_caps", "window_seconds")}
    windows |= {str(w) for w in _caps(params, "rate_limits", "window_seconds")}
    windows |= {"3600", "60"}
    maxes = [m for m in _caps(params, "window_caps", "max_amount") if isinstance(m, str)]
    counts = [c for c in _caps(params, "rate_limits", "max_count") if isinstance(c, int)]
    history: dict[str, Any] = {}
    for window in windows:
        if r.random() < 0.1:
            continue
        count: Any = max(r.choice(counts or [5]) + r.choice([-2, -1, -1, 0, 1]), 0)
        if r.random() < 0.05:
            count = r.choice(["3", None, 1.5, [], -1])
        total: Any = _near(r, r.choice(maxes)) if maxes else r.choice(golden.AMOUNTS)
        if r.random() < 0.05:
            total = r.choice([5, None, ["1"], "", "01"])
        projected = {asset: total} if isinstance(asset, str) and r.random() < 0.92 else {}
        entry: dict[str, Any] = {"count": count, "spent": {}, "projected": projected}
        if r.random() < 0.05:
            del entry["count"]
        history[window] = entry
    return history


def _now(r: random.Random, params: dict[str, Any]) -> Any:
    """A clock at a window's start or end, a minute either side, midnight, on any weekday;
    now and then one no gateway sends."""
    roll = r.random()
    if roll < 0.06:
        return r.choice([None, "12:00", -1, -DAY - 60, 1.5, golden.MONDAY_NOON + 0.5, 0, True])
    edges = [0, 1, 12 * 60, 24 * 60 - 1]
    windows = params.get("time_windows")
    for window in windows if isinstance(windows, list) else []:
        if isinstance(window, dict):
            edges += [m for m in (_minutes(window.get("start")), _minutes(window.get("end"))) if m]
    minute = (r.choice(edges) + r.choice([-1, 0, 0, 1])) % (24 * 60)
    monday_midnight = golden.MONDAY_NOON - 12 * 3600
    return monday_midnight + DAY * r.randint(-1, 7) + minute * 60 + r.choice([0, 0, 59])


def _action(r: random.Random, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    document, spend = golden._action(r)
    listed = [
        a
        for key in ("allowed_contracts", "denied_contracts")
        if isinstance(params.get(key), list)
        for a in params[key]
        if isinstance(a, str)
    ]
    if listed and r.random() < 0.4:
        document["to"] = _case_letter(r, r.choice(listed))
    if r.random() < 0.15:
        document |= {"data": "0x", "value": r.choice(["0", "0", "5"])}
        spend |= {"kind": "native", "asset": golden.ETH, "amount": document["value"]}
        spend["recipient"] = str(document["to"]).lower()
    functions = params.get("allowed_functions")
    if isinstance(functions, list) and functions and r.random() < 0.3:
        document["decoded_function_signature"] = r.choice(functions)
    if r.random() < 0.1:
        document["chain_id"] = r.choice(["84532", 8453, ""])
    if r.random() < 0.05:
        del document[r.choice(["data", "to", "decoded_function_signature", "value"])]
    recipients = [
        a
        for key in ("allowed_recipients", "denied_recipients")
        if isinstance(params.get(key), list)
        for a in params[key]
    ]
    if recipients and r.random() < 0.4:
        spend["recipient"] = _case_letter(r, r.choice(recipients))
    if r.random() < 0.05:
        spend["recipient"] = r.choice([5, None, []])
    if spend["kind"] != "unknown_call" and r.random() < 0.6:
        tables = [
            params[k] for k in ("max_per_tx", "approval_above") if isinstance(params.get(k), dict)
        ]
        limits = [v for t in tables for v in t.values()]
        limits += _caps(params, "window_caps", "max_amount")
        spend["amount"] = _near(r, r.choice(limits)) if limits else r.choice(golden.AMOUNTS)
    if r.random() < 0.15:
        spend["asset"] = _case_letter(r, r.choice([*golden.ASSETS, golden.USDC_CHECKSUM]))
    if r.random() < 0.04:
        spend[r.choice(["asset", "amount", "kind"])] = r.choice([5, None, ""])
    return document, spend


def _wasm(r: random.Random, params: dict[str, Any], spend: dict[str, Any]) -> dict[str, Any]:
    asset = spend.get("asset")
    wasm: dict[str, Any] = {
        "now": _now(r, params),
        "intent_hash": "0x" + "ab" * 32,
        "approved": r.choice([False, False, True, "true"]),
        "spend": spend,
        "history": _history(r, params, asset.lower() if isinstance(asset, str) else asset),
    }
    if r.random() < 0.03:
        del wasm[r.choice(["now", "approved", "history", "spend"])]
    return wasm


def _inputs(r: random.Random, params: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    document, spend = _action(r, params)
    return document, _wasm(r, params, spend)


def _compare(seed: int, configs: int, per_config: int, schema: bool) -> list[Any]:
    return differential._compare(seed, configs, per_config, schema, REFERENCE, _params, _inputs)


def _reasons(answers: list[Any]) -> set[str]:
    return {reason for a in answers if isinstance(a, Evaluation) for reason in a.reasons}


# Every message of each check the rewrite gave a filter: the corpus must reach them all.
MESSAGES = [
    "s window; denied",  # window_caps / rate_limits: no history or count
    "above the window cap max_amount",
    "has no entry in window_caps",
    "rate limit max_count",
    "is in denied_recipients",
    "is not in allowed_contracts",
    "is in denied_contracts",
    "is not allowed (allow_plain_transfers is not true)",
    "is not in allowed_functions",
    "(OFFCHAIN_TARGET) is not an offchain call",
    "is not in allowed_assets",
    "is not in allowed_chains",
    "UTC is outside the allowed time_windows",
    "the gateway sent no clock",
    "no valid spend data",
    "no spend recipient",
]


def test_every_key_schema_valid_answers_as_the_reference() -> None:
    answers = _compare(seed=20261215, configs=90, per_config=16, schema=True)
    assert {"allow", "deny"} <= _kinds(answers)
    reasons = _reasons(answers)
    missing = [m for m in MESSAGES if not any(m in reason for reason in reasons)]
    assert missing == [], missing


def test_every_key_schema_off_answers_as_the_reference() -> None:
    answers = _compare(seed=20261216, configs=90, per_config=12, schema=False)
    assert {"allow", "deny", "error"} <= _kinds(answers)
    assert any("outside the allowed time_windows" in r for r in _reasons(answers))


def test_each_filter_at_its_edges() -> None:
    """One check at a time beside the two common ones (schema on and off), over a grid of
    the values its filter tests: history totals and counts around the cap and limit, clocks
    around a window (also across midnight), addresses in every case, every function shape."""
    policies = _policies(REFERENCE)
    engines = {"old": PolicyEngine(max_bundles=2), "new": PolicyEngine(max_bundles=2)}
    usdc, upper = golden.USDC, golden.USDC_CHECKSUM
    base = {"max_per_tx": {"*": "100000000"}, "allowed_recipients": [golden.PAYEE]}
    cap = "1000000"
    configs: list[tuple[bool, dict[str, Any]]] = [
        (True, {"window_caps": [{"asset": usdc, "window_seconds": 3600, "max_amount": cap}]}),
        (True, {"window_caps": [{"asset": upper, "window_seconds": 60, "max_amount": cap}]}),
        (True, {"window_caps": [{"asset": golden.WETH, "window_seconds": 60, "max_amount": "0"}]}),
        (False, {"window_caps": [{"asset": usdc, "window_seconds": 3600, "max_amount": 5}]}),
        (False, {"window_caps": [{"asset": usdc, "window_seconds": "3600", "max_amount": cap}]}),
        (True, {"rate_limits": [{"window_seconds": 3600, "max_count": 5}]}),
        (True, {"rate_limits": [{"window_seconds": 60, "max_count": 0}]}),
        (False, {"rate_limits": [{"window_seconds": 3600, "max_count": "5"}]}),
        (False, {"rate_limits": [{"window_seconds": 3600, "max_count": None}]}),
        (True, {"denied_recipients": [golden.OTHER, golden.PAYEE.upper()]}),
        (False, {"denied_recipients": [5, golden.OTHER]}),
        (True, {"allowed_contracts": [upper, golden.ROUTER.lower()]}),
        (True, {"denied_contracts": [upper]}),
        (True, {"allowed_functions": ["transfer(address,uint256)"]}),
        (True, {"allow_plain_transfers": True}),
        (True, {"allow_plain_transfers": False, "offchain_calls": ["send_email"]}),
        (False, {"allow_plain_transfers": "true"}),
        (True, {"allowed_assets": [upper, golden.ETH]}),
        (True, {"allowed_chains": ["8453"]}),
        (True, {"time_windows": [{"days": [0, "tue"], "start": "09:00", "end": "17:00"}]}),
        (True, {"time_windows": [{"days": ["Sunday", 0], "start": "22:00", "end": "02:00"}]}),
        (False, {"time_windows": [{"days": 0, "start": "09:00", "end": "17:00"}]}),
        (False, {"time_windows": [{"days": [0], "start": 900, "end": "17:00"}]}),
        (True, {"approval_above": {usdc: cap}}),
        (True, {"approval_above": {"*": cap}}),
        (False, {"approval_above": {usdc: False, "*": cap}}),
    ]
    totals: list[Any] = ["999999", "1000000", "1000001", "10000000", "99999", "", 5, None]
    counts: list[Any] = [0, 3, 4, 5, 6, None, "4", 1.5]
    monday = golden.MONDAY_NOON - 12 * 3600
    clocks: list[Any] = [monday + m * 60 for m in (0, 119, 120, 539, 540, 1019, 1020, 1319)]
    clocks += [monday + 1320 * 60, monday - 60, monday + 6 * DAY + 1380 * 60, -60, "09:00"]
    amounts = ["0", "1", "999999", "1000000", "1000001", "10000000"]
    targets = [golden.USDC_CHECKSUM, usdc, golden.ROUTER, golden.ROUTER.upper(), golden.OFFCHAIN]
    shapes = [
        ("0xa9059cbb", "0", "transfer(address,uint256)"),
        ("0x", "0", ""),
        ("0x", "5", ""),
        ("0xd0e30db0", "0", "deposit()"),
        ("0x1234abcd", "0", "send_email(string)"),
    ]
    reasons: set[str] = set()
    for schema, extra in configs:
        params = base | extra
        for i in range(48):
            data, value, signature = shapes[i % len(shapes)]
            to = targets[i % len(targets)]
            kind = "transfer" if signature.startswith("transfer") else "unknown_call"
            if data == "0x":
                kind = "native"
            asset = [usdc, upper, golden.WETH][i % 3] if kind == "transfer" else golden.ETH
            amount = amounts[i % len(amounts)] if kind == "transfer" else value
            recipient = [golden.PAYEE, golden.OTHER.lower(), golden.PAYEE.upper(), 5][i % 4]
            document, _ = golden._action(random.Random(i))
            document |= {"to": to, "data": data, "value": value}
            document["decoded_function_signature"] = signature
            entry = {"count": counts[i % len(counts)], "spent": {}}
            entry["projected"] = {asset.lower(): totals[i % len(totals)]}
            wasm = {
                "now": clocks[i % len(clocks)],
                "approved": i % 5 == 0,
                "spend": {"kind": kind, "asset": asset, "amount": amount, "recipient": recipient},
                "history": {"3600": entry, "60": entry},
            }
            old, new = (
                _answer(engines[s], policies[s, schema], params, document, wasm)
                for s in ("old", "new")
            )
            assert new == old, (params, document, wasm)
            reasons |= _reasons([new])
    # max_per_tx in base judges every asset, and every spend is valid: no such messages
    expected = [
        m for m in MESSAGES if m not in ("has no entry in window_caps", "no valid spend data")
    ]
    missing = [m for m in expected if not any(m in reason for reason in reasons)]
    assert missing == [], missing
