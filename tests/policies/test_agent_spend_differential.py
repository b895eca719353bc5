"""The bundled agent_spend against its module as of commit 3f0b6a5, on random hostile cases.

``agent_spend_3f0b6a5.rego`` is that module verbatim (before the rewrite that gave the two
common checks one body each and folded the gate into a violations body). Every case goes
through the real engine twice, with the same lib/amounts, params, input and data.wasm, once
per module, and must give the same ``Evaluation`` (decision, reasons, tier) or fail in both.
Params come with the schema checked and, as ``golden.py`` does, with it off, so the rules'
own fail-closed behaviour on mistyped params (false, null, numbers, strings, "*" entries,
mixed-case keys, non-string list items) is held too; spends vary kind, amounts around every
cap as decimal strings of any length (leading zeros, signs, letters, 100 digits), numbers and
other types, recipients in and out of the lists in any letter case, missing fields.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentguard.policies import Policy, load
from agentguard.policies._engine import Evaluation, PolicyEngine, PolicyEngineError
from tests.policies import golden

REFERENCE = Path(__file__).with_name("agent_spend_3f0b6a5.rego")
KEYS = sorted(load("agent_spend").params_schema["properties"])
CHECK_KEYS = [k for k in KEYS if k not in ("approvers", "tiers")]

# Values of the wrong type for any params key (the schema refuses them; the rules must not
# pass a check because of them) and odd amounts and addresses for inside maps and lists.
JUNK: list[Any] = [False, True, None, 0, 5, "", "x", "1000", [], {}, ["0x12"], {"a": 1}]
ODD_AMOUNTS: list[Any] = ["", "00", "0001", "-1", "+5", "1e6", "0x10", " 5", "١٢", "9" * 100]
KINDS: list[Any] = ["native", "nft", "approval", "transfer", "unknown_call", "offchain"]
KINDS += ["TRANSFER", "approve", "", 3, None]
ODD_AMOUNTS += ["1" + "0" * 77, "1" + "0" * 78, 5, 0, -1, 1.5, None, True, [], {}, ["1"]]


def _amount_near(r: random.Random, params: dict[str, Any]) -> Any:
    caps = [
        v
        for k in ("max_per_tx", "approval_above")
        if isinstance(params.get(k), dict)
        for v in params[k].values()
    ]
    tiers = params.get("tiers")
    if isinstance(tiers, dict):
        caps += [v for t in tiers.values() if isinstance(t, dict) for v in t.values()]
    caps = [c for c in caps if isinstance(c, str) and c.isdigit()]
    pick = r.random()
    if caps and pick < 0.5:
        cap = int(r.choice(caps))
        near = str(max(cap + r.choice([-10, -1, 0, 0, 1, 10]), 0))
        # the same value one digit longer: a leading zero, or ten times it
        return r.choice([near, near, near, "0" + near, near + "0"])
    if pick < 0.75:
        return r.choice(golden.AMOUNTS)
    return r.choice(ODD_AMOUNTS)


def _case_letter(r: random.Random, text: Any) -> Any:
    if not isinstance(text, str):
        return text
    return r.choice([text, text.lower(), text.upper().replace("0X", "0x"), text.upper()])


def _hostile_params(r: random.Random) -> Any:
    """Any params object: schema-valid pieces, junk values, "*" and mixed-case map keys; one
    in six configures no check, or one check key whose value is false or null; a few params
    are not an object at all."""
    roll = r.random()
    if roll < 0.02:
        return r.choice([None, [], "x", 0, [{"max_per_tx": {"*": "1"}}]])
    if roll < 0.08:
        nothing = {"tiers": golden.PARAM_MAKERS["tiers"](r), "approvers": [golden.PAYEE]}
        return {k: v for k, v in nothing.items() if r.random() < 0.5}
    if roll < 0.16:
        return {r.choice(CHECK_KEYS): r.choice([False, None])}
    params: dict[str, Any] = {}
    for key in KEYS:
        roll = r.random()
        if roll < 0.35:
            params[key] = golden.PARAM_MAKERS[key](r)
        elif roll < 0.45:
            params[key] = r.choice(JUNK)
    for key in ("max_per_tx", "approval_above"):
        if isinstance(params.get(key), dict) and r.random() < 0.5:
            table = params[key]
            asset = r.choice([*golden.ASSETS, golden.USDC_CHECKSUM, "*"])
            table[_case_letter(r, asset)] = r.choice([*golden.AMOUNTS, *ODD_AMOUNTS, *JUNK])
    for key in ("allowed_recipients", "denied_recipients", "allowed_contracts"):
        if isinstance(params.get(key), list) and r.random() < 0.3:
            params[key] = [*params[key], r.choice([5, None, True, "", golden.PAYEE.upper()])]
    if r.random() < 0.05:
        params["unknown_key"] = r.choice(JUNK)
    return params


def _schema_params(r: random.Random) -> dict[str, Any]:
    """Schema-valid params, the two common checks most of the time (as operators see)."""
    if r.random() < 0.5:
        params: dict[str, Any] = {
            "max_per_tx": golden.PARAM_MAKERS["max_per_tx"](r),
            "allowed_recipients": golden.PARAM_MAKERS["allowed_recipients"](r),
        }
        for key in r.sample(KEYS, r.choice([0, 0, 1, 2])):
            params[key] = golden.PARAM_MAKERS[key](r)
        return params
    chosen = r.sample(CHECK_KEYS, r.choice([1, 1, 2, 3, 5, 13]))
    params = {k: golden.PARAM_MAKERS[k](r) for k in chosen}
    for key in ("tiers", "approvers"):
        if r.random() < 0.3:
            params[key] = golden.PARAM_MAKERS[key](r)
    return params


def _inputs(r: random.Random, params: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    params = params if isinstance(params, dict) else {}
    document, spend = golden._action(r)
    wasm = golden._wasm(r, spend, {})  # amounts near the caps: _amount_near, any params
    spend = wasm.get("spend")
    if isinstance(spend, dict):
        if r.random() < 0.6 and spend.get("kind") != "unknown_call":
            spend["amount"] = _amount_near(r, params)
        if r.random() < 0.3:
            listed = params.get("allowed_recipients")
            if isinstance(listed, list) and listed and r.random() < 0.7:
                spend["recipient"] = _case_letter(r, r.choice(listed))
            else:
                spend["recipient"] = _case_letter(r, r.choice(golden.ADDRESSES))
        if r.random() < 0.1:
            spend["recipient"] = r.choice([5, None, [], golden.PAYEE.upper()])
        if r.random() < 0.1:
            spend["asset"] = _case_letter(r, r.choice([*golden.ASSETS, "*", "", 7]))
        if r.random() < 0.05:
            spend["kind"] = r.choice(KINDS)
        if r.random() < 0.05:
            del spend[r.choice(sorted(spend))]
    elif r.random() < 0.3:
        wasm["spend"] = r.choice(JUNK)
    return document, wasm


def _answer(engine: PolicyEngine, policy: Policy, params: Any, document: Any, wasm: Any) -> Any:
    try:
        return engine.evaluate(policy, input=document, params=params, wasm=wasm)
    except PolicyEngineError as exc:
        # the message names module lines, which moved: compare that it failed, and how
        return ("error", "failed to evaluate" in str(exc), "schema" in str(exc))


def _policies(reference: Path = REFERENCE) -> dict[tuple[str, bool], Policy]:
    """The bundled agent_spend ("new") and ``reference`` in its place ("old"), each with its
    schema checked and with it off."""
    new = load("agent_spend")
    old = dataclasses.replace(
        new, modules={**new.modules, "policy.rego": reference.read_text(encoding="utf-8")}
    )
    assert old.code_hash != new.code_hash
    found = {}
    for label, policy in (("old", old), ("new", new)):
        found[label, True] = policy
        found[label, False] = dataclasses.replace(policy, params_schema={})
    return found


def _default_params(r: random.Random, schema: bool) -> Any:
    return _schema_params(r) if schema else _hostile_params(r)


def _compare(
    seed: int,
    configs: int,
    per_config: int,
    schema: bool,
    reference: Path = REFERENCE,
    make_params: Callable[[random.Random, bool], Any] = _default_params,
    make_inputs: Callable[[random.Random, Any], tuple[Any, Any]] = _inputs,
) -> list[Any]:
    """``configs`` params from ``make_params``, ``per_config`` (input, data.wasm) each from
    ``make_inputs``: the bundled module and ``reference`` must answer each alike."""
    r = random.Random(seed)
    policies = _policies(reference)
    engines = {"old": PolicyEngine(max_bundles=2), "new": PolicyEngine(max_bundles=2)}
    answers: list[Any] = []
    for _ in range(configs):
        params = make_params(r, schema)
        for _ in range(per_config):
            document, wasm = make_inputs(r, params)
            old, new = (
                _answer(engines[side], policies[side, schema], params, document, wasm)
                for side in ("old", "new")
            )
            assert new == old, (params, document, wasm)
            answers.append(new)
    return answers


def _kinds(answers: list[Any]) -> set[str]:
    return {a[0] if isinstance(a, tuple) else a.decision for a in answers}


def test_schema_valid_params_answer_as_the_reference() -> None:
    answers = _compare(seed=20261203, configs=70, per_config=14, schema=True)
    assert {"allow", "deny", "approval_required"} <= _kinds(answers)
    reasons = {reason for a in answers if isinstance(a, Evaluation) for reason in a.reasons}
    # the corpus reaches each rewritten rule's every message
    for part in (
        "is above the per-transaction cap",
        "has no entry in max_per_tx",
        "no valid spend data",
        "is not in allowed_recipients",
        "no spend recipient",
        "is not one agentguard can value",
    ):
        assert any(part in reason for reason in reasons), part
    assert any(a.tier for a in answers if isinstance(a, Evaluation))


def test_hostile_params_answer_as_the_reference() -> None:
    answers = _compare(seed=20261204, configs=70, per_config=10, schema=False)
    assert {"allow", "deny"} <= _kinds(answers)
    reasons = {reason for a in answers if isinstance(a, Evaluation) for reason in a.reasons}
    assert "agent_spend: params configures no check, so nothing is allowed" in reasons


def test_the_common_configuration_at_its_edges() -> None:
    """Two checks (a per-asset or "*" cap and a recipient list), every amount length around
    the cap, recipients listed as sent, in other letter case, unlisted, and not strings; and
    (schema off) caps that are not strings, or conflict with "*" (an error in both)."""
    policies = _policies()
    engines = {"old": PolicyEngine(), "new": PolicyEngine()}
    cap = "1000000"
    tables: list[tuple[bool, dict[str, Any]]] = [
        (True, {golden.USDC: cap}),
        (True, {"*": cap}),
        (True, {golden.ETH: "5", "*": cap}),
        (False, {golden.USDC: False, "*": cap}),
        (False, {golden.USDC: 5, "*": cap}),
        (False, {golden.USDC: [cap]}),
        (False, {golden.USDC: "", "*": cap}),
    ]
    amounts = ["0", "1", "999999", "1000000", "1000001", "9999999", "0999999", *ODD_AMOUNTS]
    kinds: set[str] = set()
    for schema, table in tables:
        params = {"max_per_tx": table, "allowed_recipients": [golden.PAYEE, golden.OTHER]}
        if not schema:
            params["allowed_recipients"].append(5)
        for amount in amounts:
            for recipient in [golden.PAYEE, golden.OTHER, golden.OTHER.lower(), golden.ROUTER, 5]:
                for asset in (golden.USDC, golden.USDC_CHECKSUM, golden.WETH):
                    document, _ = golden._action(random.Random(str(amount) + str(recipient)))
                    spend = {"kind": "transfer", "asset": asset, "amount": amount}
                    spend["recipient"] = recipient
                    wasm = {"now": golden.MONDAY_NOON, "spend": spend}
                    old, new = (
                        _answer(engines[s], policies[s, schema], params, document, wasm)
                        for s in ("old", "new")
                    )
                    assert new == old, (params, amount, recipient, asset)
                    kinds.add(new[0] if isinstance(new, tuple) else new.decision)
    assert kinds == {"allow", "deny", "error"}


def test_the_common_checks_beside_falsy_keys_and_odd_spends() -> None:
    """Red team (session 14): the two common checks with the "*" entry conflicting, missing
    or zero, an asset without a cap, lists with non-strings or as an object; beside them keys
    present with falsy values (the no-check rule and the gate test presence), approval_above
    and tiers (``reasons``' else chain); spends of every kind, amounts at the cap with leading
    zeros or another length, assets and recipients in other case, missing or not strings; and
    params that are not an object (the no-check rule's ``object.filter`` on them)."""
    r = random.Random(20261214)
    policies = _policies()
    engines = {"old": PolicyEngine(max_bundles=2), "new": PolicyEngine(max_bundles=2)}
    usdc, upper = golden.USDC, golden.USDC_CHECKSUM
    tables: list[Any] = [
        {usdc: "1000000"},
        {"*": "1000000"},
        {upper: "1000000"},
        {usdc: "1000000", "*": "0"},
        {usdc: "0", "*": "1000000"},
        {golden.ETH: "1000000"},
        {usdc: "1000000", "*": False},
        {usdc: False, "*": "1000000"},  # cap conflicts: an error in both
        {usdc: ""},
        {},
        ["1000000"],
    ]
    payee = golden.PAYEE
    lists: list[Any] = [[payee], [payee.upper().replace("0X", "0x")], [payee, 5], [], [None]]
    lists += [{"a": payee}, [golden.OTHER]]
    extras: list[dict[str, Any]] = [
        {},
        {"approval_above": {usdc: "10"}},
        {"approval_above": {"*": "999999"}, "approvers": [payee]},
        {"tiers": {"high": {usdc: "10"}, "vault": {"*": "1000000"}}},
        {"window_caps": False},
        {"rate_limits": []},
        {"time_windows": 0},
        {"denied_recipients": ""},
        {"allow_plain_transfers": False},
        {"approval_above": {}},
        {"offchain_calls": ["send_email"]},
        {"allowed_functions": []},
    ]
    kinds = ["transfer", "approval", "nft", "native", "unknown_call", "offchain", "TRANSFER", None]
    amounts: list[Any] = ["0", "1", "10", "11", "999999", "1000000", "01000000", "1000001"]
    amounts += ["0999999", "10000000", "", 1000000, None]
    assets: list[Any] = [usdc, upper, golden.ETH, "*", 5]
    recipients: list[Any] = [payee, payee.upper().replace("0X", "0x"), golden.OTHER, 5, None]
    configs: list[Any] = [None, [], "x", 0, {"max_per_tx": False, "allowed_recipients": []}]
    configs += extras  # alone: {}, and keys present with falsy values configure a check
    for _ in range(90):
        configs.append(
            {"max_per_tx": r.choice(tables), "allowed_recipients": r.choice(lists)}
            | r.choice(extras)
        )
    kinds_seen: set[str] = set()
    for params in configs:
        for _ in range(20):
            kind = r.choice(kinds)
            spend = {"kind": kind, "amount": r.choice(amounts), "asset": r.choice(assets)}
            if r.random() < 0.9:
                spend["recipient"] = r.choice(recipients)
            document, _ = golden._action(r)
            if kind == "unknown_call":
                document |= {"to": r.choice([golden.OFFCHAIN, golden.ROUTER]), "data": "0x12"}
                document["decoded_function_signature"] = r.choice(golden.FUNCTIONS)
            wasm = {"now": golden.MONDAY_NOON, "spend": spend, "approved": r.random() < 0.3}
            old, new = (
                _answer(engines[s], policies[s, False], params, document, wasm)
                for s in ("old", "new")
            )
            assert new == old, (params, document, wasm)
            kinds_seen |= _kinds([new])
    assert kinds_seen == {"allow", "deny", "approval_required", "error"}
