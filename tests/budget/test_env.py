"""``Guard.from_env``: every documented variable, every malformed one named in the error, and
the agent's key never in a repr, a log line or an exception."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest

from agentguard import AsyncGuard, Budget, ConfigurationError, Guard
from agentguard._env import VARIABLES, connect_options
from agentguard.audit import AuditLog
from agentguard.ledger import Ledger
from agentguard.policies import load, policy_id

KEY = "0x" + "5e" * 32  # the agent's key: must never be seen again
CLIENT = "0x00000000000000000000000000000000000c0dE1"
OPS = [
    "0x1111111111111111111111111111111111111111",
    "0x2222222222222222222222222222222222222222",
    "0x3333333333333333333333333333333333333333",
]
PID = "0x" + "ab" * 32
DUPLICATE = f" {OPS[0]}, {OPS[1]} ,0x{OPS[0][2:].upper()}"  # spaces trimmed; case does not hide it
BAD_CHECKSUM = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD".replace("A", "a", 1)  # one letter off
DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def env(**extra: str) -> dict[str, str]:
    base = {
        "AGENTGUARD_GATEWAY_URL": "http://127.0.0.1:9",
        "AGENTGUARD_POLICY_CLIENT": CLIENT,
        "AGENTGUARD_OPERATORS": ",".join(OPS),
        "AGENTGUARD_POLICY_ID": PID,
    }
    base.update({f"AGENTGUARD_{k}": v for k, v in extra.items()})
    return {k: v for k, v in base.items() if v != "<unset>"}


def test_the_minimum_connects_with_empty_defaults() -> None:
    guard = Guard.from_env(env())
    assert guard.verifier.policy_id == bytes.fromhex(PID[2:])
    assert guard.defaults.signer is None and guard.defaults.limits is None
    assert guard.defaults.chain_id == 8453


def test_everything_from_the_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "agent.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    guard = Guard.from_env(
        env(
            PRIVATE_KEY_FILE=str(key_file),
            API_KEY="s3cret-api-key",
            THRESHOLD="100",
            RPC_URL="http://127.0.0.1:8545",
            CHAIN_ID="84532",
            LEDGER=str(tmp_path / "spend.db"),
            AUDIT_LOG=str(tmp_path / "audit.jsonl"),
            BUDGET="20 USDC per day; 5 USDC per call\n10 calls per minute",
            VAULT="0x" + "77" * 20,
        )
    )
    d = guard.defaults
    assert d.signer is not None and d.signer.address.lower() == _address_of(KEY)
    assert d.chain_id == 84532
    assert d.budget == Budget(
        "20 USDC per day", "5 USDC per call", "10 calls per minute", chain_id=84532
    )
    assert d.limits == d.budget.limits()
    assert isinstance(d.ledger, Ledger) and isinstance(d.audit, AuditLog)
    assert d.vault == "0x" + "77" * 20 and d.agent == d.vault
    assert d.web3 is not None
    assert guard.verifier.threshold == 3  # 100 % of 3


def _address_of(key: str) -> str:
    from eth_account import Account

    return str(Account.from_key(key).address).lower()


def test_the_policy_can_be_computed_from_the_budget() -> None:
    budget = Budget("20 USDC per day", "5 USDC per call")
    guard = Guard.from_env(
        env(POLICY_ID="<unset>", POLICY="agent_spend", BUDGET="20 USDC per day; 5 USDC per call",
            EXPIRE_AFTER="600")
    )  # fmt: skip
    assert guard.verifier.policy_id == policy_id(CLIENT, load("agent_spend"), budget.params(), 600)


def test_any_policy_is_explicit_and_loud(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        guard = AsyncGuard.from_env(env(POLICY_ID="<unset>", ANY_POLICY="1"))
    assert guard.verifier.policy_id is None
    assert "ANY policy" in caplog.text


def test_os_environ_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env(BUDGET="1 USDC per call").items():
        monkeypatch.setenv(name, value)
    assert Guard.from_env().defaults.budget == Budget("1 USDC per call")


@pytest.mark.parametrize(
    ("extra", "names", "says"),
    [
        ({"GATEWAY_URL": "<unset>"}, "AGENTGUARD_GATEWAY_URL", "is not set"),
        ({"GATEWAY_URL": "ftp://x"}, "AGENTGUARD_GATEWAY_URL", "http:// or https://"),
        ({"POLICY_CLIENT": "0x123"}, "AGENTGUARD_POLICY_CLIENT", "0x + 40 hex"),
        # unset means Newton (BLS), which needs the chain
        ({"OPERATORS": "<unset>"}, "AGENTGUARD_OPERATORS", "AGENTGUARD_RPC_URL"),
        ({"OPERATORS": f"{OPS[0]},,{OPS[1]}"}, "AGENTGUARD_OPERATORS", "item 2 is empty"),
        ({"OPERATORS": DUPLICATE}, "AGENTGUARD_OPERATORS", "item 3 repeats item 1"),
        ({"OPERATORS": f"{OPS[0]} {OPS[1]}"}, "AGENTGUARD_OPERATORS", "item 1 is not an address"),
        ({"OPERATORS": BAD_CHECKSUM}, "AGENTGUARD_OPERATORS", "wrong EIP-55 checksum"),
        ({"POLICY_ID": "0x1234"}, "AGENTGUARD_POLICY_ID", "64 hex digits"),
        ({"POLICY_ID": "<unset>"}, "AGENTGUARD_POLICY_ID", "AGENTGUARD_ANY_POLICY=1"),
        ({"ANY_POLICY": "1"}, "AGENTGUARD_POLICY_ID / AGENTGUARD_ANY_POLICY", "set only one"),
        ({"POLICY_ID": "<unset>", "ANY_POLICY": "maybe"}, "AGENTGUARD_ANY_POLICY", "1 or 0"),
        (
            {"POLICY_ID": "<unset>", "POLICY": "agent_spend"},
            "AGENTGUARD_POLICY",
            "AGENTGUARD_BUDGET",
        ),
        (
            {"POLICY_ID": "<unset>", "POLICY": "nope", "BUDGET": "1 USDC per call"},
            "AGENTGUARD_POLICY",
            "bundled policies are",
        ),
        ({"EXPIRE_AFTER": "600"}, "AGENTGUARD_EXPIRE_AFTER", "only used with AGENTGUARD_POLICY"),
        ({"THRESHOLD": "0"}, "AGENTGUARD_THRESHOLD", "from 1 to 100"),
        ({"THRESHOLD": "66.6"}, "AGENTGUARD_THRESHOLD", "from 1 to 100"),
        ({"CHAIN_ID": "-1"}, "AGENTGUARD_CHAIN_ID", "whole number"),
        ({"CHAIN_ID": "0x2105"}, "AGENTGUARD_CHAIN_ID", "whole number"),
        ({"BUDGET": "20 USDC per fortnight"}, "AGENTGUARD_BUDGET", "per 14 days"),
        (
            {"BUDGET": "5 USDC per day", "CHAIN_ID": "1"},
            "AGENTGUARD_BUDGET",
            "no token 'USDC' on chain 1",
        ),
        ({"RPC_URL": "127.0.0.1:8545"}, "AGENTGUARD_RPC_URL", "http:// or https://"),
        ({"LEDGER": "/nonexistent/dir/spend.db"}, "AGENTGUARD_LEDGER", "does not exist"),
        ({"AUDIT_LOG": "/nonexistent/dir/a.jsonl"}, "AGENTGUARD_AUDIT_LOG", "does not exist"),
        ({"VAULT": "vault"}, "AGENTGUARD_VAULT", "0x + 40 hex"),
        ({"PRIVATE_KEY": "0x1234"}, "AGENTGUARD_PRIVATE_KEY", "not a valid private key"),
        ({"PRIVATE_KEY_FILE": "/nonexistent/key"}, "AGENTGUARD_PRIVATE_KEY_FILE", "cannot read"),
        (
            {"PRIVATE_KEY": KEY, "PRIVATE_KEY_FILE": "/x"},
            "AGENTGUARD_PRIVATE_KEY_FILE or",
            "not both",
        ),
    ],
)
def test_a_malformed_variable_is_named(extra: dict[str, str], names: str, says: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Guard.from_env(env(**extra))
    assert names in str(info.value) and says in str(info.value)


def test_a_typo_in_a_name_is_logged_with_the_right_one(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        guard = Guard.from_env(env(BUDGT="1 USDC per call"))
    assert guard.defaults.budget is None
    assert "AGENTGUARD_BUDGT" in caplog.text and "AGENTGUARD_BUDGET" in caplog.text
    assert "1 USDC" not in caplog.text  # the value is not logged


def test_empty_values_count_as_unset() -> None:
    assert Guard.from_env(env(BUDGET="", PRIVATE_KEY="  ")).defaults.signer is None


# -- the key never leaves -------------------------------------------------------------------


def _key_forms(key: str) -> list[str]:
    body = key.removeprefix("0x")
    return [body, body.upper(), body[:16], body[-16:]]


def _assert_no_key(text: str, key: str = KEY) -> None:
    for form in _key_forms(key):
        assert form.lower() not in text.lower(), "the private key leaked"


@pytest.mark.parametrize(
    "misplaced",
    ["POLICY_CLIENT", "OPERATORS", "VAULT", "BUDGET", "THRESHOLD", "CHAIN_ID", "GATEWAY_URL",
     "RPC_URL", "POLICY", "ANY_POLICY", "EXPIRE_AFTER"],
)  # fmt: skip
def test_a_key_pasted_into_the_wrong_variable_is_not_echoed(
    misplaced: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A key in the wrong variable (a shell history slip) would be echoed by an error that
    quotes the value ("AGENTGUARD_VAULT '0x5e5e…' is not an address"), and from there reach
    whatever logs the agent's exceptions. Every error is masked."""
    other = "0x" + "c4" * 32  # a fresh key, never registered as a secret by a Signer
    extra = {misplaced: other}
    if misplaced in ("POLICY", "ANY_POLICY"):
        extra["POLICY_ID"] = "<unset>"
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigurationError) as info:
        Guard.from_env(env(**extra))
    _assert_no_key(str(info.value) + repr(info.value) + caplog.text, other)
    assert f"AGENTGUARD_{misplaced}" in str(info.value)


def test_a_key_in_a_budget_rule_is_masked(caplog: pytest.LogCaptureFixture) -> None:
    other = "0x" + "d7" * 32
    for rule in (f"{other} per day", f"5 USDC per {other}", f"5 {other} per day"):
        with caplog.at_level(logging.DEBUG), pytest.raises(ConfigurationError) as info:
            Guard.from_env(env(BUDGET=rule))
        _assert_no_key(str(info.value) + caplog.text, other)


def test_the_key_is_in_no_repr_log_or_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key_file = tmp_path / "agent.key"
    key_file.write_text(KEY)
    key_file.chmod(0o644)  # readable by others: warned about, path only
    with caplog.at_level(logging.DEBUG):
        from_file = Guard.from_env(env(PRIVATE_KEY_FILE=str(key_file), BUDGET="1 USDC per call"))
        inline = Guard.from_env(env(PRIVATE_KEY=KEY, API_KEY="api-key-123456"))
    assert "chmod 600" in caplog.text
    seen = [caplog.text]
    for guard in (from_file, inline):
        seen += [repr(guard), repr(guard.defaults), str(guard.defaults), repr(guard.authorizer)]
        seen += [repr(connect_options(env(PRIVATE_KEY=KEY)))]
    # errors raised after the key was read (a later variable malformed) do not carry it either
    for bad in ({"VAULT": "nope"}, {"BUDGET": "5 USDC per fortnight"}, {"CHAIN_ID": "x"}):
        with pytest.raises(ConfigurationError) as info:
            Guard.from_env(env(PRIVATE_KEY=KEY, **bad))
        seen += [str(info.value), repr(info.value), repr(info.value.__context__)]
        assert info.value.__cause__ is None
    # a wrong key: the message says which variable, never the value
    wrong = "0x" + "ff" * 32  # above the curve order: not a valid key
    with pytest.raises(ConfigurationError) as info:
        Guard.from_env(env(PRIVATE_KEY=wrong))
    assert info.value.__cause__ is None and info.value.__suppress_context__
    _assert_no_key(str(info.value) + repr(info.value), wrong)
    for text in seen:
        _assert_no_key(text)
    assert "api-key-123456" not in "".join(seen)


def test_the_docs_table_lists_exactly_the_variables() -> None:
    documented = set(re.findall(r"^\| `(AGENTGUARD_[A-Z_]+)` \|", DOCS.read_text(), re.M))
    assert documented == set(VARIABLES)


def test_the_environment_is_not_modified() -> None:
    before = dict(os.environ)
    Guard.from_env(env(BUDGET="1 USDC per call"))
    assert dict(os.environ) == before


@pytest.mark.parametrize("index", range(3))
def test_the_docs_code_blocks_run(index: int) -> None:
    import subprocess
    import sys

    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) == 3
    done = subprocess.run(
        [sys.executable, "-c", blocks[index]], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("value", ["²", "\uff16\uff16", "1" * 21, " 66 x"])
def test_numbers_are_ascii_and_bounded(value: str) -> None:
    """Before: "²" passed ``str.isdigit()`` and ``int()`` raised a bare ValueError."""
    with pytest.raises(ConfigurationError, match="AGENTGUARD_THRESHOLD"):
        Guard.from_env(env(THRESHOLD=value))


def test_a_non_text_value_is_named() -> None:
    with pytest.raises(ConfigurationError, match="AGENTGUARD_THRESHOLD: an environment value"):
        Guard.from_env({**env(), "AGENTGUARD_THRESHOLD": 66})  # type: ignore[dict-item]
