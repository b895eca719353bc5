"""Red team, lib/amounts: a deny rule written with the helpers must never fail open.

A Rego function called with an undefined argument is itself undefined, whatever its body says.
So ``deny if amounts.above(x, data.params.max)`` — the form the library recommended for deny
rules — is undefined when the cap is missing (a typo in the params key, params never set) and
nothing is denied: the policy allowed 10 USDC with no cap at all. The library no longer
offers ``above``, and the documented deny form is ``deny if not amounts.lte(x, cap)``:
``not`` of an undefined expression is true, so a missing amount or cap denies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import agentguard.policies
from agentguard.policies import Policy
from agentguard.policies._engine import PolicyEngine
from agentguard.policies._testkit import erc20, wasm_for

ENGINE = PolicyEngine()
LIB = Path(agentguard.policies.__file__).parent / "lib" / "amounts"
HEAD = """package shop
import rego.v1
import data.agentguard.lib.amounts
default allow := false
allow if not deny
"""
ABOVE = HEAD + "deny if amounts.above(input.decoded_function_arguments[1], data.params.max)\n"
NOT_LTE = HEAD + "deny if not amounts.lte(input.decoded_function_arguments[1], data.params.max)\n"
MISSING_ARG = (
    HEAD + "deny if not amounts.lte(input.decoded_function_arguments[7], data.params.max)\n"
)


def policy(tmp_path: Path, source: str) -> Policy:
    folder = tmp_path / "shop"
    folder.mkdir(parents=True)
    (folder / "policy.rego").write_text(source)
    meta = {"name": "shop", "entrypoint": "shop.allow", "includes": ["lib/amounts"]}
    (folder / "policy_metadata.json").write_text(json.dumps(meta))
    return Policy.from_dir(folder)


def decide(p: Policy, params: dict[str, Any]) -> str:
    intent = erc20(10_000_000)
    try:
        return ENGINE.evaluate(
            p, input=intent.parsed(), params=params, wasm=wasm_for(intent)
        ).decision
    except Exception:  # a policy that does not compile is never evaluated: nothing is signed
        return "deny"


@pytest.mark.parametrize("params", [{}, {"maxx": 5_000_000}], ids=["no params", "typo"])
def test_a_function_call_deny_rule_fails_open_on_a_missing_cap(
    tmp_path: Path, params: dict[str, Any]
) -> None:
    """The attack: no cap, 10 USDC, ``deny if amounts.above(...)`` (the deny form the library
    offered and documented before the fix) is allowed. No library change can fix that form
    (the engine never runs a function body for an undefined argument, and rego-cpp treats an
    unknown function as undefined too), so the library no longer offers it."""
    assert decide(policy(tmp_path, ABOVE), params) == "allow"
    source = (LIB / "amounts.rego").read_text()
    assert "\nabove(" not in source
    assert "deny if not amounts.lte(x, cap)" in source


@pytest.mark.parametrize("params", [{}, {"maxx": 5_000_000}, {"max": None}, {"max": "5e6"}])
def test_the_documented_deny_form_denies_a_missing_or_malformed_cap(
    tmp_path: Path, params: dict[str, Any]
) -> None:
    assert decide(policy(tmp_path, NOT_LTE), params) == "deny"


def test_the_documented_deny_form_denies_a_missing_amount(tmp_path: Path) -> None:
    assert decide(policy(tmp_path, MISSING_ARG), {"max": "5000000"}) == "deny"


def test_the_documented_deny_form_still_allows_under_the_cap(tmp_path: Path) -> None:
    assert decide(policy(tmp_path, NOT_LTE), {"max": "10000000"}) == "allow"
    assert decide(policy(tmp_path / "b", NOT_LTE), {"max": "9999999"}) == "deny"


@pytest.mark.parametrize(
    "value",
    ["5\n", "\n5", "+5", "\u0663", "\uff15", "5 ", "0x10", "1e6", "-0", "00", "5\x00", -1, 0.5],
)
def test_no_lookalike_amount_passes(tmp_path: Path, value: Any) -> None:
    """Trailing newline (``$`` in some regex dialects), Arabic-Indic / full-width digits, sign,
    hex, exponent, NUL: none is an amount, so none is under any cap."""
    assert decide(policy(tmp_path, NOT_LTE), {"max": value}) == "deny"
