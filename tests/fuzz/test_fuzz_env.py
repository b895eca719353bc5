"""Fuzz: ``Guard.from_env``'s reader of ``AGENTGUARD_*`` variables (``connect_options``).

The environment is typed by people (and by deployment templates): every malformed value must
be a ``ConfigurationError`` naming the variable, and no secret value (the API key, the private
key, the RPC URL that embeds a provider key), wherever it was pasted, may appear in it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import web3  # noqa: F401  # up front: its py_ecc raises the recursion limit when imported
from hypothesis import given
from hypothesis import strategies as st

from agentguard._env import connect_options
from agentguard._exceptions import ConfigurationError
from agentguard._redact import _known

from .hostile import budget, outcome

PRIVATE_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
API_KEY = "agk_live_7f3a9c2e5b8d1f4a6c0e9b2d7f5a3c8e"
RPC_URL = "https://base-mainnet.example.com/v2/rpcsecretprovidertoken42"
OPERATORS = [
    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
    "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
]
VALID = {
    "AGENTGUARD_GATEWAY_URL": "http://127.0.0.1:8550",
    "AGENTGUARD_API_KEY": API_KEY,
    "AGENTGUARD_POLICY_CLIENT": "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
    "AGENTGUARD_OPERATORS": ",".join(OPERATORS),
    "AGENTGUARD_THRESHOLD": "66",
    "AGENTGUARD_POLICY_ID": "0x" + "ab" * 32,
    "AGENTGUARD_PRIVATE_KEY": PRIVATE_KEY,
    "AGENTGUARD_RPC_URL": RPC_URL,
    "AGENTGUARD_CHAIN_ID": "8453",
}
SECRETS = [PRIVATE_KEY, API_KEY, RPC_URL, "rpcsecretprovidertoken42"]

_VALUES = st.one_of(
    st.sampled_from([*VALID.values(), *SECRETS, PRIVATE_KEY[2:].upper(), " " + API_KEY + " "]),
    st.sampled_from(["", " ", "0", "1", "true", "maybe", "-1", "99999999999999999999999", "²"]),
    st.sampled_from(["http://10.0.0.1:8550", "https://[::1", "ftp://x", "http://user:pw@host"]),
    st.sampled_from([",".join([*OPERATORS, OPERATORS[0]]), OPERATORS[0].lower() + ",,", "0x1"]),
    st.sampled_from(["5 USDC per call", "10 USDC per day; 1 ETH per tx", "9e99 USDC per day"]),
    st.sampled_from(["agent_spend", "tx_cap", "nope", "../../etc/passwd"]),
    st.text(max_size=40),
    st.sampled_from(SECRETS).map(lambda s: f"oops {s} pasted here"),
)
_NAMES = st.sampled_from(
    [
        *VALID,
        "AGENTGUARD_POLICY",
        "AGENTGUARD_BUDGET",
        "AGENTGUARD_EXPIRE_AFTER",
        "AGENTGUARD_ANY_POLICY",
        "AGENTGUARD_VAULT",
        "AGENTGUARD_LEDGER",
        "AGENTGUARD_AUDIT_LOG",
        "AGENTGUARD_PRIVATE_KEY_FILE",
        "AGENTGUARD_GATEWAY_URI",
    ]
)


@pytest.fixture(autouse=True)
def _forget_registered_secrets() -> Iterator[None]:
    """``connect_options`` registers secrets process-wide for redaction; a fuzz run must not
    leave hundreds of random strings masked in every later test's logs."""
    before = set(_known)
    yield
    _known.intersection_update(before)


def _with_paths(env: dict[str, str], tmp: Path) -> dict[str, str]:
    """Paths stay inside a temporary folder (the reader opens and creates files)."""
    for name in ("AGENTGUARD_LEDGER", "AGENTGUARD_AUDIT_LOG", "AGENTGUARD_PRIVATE_KEY_FILE"):
        if name in env and env[name].strip():
            env[name] = str(tmp / (Path(env[name].strip()).name or "x")[:60].replace("\x00", ""))
    key_file = tmp / "agent.key"
    key_file.write_text(PRIVATE_KEY)
    if env.get("AGENTGUARD_PRIVATE_KEY_FILE") == str(tmp / "agent.key"):
        key_file.chmod(0o600)
    return env


@budget(250)
@given(
    st.dictionaries(_NAMES, _VALUES, max_size=6),
    st.lists(st.sampled_from(sorted(VALID)), max_size=3),
)
def test_environments(changes: dict[str, str], removed: list[str]) -> None:
    env: dict[str, Any] = {k: v for k, v in VALID.items() if k not in removed}
    env.update(changes)
    before = set(_known)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = _with_paths(env, Path(tmp))
            outcome(connect_options, env, allowed=ConfigurationError, secrets=SECRETS)
    finally:
        _known.intersection_update(before)


@budget(60)
@given(st.sampled_from(sorted(VALID)), st.one_of(st.integers(), st.none(), st.binary(max_size=8)))
def test_non_text_values(name: str, value: Any) -> None:
    """A mapping built in code (not ``os.environ``) may hold non-strings."""
    outcome(connect_options, {**VALID, name: value}, allowed=ConfigurationError, secrets=SECRETS)


_RULE_WORDS = st.sampled_from(
    [
        "5",
        "0.5",
        "1e3",
        "-1",
        "9" * 90,
        "0x10",
        "USDC",
        "ETH",
        "usdc",
        "OPG",
        "DAI",
        "per",
        "a",
        "call",
        "day",
        "hour",
        "week",
        "tx",
        "month",
        "/",
        ";",
        ",",
        "and",
        "0.0000001",
        "∞",
        "½",
    ]
)


@budget(200)
@given(
    st.one_of(
        st.lists(_RULE_WORDS, max_size=8).map(" ".join),
        st.text(max_size=60),
    )
)
def test_budget_rules(text: str) -> None:
    """``AGENTGUARD_BUDGET`` (and ``Budget("...")``) is text a person typed."""
    from agentguard import Budget

    outcome(Budget, text, allowed=ConfigurationError)
