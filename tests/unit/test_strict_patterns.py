"""Every anchored pattern that reads hex, addresses, amounts or names refuses a final newline.

``$`` also matches just before a final ``\\n`` (and ``bytes.fromhex`` skips it), so a
man in the middle could re-spell a signed value; ``\\Z`` ends the string for real.
"""

from __future__ import annotations

import re

import pytest

from agentguard import _env, _gateway, _guard, _signer, _tiers, _units
from agentguard.network import approvals, config, operator, registration
from agentguard.network.gateway import _params
from agentguard.policies import _engine

ADDR = "0x" + "aB" * 20
B32 = "0x" + "cd" * 32
SIG = "0x" + "ef" * 65

CASES: list[tuple[re.Pattern[str], str]] = [
    (_env._ADDRESS, ADDR),
    (_env._POLICY_ID, B32),
    (_gateway._QUORUM_NUMBER, "0x01"),
    (_guard._POLICY_ID, B32),
    (_signer._ADDRESS_RE, ADDR),
    (_tiers._AMOUNT, "5000000"),
    (_tiers._ASSET, ADDR.lower()),
    (_units._ADDRESS, ADDR),
    (_units._SYMBOL, "USDC"),
    (approvals._ADDR, ADDR),
    (approvals._B32, B32),
    (approvals._SIG, SIG),
    (config._ADDR, ADDR),
    (config._SHA256, "ab" * 32),
    (operator._B32, B32),
    (operator._ADDR, ADDR),
    (registration._ADDR, ADDR),
    (registration._B32, B32),
    (registration._SIG, SIG),
    (_params.ADDR, ADDR),
    (_params.B32, B32),
    (_params.HEX, SIG),
    (_engine._IDENT, "allow_rule"),
]


@pytest.mark.parametrize(("pattern", "valid"), CASES, ids=lambda v: getattr(v, "pattern", v))
def test_a_final_newline_is_refused(pattern: re.Pattern[str], valid: str) -> None:
    assert pattern.match(valid)
    assert pattern.match(valid + "\n") is None
    assert pattern.fullmatch(valid + "\n") is None


def test_an_amount_with_a_final_newline_reads_as_written() -> None:
    # the human amount pattern allows surrounding whitespace on purpose
    assert _units._AMOUNT.match("5 USDC\n")
