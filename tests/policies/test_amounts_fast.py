"""lib/amounts reads a string amount with four builtins instead of ``regex.match``; it must
accept exactly what the regex accepted, ``^(0|[1-9][0-9]{0,77})$`` (RE2: ``$`` is the end of
the text), or a policy's cap could accept "007", " 5", "5\\n" or non-ASCII digits. Checked
against that regex in Rego and against Python's ``re.fullmatch``, on seeded fuzzed strings.
"""

from __future__ import annotations

import json
import random
import re

import regopy

from agentguard.policies import load

_REFERENCE = """package reference
import rego.v1
amount(x) := x if {
	is_string(x)
	regex.match(`^(0|[1-9][0-9]{0,77})$`, x)
}
"""
_CANONICAL = re.compile(r"0|[1-9][0-9]{0,77}")


def _strings() -> list[str]:
    r = random.Random(11)
    alphabet = ["0", "1", "9", "5", " ", "\n", "+", "-", "e", "x", ".", "\u0661", "\uff11", "a"]
    found = ["", "0", "00", "01", "10", "5\n", "\n5", " 5", "5 ", "+5", "-0", "0x10", "1e6"]
    found += ["9" * 78, "9" * 79, "1" + "0" * 77, "1" + "0" * 78, "0" * 78, "\u0661\u0662"]
    for _ in range(3000):
        n = r.choice([1, 2, 3, 5, 20, 77, 78, 79, 80])
        digits = [r.choice("0123456789") for _ in range(n)]
        if r.random() < 0.5:  # one foreign character somewhere
            digits[r.randrange(n)] = r.choice(alphabet)
        found.append("".join(digits))
    return found


def _accepted(package: str, values: list[str]) -> list[bool]:
    """Which values ``package.amount`` maps to themselves (as a canonical amount must)."""
    interpreter = regopy.Interpreter()
    interpreter.add_module("reference.rego", _REFERENCE)
    interpreter.add_module("amounts.rego", load("agent_spend").modules["lib/amounts/amounts.rego"])
    interpreter.add_module(
        "probe.rego",
        "package probe\nimport rego.v1\n"
        f"accepted := {{i | some i; s := input.values[i]; {package}.amount(s) == s}}\n",
    )
    interpreter.set_input({"values": values})
    result = interpreter.query("x := data.probe.accepted")
    accepted = set(json.loads(str(result))["bindings"]["x"])
    return [i in accepted for i in range(len(values))]


def test_amount_accepts_exactly_what_the_regex_accepted() -> None:
    values = _strings()
    new = _accepted("data.agentguard.lib.amounts", values)
    old = _accepted("data.reference", values)
    oracle = [_CANONICAL.fullmatch(s) is not None for s in values]
    assert new == old == oracle
    assert sum(new) > 100 and sum(not ok for ok in new) > 100  # both sides are exercised
