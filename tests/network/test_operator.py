"""An operator checks what it is asked to sign, in process (real engine, real keys)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard._attestation import attestation_digest, recover_signer
from agentguard._exceptions import ConfigurationError
from agentguard.network._keys import load_operator_key, write_operator_key
from agentguard.network._rpc import RPCError
from agentguard.network.operator import Operator
from agentguard.network.state import policy_material
from agentguard.policies import policy_id

from .conftest import NETCHECK, UNIT, params, transfer

CLIENT = "0x" + "cc" * 20
AGENT = "0x" + "aa" * 20


@pytest.fixture(scope="module")
def operator() -> Operator:
    return Operator(PrivateKey())


def request(amount: int = UNIT, *, with_policy: bool = True, **override: Any) -> dict[str, Any]:
    intent = transfer(AGENT, amount=amount)
    now = int(time.time())
    spend = intent.spend
    body: dict[str, Any] = {
        "task_id": "0x" + "42" * 32,
        "policy_client": CLIENT,
        "chain_id": 8453,
        "intent": intent.wire(),
        "policy_code_hash": "0x" + NETCHECK.code_hash.hex(),
        "params": params(),
        "expire_after": 300,
        "expires_at": now + 300,
        "wasm": {
            "now": now,
            "intent_hash": "0x" + intent.intent_hash.hex(),
            "approved": False,
            "spend": spend.wasm(),
            "history": {
                w: {"count": 0, "spent": {}, "projected": {spend.asset.lower(): str(spend.amount)}}
                for w in ("60", "3600", "86400")
            },
        },
    }
    if with_policy:
        body["policy"] = policy_material(NETCHECK)
    body.update(override)
    return body


def test_signs_the_documented_digest(operator: Operator) -> None:
    body = request()
    answer = operator.evaluate_and_sign(body)
    assert answer["decision"] == "allow"
    pid = policy_id(CLIENT, NETCHECK, params(), 300)
    assert answer["policy_id"] == "0x" + pid.hex()
    digest = attestation_digest(
        chain_id=8453,
        policy_client=bytes.fromhex(CLIENT[2:]),
        task_id=bytes.fromhex("42" * 32),
        policy_id=pid,
        intent_hash=bytes.fromhex(answer["intent_hash"][2:]),
        allow=True,
        expires_at=body["expires_at"],
    )
    signer = recover_signer(digest, bytes.fromhex(answer["signature"][2:]))
    assert "0x" + signer.hex() == operator.address.lower()


def test_asks_for_policy_code_it_does_not_hold() -> None:
    fresh = Operator(PrivateKey())
    with pytest.raises(RPCError) as missing:
        fresh.evaluate_and_sign(request(with_policy=False))
    assert missing.value.code == -32621
    fresh.evaluate_and_sign(request())
    assert fresh.evaluate_and_sign(request(with_policy=False))["decision"] == "allow"


@pytest.mark.parametrize(
    ("override", "mentions"),
    [
        ({"policy_code_hash": "0x" + "00" * 32}, "does not hash to policy_code_hash"),
        ({"chain_id": 1}, "chain_id"),
        ({"expires_at": int(time.time()) + 10_000}, "expires_at"),
        ({"expire_after": 0}, "expire_after"),
        ({"task_id": "0x12"}, "task_id"),
        ({"intent": {"from": AGENT}}, "intent"),
        ({"params": {**params(), "max_per_tx": 5}}, "schema"),
        ({"wasm": None}, "wasm"),
    ],
)
def test_refuses_inconsistent_requests(
    operator: Operator, override: dict[str, Any], mentions: str
) -> None:
    with pytest.raises(RPCError) as refused:
        operator.evaluate_and_sign(request(**override))
    assert refused.value.code == -32602
    assert mentions in refused.value.message


@pytest.mark.parametrize(
    ("field", "value", "mentions"),
    [
        ("intent_hash", "0x" + "00" * 32, "different intent"),
        (
            "spend",
            {"asset": "0x" + "00" * 20, "amount": "1", "recipient": "0x" + "22" * 20},
            "spend",
        ),
        ("now", int(time.time()) - 3600, "current time"),
    ],
)
def test_refuses_wasm_about_something_else(
    operator: Operator, field: str, value: Any, mentions: str
) -> None:
    body = request()
    body["wasm"] = {**body["wasm"], field: value}
    with pytest.raises(RPCError) as refused:
        operator.evaluate_and_sign(body)
    assert mentions in refused.value.message


def test_the_key_never_shows(tmp_path: Path) -> None:
    path = tmp_path / "op.key"
    address = write_operator_key(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    key = load_operator_key(str(path), "UNSET_ENV")
    operator = Operator(key)
    assert operator.address == address
    secret = key.secret.hex()
    assert secret not in repr(operator) and secret not in str(vars(operator).keys())
    path.write_text("0x" + secret[:-2] + "zz")
    with pytest.raises(ConfigurationError) as bad:
        load_operator_key(str(path), "UNSET_ENV")
    assert secret[:20] not in str(bad.value)
