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
from agentguard.network.registration import Registration
from agentguard.network.registry import Registry
from agentguard.network.state import policy_from_material, policy_material
from agentguard.policies import Policy, policy_id

from ..task_ids import bind
from .conftest import NETCHECK, PAYEE, TOKEN, UNIT, params, transfer

CLIENT = "0x" + "cc" * 20
AGENT = "0x" + "aa" * 20
OWNER = PrivateKey(b"\x07" * 32)


def registration(
    *,
    owner: PrivateKey = OWNER,
    policy: Policy = NETCHECK,
    config: dict[str, Any] | None = None,
    expire_after: int = 300,
    version: int = 1,
    client: str = CLIENT,
) -> dict[str, Any]:
    return Registration.sign(
        owner,
        policy_client=client,
        policy=policy,
        params=params() if config is None else config,
        expire_after=expire_after,
        chain_id=8453,
        version=version,
    ).to_json()


def new_operator(path: str = ":memory:") -> Operator:
    return Operator(PrivateKey(), Registry(path))


@pytest.fixture(scope="module")
def operator() -> Operator:
    return new_operator()


def request(amount: int = UNIT, *, with_policy: bool = True, **override: Any) -> dict[str, Any]:
    intent = transfer(AGENT, amount=amount)
    now = int(time.time())
    spend = intent.spend
    body: dict[str, Any] = {
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
    body["registration"] = registration()
    body.update(override)
    if "expire_after" in override and "expires_at" not in override:
        body["expires_at"] = now + body["expire_after"]
    if "task_id" not in override:
        bind(body)
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
        task_id=bytes.fromhex(body["task_id"][2:]),
        policy_id=pid,
        intent_hash=bytes.fromhex(answer["intent_hash"][2:]),
        allow=True,
        expires_at=body["expires_at"],
    )
    signer = recover_signer(digest, bytes.fromhex(answer["signature"][2:]))
    assert "0x" + signer.hex() == operator.address.lower()


def test_asks_for_policy_code_it_does_not_hold() -> None:
    fresh = new_operator()
    with pytest.raises(RPCError) as missing:
        fresh.evaluate_and_sign(request(with_policy=False))
    assert missing.value.code == -32621
    fresh.evaluate_and_sign(request())
    assert fresh.evaluate_and_sign(request(with_policy=False))["decision"] == "allow"


@pytest.mark.parametrize(
    ("override", "mentions"),
    [
        ({"policy_code_hash": "0x" + "00" * 32}, "is not the registered policy"),
        ({"chain_id": 1}, "chain_id"),
        ({"expires_at": int(time.time()) + 10_000}, "expires_at"),
        ({"expire_after": 0}, "expire_after"),
        ({"task_id": "0x12"}, "task_id"),
        ({"intent": {"from": AGENT}}, "intent"),
        ({"params": {**params(), "max_per_tx": 5}}, "differ from the registered params"),
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
    operator = Operator(key, Registry(":memory:"))
    assert operator.address == address
    secret = key.secret.hex()
    assert secret not in repr(operator) and secret not in str(vars(operator).keys())
    path.write_text("0x" + secret[:-2] + "zz")
    with pytest.raises(ConfigurationError) as bad:
        load_operator_key(str(path), "UNSET_ENV")
    assert secret[:20] not in str(bad.value)


ALLOW_ALL = policy_from_material(
    {
        "name": "evil",
        "entrypoint": "evil.allow",
        "modules": {"p.rego": "package evil\nallow := true"},
    }
)


def test_a_gateway_cannot_choose_the_policy() -> None:
    """Before the fix an operator evaluated any material whose hash matched the code hash the
    gateway itself sent: ``allow := true`` was signed for an 11-unit transfer over the cap."""
    fresh = new_operator()
    fresh.evaluate_and_sign(request())  # the owner's registration is now held
    evil: dict[str, Any] = {
        "policy": policy_material(ALLOW_ALL),
        "policy_code_hash": "0x" + ALLOW_ALL.code_hash.hex(),
        "params": {},
    }
    with pytest.raises(RPCError, match="is not the registered policy"):
        fresh.evaluate_and_sign(request(11 * UNIT, **evil))
    # nor with a registration of the gateway's own making
    forged = registration(owner=PrivateKey(), policy=ALLOW_ALL, config={}, version=2)
    with pytest.raises(RPCError, match="a registration signed by"):
        fresh.evaluate_and_sign(request(11 * UNIT, registration=forged, **evil))
    # nor with the owner's registration edited to name the other policy
    edited = {**registration(), "policy_code_hash": evil["policy_code_hash"], "params": {}}
    with pytest.raises(RPCError, match="not by the owner"):
        fresh.evaluate_and_sign(request(11 * UNIT, registration=edited, **evil))
    assert fresh.evaluate_and_sign(request(11 * UNIT))["decision"] == "deny"


def test_signs_nothing_for_an_unregistered_policy_client() -> None:
    body = request()
    del body["registration"]
    with pytest.raises(RPCError, match="has no registration"):
        new_operator().evaluate_and_sign(body)


@pytest.mark.parametrize(
    ("override", "mentions"),
    [
        ({"params": params(max_per_tx=100 * UNIT)}, "differ from the registered params"),
        ({"params": None}, "differ from the registered params"),
        ({"expire_after": 3600}, "not the registered 300"),
        ({"registration": registration(client="0x" + "dd" * 20)}, "another policy client"),
        ({"registration": "yes"}, "must be an object"),
    ],
)
def test_refuses_anything_but_the_registered_configuration(
    operator: Operator, override: dict[str, Any], mentions: str
) -> None:
    with pytest.raises(RPCError) as refused:
        operator.evaluate_and_sign(request(**override))
    assert refused.value.code == -32602
    assert mentions in refused.value.message


def test_a_held_registration_survives_a_restart_and_cannot_be_rolled_back(tmp_path: Path) -> None:
    """An older registration (looser params) replayed by the gateway is refused, also after
    the operator restarts."""
    path = str(tmp_path / "registry.sqlite3")
    loose = registration(config=params(max_per_tx=100 * UNIT), version=1)
    new_operator(path).evaluate_and_sign(request(registration=registration(version=2)))
    restarted = new_operator(path)
    with pytest.raises(RPCError, match="not newer"):
        restarted.evaluate_and_sign(
            request(50 * UNIT, registration=loose, params=params(max_per_tx=100 * UNIT))
        )
    body = request(50 * UNIT)
    del body["registration"]
    assert restarted.evaluate_and_sign(body)["decision"] == "deny"  # the held one applies


def test_a_replaced_registration_never_reuses_what_the_old_one_implied() -> None:
    """The operator caches what a registration implies (its params' canonical JSON, policy
    id, engine key). After the owner replaces it with tighter params, a task carrying the old
    params is refused, and a task under the new one is judged by, and signed for, the new
    params: a stale cache entry would sign the old policy id or evaluate the old cap."""
    fresh = new_operator()
    loose_params = params(max_per_tx=100 * UNIT)
    loose = registration(config=loose_params, version=1)
    allowed = fresh.evaluate_and_sign(request(50 * UNIT, registration=loose, params=loose_params))
    assert allowed["decision"] == "allow"
    assert allowed["policy_id"] == "0x" + policy_id(CLIENT, NETCHECK, loose_params, 300).hex()
    tight = registration(version=2)
    with pytest.raises(RPCError, match="params differ"):
        fresh.evaluate_and_sign(request(50 * UNIT, registration=tight, params=loose_params))
    denied = fresh.evaluate_and_sign(request(50 * UNIT, registration=tight))
    assert denied["decision"] == "deny"
    assert denied["policy_id"] == "0x" + policy_id(CLIENT, NETCHECK, params(), 300).hex()


@pytest.mark.parametrize(
    "x402",
    [
        {"amount": "0001000000"},
        {"network": "eip155:08453"},
        {"network": "base"},
        {"trusted_merchant": True},
    ],
)
def test_refuses_x402_details_that_are_not_canonical(operator: Operator, x402: Any) -> None:
    """Before the fix such details reached the policy as the client wrote them."""
    canonical = {
        "scheme": "exact",
        "network": "eip155:8453",
        "asset": TOKEN,
        "amount": str(UNIT),
        "pay_to": PAYEE,
        "resource": "",
        "x402_version": 2,
    }
    body = request()
    assert operator.evaluate_and_sign(bind({**body, "wasm": {**body["wasm"], "x402": canonical}}))
    body["wasm"] = {**body["wasm"], "x402": {**canonical, **x402}}
    with pytest.raises(RPCError, match="x402") as refused:
        operator.evaluate_and_sign(body)
    assert refused.value.code == -32602
