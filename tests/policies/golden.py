"""Seeded cases for every bundled policy, and their recorded outputs (the policies' golden file).

The bundled Rego is rewritten for speed from time to time; its decisions, reasons, tier and
approval must not move. ``cases()`` builds a few thousand (policy, params, input, data.wasm)
cases that reach every check: amounts equal to a cap, one above, 78-digit amounts, unknown and
offchain calls, plain transfers, clocks around window edges and midnight, approval thresholds,
tiers, missing or mistyped spend data and history, and params the schema refuses (checked
against the policy's own fail-closed rules with the schema check off). ``record()`` evaluates
them through the real engine; ``golden_policies.json.gz`` holds what the policies answered
before a rewrite, and ``test_golden.py`` asserts the current ones answer exactly that.

    .venv/bin/python -m tests.policies.golden   # re-record (only when a change is meant)
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agentguard.policies import Policy, load
from agentguard.policies._engine import PolicyEngine, PolicyEngineError

GOLDEN = Path(__file__).with_name("golden_policies.json.gz")
SEED = 20261201

USDC = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
USDC_CHECKSUM = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
ETH = "0x0000000000000000000000000000000000000000"
WETH = "0x4200000000000000000000000000000000000006"
PAYEE = "0x2222222222222222222222222222222222222222"
OTHER = "0xaBcDeF0000000000000000000000000000000001"
ROUTER = "0x3333333333333333333333333333333333333333"
OFFCHAIN = "0x5465B623a05C86DC37Be9E4EB429F1F4F7571d95"  # agentguard.OFFCHAIN_TARGET
DEAD = "0x000000000000000000000000000000000000dEaD"
ASSETS = [USDC, ETH, WETH]
ADDRESSES = [PAYEE, OTHER, ROUTER, DEAD, USDC_CHECKSUM, OFFCHAIN]
FUNCTIONS = [
    "transfer(address,uint256)",
    "approve(address,uint256)",
    "deposit()",
    "swap(address,uint256,bytes)",
    "send_email(string)",
]
HUGE = str(2**256 - 1)
AMOUNTS = ["0", "1", "9", "10", "999999", "1000000", "1000001", "5000000", "123456789012", HUGE]
AMOUNTS += [str(10**77), "9" * 78]
DAY = 86400
MONDAY_NOON = 1763985600  # 2025-11-24 12:00:00 UTC
POLICIES = [
    "agent_spend",
    "tx_cap",
    "window_cap",
    "rate_limit",
    "recipient_list",
    "function_allowlist",
    "asset_chain_allowlist",
    "time_window",
    "approval_threshold",
]


def _near(r: random.Random, amount: str) -> str:
    """An amount equal to, one below or one above ``amount`` (the edges of every cap)."""
    n = int(amount) + r.choice([-1, 0, 0, 1])
    return str(max(n, 0))


def _amount_map(r: random.Random) -> dict[str, str]:
    keys = r.sample([*ASSETS, "*"], r.randint(1, 3))
    return {k: r.choice(AMOUNTS) for k in keys}


def _addresses(r: random.Random) -> list[str]:
    picked = r.sample(ADDRESSES, r.randint(0, 3))
    return [a.lower() if r.random() < 0.3 else a for a in picked]


def _days(r: random.Random) -> list[Any]:
    names = [
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
        ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
    ]
    forms: list[Callable[[int], Any]] = [lambda d: d, *(lambda d, n=n: n[d] for n in names)]
    return [r.choice(forms)(d) for d in sorted(r.sample(range(7), r.randint(1, 7)))]


def _hhmm(r: random.Random, end: bool = False) -> str:
    if end and r.random() < 0.15:
        return "24:00"
    return f"{r.choice([0, 8, 9, 11, 12, 17, 23])}:{r.choice([0, 1, 30, 59]):02d}".zfill(5)


PARAM_MAKERS: dict[str, Callable[[random.Random], Any]] = {
    "max_per_tx": _amount_map,
    "approval_above": _amount_map,
    "window_caps": lambda r: [
        {
            "asset": r.choice([USDC, USDC_CHECKSUM, ETH, WETH]),
            "window_seconds": r.choice([3600, 86400, 60]),
            "max_amount": r.choice(AMOUNTS),
        }
        for _ in range(r.randint(1, 3))
    ],
    "rate_limits": lambda r: [
        {"window_seconds": r.choice([3600, 86400, 60]), "max_count": r.choice([0, 1, 2, 5, 10**9])}
        for _ in range(r.randint(1, 2))
    ],
    "allowed_recipients": _addresses,
    "denied_recipients": _addresses,
    "allowed_contracts": _addresses,
    "denied_contracts": _addresses,
    "allowed_functions": lambda r: r.sample(FUNCTIONS, r.randint(0, 3)),
    "offchain_calls": lambda r: r.sample(["send_email", "post_tweet", "transfer"], r.randint(0, 2)),
    "allow_plain_transfers": lambda r: r.random() < 0.6,
    "allowed_assets": lambda r: r.sample([USDC, USDC_CHECKSUM, ETH, WETH], r.randint(0, 2)),
    "allowed_chains": lambda r: r.sample(["8453", "1", "84532"], r.randint(0, 2)),
    "time_windows": lambda r: [
        {"days": _days(r), "start": _hhmm(r), "end": _hhmm(r, end=True)}
        for _ in range(r.randint(1, 2))
    ],
    "tiers": lambda r: {
        name: _amount_map(r)
        for name in r.sample(["high", "all", "human", "vault"], r.randint(1, 4))
    },
    "approvers": lambda r: [PAYEE],
}


def _params(r: random.Random, name: str, keys: list[str]) -> dict[str, Any]:
    if name == "agent_spend":
        chosen = r.sample(keys, r.choice([1, 1, 2, 2, 3, 4, 6, 13]))
    else:
        chosen = [k for k in keys if r.random() < 0.6]
    schema = load(name).params_schema
    needed = list(schema.get("required", []))
    if "anyOf" in schema and not any(k in chosen for a in schema["anyOf"] for k in a["required"]):
        needed.append(r.choice(schema["anyOf"])["required"][0])
    params = {k: PARAM_MAKERS[k](r) for k in [*chosen, *needed] if k in PARAM_MAKERS}
    if name == "agent_spend" and r.random() < 0.35:
        params["tiers"] = PARAM_MAKERS["tiers"](r)
    return params


def _action(r: random.Random) -> tuple[dict[str, Any], dict[str, Any]]:
    """(input, data.wasm.spend) of one action, shaped as the operator derives them."""
    kind = r.choice(["transfer", "transfer", "native", "approval", "nft", "unknown", "offchain"])
    value, data, sig, to = "0", "0x", "", r.choice(ADDRESSES)
    recipient = r.choice(ADDRESSES).lower()
    asset, amount = r.choice(ASSETS), r.choice(AMOUNTS)
    if kind == "native":
        asset, value = ETH, amount
        recipient = to.lower()
        spend_kind = "native"
    elif kind == "unknown":
        sig = r.choice([*FUNCTIONS[2:], "send_email(string)"])
        data = "0xd0e30db0"
        value = r.choice(["0", "0", "5"])
        to = r.choice([ROUTER, OFFCHAIN, USDC_CHECKSUM])
        asset, amount, recipient, spend_kind = ETH, value, to.lower(), "unknown_call"
    elif kind == "offchain":
        sig = r.choice(["send_email(string)", "post_tweet(string)", "other(string)"])
        data, to = "0x1234abcd", r.choice([OFFCHAIN, OFFCHAIN, ROUTER])
        value = r.choice(["0", "0", "0", "1"])
        asset, amount, recipient, spend_kind = ETH, value, to.lower(), "unknown_call"
    else:
        sig = {
            "transfer": "transfer(address,uint256)",
            "approval": "approve(address,uint256)",
            "nft": "safeTransferFrom(address,address,uint256)",
        }[kind]
        data = "0xa9059cbb" + "00" * 64
        to = USDC_CHECKSUM if asset == USDC else asset
        spend_kind = kind
        if kind == "nft":
            amount = HUGE
    document = {
        "from": "0x1111111111111111111111111111111111111111",
        "to": to,
        "value": value,
        "data": data,
        "chain_id": r.choice(["8453", "8453", "1"]),
        "function_signature": "0x" + sig.encode().hex() if sig else "0x",
        "decoded_function_signature": sig,
        "decoded_function_arguments": [],
    }
    spend = {"asset": asset, "amount": amount, "recipient": recipient, "kind": spend_kind}
    return document, spend


def _history(r: random.Random, spend: dict[str, Any]) -> dict[str, Any]:
    history: dict[str, Any] = {}
    for window in r.sample(["3600", "86400", "60"], r.randint(0, 3)):
        projected = {spend["asset"]: _near(r, r.choice(AMOUNTS))}
        if r.random() < 0.7:
            projected[spend["asset"]] = spend["amount"]
        if r.random() < 0.1:
            projected = {}
        entry: dict[str, Any] = {"count": r.choice([0, 1, 2, 4, 5, 10**9 - 1, 10**9]), "spent": {}}
        entry["projected"] = projected
        if r.random() < 0.05:
            del entry["count"]
        history[window] = entry
    return history


def _now(r: random.Random) -> Any:
    day = MONDAY_NOON - 12 * 3600 + DAY * r.randint(0, 6)
    second = r.choice([0, 1, 8 * 3600 + 59 * 60, 9 * 3600, 17 * 3600 - 1, 17 * 3600, 23 * 3600])
    second = r.choice([second, r.randint(0, DAY - 1), DAY - 1, 12 * 3600, 11 * 3600 + 30 * 60])
    return day + second


def _wasm(r: random.Random, spend: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    spend = dict(spend)
    # amounts near the configured caps, so equal / one above / one below all occur
    caps = [v for k in ("max_per_tx", "approval_above") for v in params.get(k, {}).values()]
    caps += [v for t in params.get("tiers", {}).values() for v in t.values()]
    caps += [c["max_amount"] for c in params.get("window_caps", [])]
    if caps and r.random() < 0.5 and spend["kind"] not in ("native", "unknown_call"):
        spend["amount"] = _near(r, r.choice(caps))
    if r.random() < 0.15:
        spend["asset"] = spend["asset"].upper().replace("0X", "0x")
    wasm: dict[str, Any] = {
        "now": _now(r),
        "intent_hash": "0x" + "ab" * 32,
        "approved": r.random() < 0.25,
        "spend": spend,
        "history": _history(r, spend),
    }
    damage = r.random()
    if damage < 0.03:
        del wasm["spend"]
    elif damage < 0.06:
        wasm["spend"][r.choice(["asset", "amount", "kind", "recipient"])] = 5
    elif damage < 0.08:
        del wasm["now"]
    elif damage < 0.09:
        wasm["now"] = "12:00"
    elif damage < 0.10:
        del wasm["approved"]
    return wasm


def cases() -> Iterator[tuple[str, bool, dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(policy, schema checked, params, input, data.wasm), the same list on every run."""
    r = random.Random(SEED)
    for name in POLICIES:
        keys = sorted(load(name).params_schema["properties"])
        configs = 260 if name == "agent_spend" else 45
        for i in range(configs):
            # every tenth config skips the schema: the policy's own rules for missing params
            schema = i % 10 != 9
            params = (
                _params(r, name, keys)
                if schema
                else {k: PARAM_MAKERS[k](r) for k in keys if r.random() < 0.3 and k in PARAM_MAKERS}
            )
            if not schema and i % 20 == 19:  # nothing configured (tiers alone are no check)
                params = {"tiers": PARAM_MAKERS["tiers"](r)} if name == "agent_spend" else {}
            for _ in range(12 if name == "agent_spend" else 10):
                document, spend = _action(r)
                yield name, schema, params, document, _wasm(r, spend, params)


def _policy(name: str, schema: bool) -> Policy:
    policy = load(name)
    return policy if schema else dataclasses.replace(policy, params_schema={})


def outputs() -> list[list[Any]]:
    """[decision, sorted reasons, tier] per case (an engine error: ["error", [message], 0])."""
    engine = PolicyEngine(max_bundles=4)
    policies = {(n, s): _policy(n, s) for n in POLICIES for s in (True, False)}
    found: list[list[Any]] = []
    for name, schema, params, document, wasm in cases():
        try:
            result = engine.evaluate(
                policies[name, schema], input=document, params=params, wasm=wasm
            )
        except PolicyEngineError as exc:
            found.append(["error", [str(exc)], 0])
            continue
        found.append([result.decision, list(result.reasons), result.tier])
    return found


def cases_digest() -> str:
    """Pins the generator: a changed case list would compare outputs of different inputs."""
    h = hashlib.sha256()
    for case in cases():
        h.update(json.dumps(case, sort_keys=True).encode())
    return h.hexdigest()


def encode(found: list[list[Any]]) -> dict[str, Any]:
    """Reasons are stored once in a table; each case refers to them by index."""
    table: dict[str, int] = {}
    rows = []
    for decision, reasons, tier in found:
        rows.append([decision, [table.setdefault(x, len(table)) for x in reasons], tier])
    return {"digest": cases_digest(), "reasons": list(table), "outputs": rows}


def decode(golden: dict[str, Any]) -> list[list[Any]]:
    table = golden["reasons"]
    return [[d, [table[i] for i in reasons], t] for d, reasons, t in golden["outputs"]]


def read() -> dict[str, Any]:
    with gzip.open(GOLDEN, "rt") as f:
        loaded: dict[str, Any] = json.load(f)
        return loaded


def main() -> None:
    golden = encode(outputs())
    with gzip.GzipFile(GOLDEN, "wb", mtime=0) as f:
        f.write(json.dumps(golden, separators=(",", ":")).encode())
    counts: dict[str, int] = {}
    for decision, _, tier in golden["outputs"]:
        counts[f"{decision}/tier{tier}"] = counts.get(f"{decision}/tier{tier}", 0) + 1
    print(len(golden["outputs"]), "cases,", len(golden["reasons"]), "distinct reasons", counts)
    print(GOLDEN, GOLDEN.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
