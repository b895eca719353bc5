"""The amount helpers (lib/amounts): uint256 arguments compare as numbers, and fail closed.

A uint256 argument reaches Rego as a decimal string. The first custom policy most authors
write, ``input.decoded_function_arguments[1] <= data.params.max``, therefore fails open; the
tests named ``naive`` reproduce that (they pass today and would fail if the engine ever
compared the string as a number, which is when this library could go), and the helper form
denies the same actions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentguard.policies import Policy
from agentguard.policies._engine import PolicyEngine
from agentguard.policies._testkit import erc20, wasm_for

CAP = 5_000_000  # 5 USDC
ENGINE = PolicyEngine()
MAX_UINT = 2**256 - 1

NAIVE = """package shop
import rego.v1
default allow := false
allow if input.decoded_function_arguments[1] <= data.params.max
"""

HELPER = """package shop
import rego.v1
import data.agentguard.lib.amounts
default allow := false
allow if amounts.lte(input.decoded_function_arguments[1], data.params.max)
"""

DENY_FORM = """package shop
import rego.v1
import data.agentguard.lib.amounts
default allow := false
allow if not deny
deny if not amounts.lte(input.decoded_function_arguments[1], data.params.max)
"""


def custom(tmp_path: Path, source: str, includes: list[str] | None = None) -> Policy:
    """A policy folder as an author writes one, loaded the way the network loads it."""
    folder = tmp_path / "shop"
    folder.mkdir(exist_ok=True)
    (folder / "policy.rego").write_text(source)
    meta: dict[str, Any] = {"name": "shop", "entrypoint": "shop.allow"}
    if includes is not None:
        meta["includes"] = includes
    (folder / "policy_metadata.json").write_text(json.dumps(meta))
    return Policy.from_dir(folder)


def decide(policy: Policy, amount: int, cap: Any) -> str:
    intent = erc20(amount)
    return ENGINE.evaluate(
        policy, input=intent.parsed(), params={"max": cap}, wasm=wasm_for(intent)
    ).decision


@pytest.mark.parametrize("cap", [CAP, str(CAP)], ids=["number cap", "string cap"])
def test_naive_comparison_fails_open(tmp_path: Path, cap: Any) -> None:
    """The attack: 10 USDC passes a 5 USDC cap (as text "10000000" <= "5000000"; against a
    number cap the engine lets every string pass)."""
    assert decide(custom(tmp_path, NAIVE), 10_000_000, cap) == "allow"


@pytest.mark.parametrize("source", [HELPER, DENY_FORM], ids=["allow form", "deny form"])
@pytest.mark.parametrize("cap", [CAP, str(CAP)], ids=["number cap", "string cap"])
def test_helper_compares_as_numbers(tmp_path: Path, source: str, cap: Any) -> None:
    policy = custom(tmp_path, source, ["lib/amounts"])
    assert decide(policy, 10_000_000, cap) == "deny"
    assert decide(policy, 9_000_000, cap) == "deny"
    assert decide(policy, MAX_UINT, cap) == "deny"
    assert decide(policy, CAP + 1, cap) == "deny"
    assert decide(policy, CAP, cap) == "allow"
    assert decide(policy, 1_000_000, cap) == "allow"
    assert decide(policy, 0, cap) == "allow"


def test_exact_beyond_doubles(tmp_path: Path) -> None:
    """2^256 - 2 and 2^256 - 1 are the same double; the helper still tells them apart."""
    policy = custom(tmp_path, HELPER, ["lib/amounts"])
    assert decide(policy, MAX_UINT - 1, str(MAX_UINT - 1)) == "allow"
    assert decide(policy, MAX_UINT, str(MAX_UINT - 1)) == "deny"


@pytest.mark.parametrize(
    "cap",
    ["5e6", "05000000", "-1", " 5000000", "0x4c4b40", 5e6 + 0.5, -1, 2**53, True, None, [CAP]],
)
@pytest.mark.parametrize("source", [HELPER, DENY_FORM], ids=["allow form", "deny form"])
def test_a_malformed_cap_denies(tmp_path: Path, source: str, cap: Any) -> None:
    """A cap that is not an exact amount never lets anything through, in either form."""
    policy = custom(tmp_path, source, ["lib/amounts"])
    assert decide(policy, 1, cap) == "deny"


def test_functions_directly(tmp_path: Path) -> None:
    probe = """package shop
import rego.v1
import data.agentguard.lib.amounts
default allow := false
allow if {
\tamounts.lt("9", "10")
\tnot amounts.lt("10", "10")
\tamounts.gte("10", 10)
\tamounts.gt(11, "10")
\tnot amounts.gt("10", "10")
\tamounts.amount(7) == "7"
\tamounts.is_amount("0")
\tnot amounts.is_amount("")
\tnot amounts.is_amount(1.5)
\tnot amounts.lte("x", "1")
}
"""
    assert decide(custom(tmp_path, probe, ["lib/amounts"]), 0, 0) == "allow"


def test_the_library_is_no_bundled_policy() -> None:
    from agentguard.policies import bundled

    assert not any(name.startswith("lib") for name in bundled())
