"""A registration named by its hash (``registration_hash``) once the operator holds it: the
operator answers exactly what it answers to the full registration, refuses a hash it did not
verify itself (``REGISTRATION_REQUIRED``), and the gateway then resends it in full."""

from __future__ import annotations

import asyncio
import copy
import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard.network._rpc import INVALID_PARAMS, REGISTRATION_REQUIRED, RPCError
from agentguard.network.gateway._operators import Bodies, call_operator
from agentguard.network.operator import Operator
from agentguard.network.registration import Registration
from agentguard.network.registry import Registry

from .conftest import UNIT, params
from .test_operator import CLIENT, registration, request

KEY = PrivateKey(b"\x0b" * 32)
OTHER = "0x" + "dd" * 20


def _hash(raw: dict[str, Any]) -> str:
    return "0x" + Registration.from_json(raw).wire_hash.hex()


def _by_hash(body: dict[str, Any]) -> dict[str, Any]:
    named = copy.deepcopy(body)
    named["registration_hash"] = _hash(named.pop("registration"))
    return named


def _answer(operator: Operator, body: dict[str, Any]) -> Any:
    try:
        return operator.evaluate_and_sign(copy.deepcopy(body), now=body["wasm"]["now"])
    except RPCError as exc:
        return (exc.code, exc.message)


def test_the_hash_is_the_canonical_json_of_every_field() -> None:
    raw = registration()
    held = Registration.from_json(raw)
    assert held.wire_hash == Registration.from_json(json.loads(json.dumps(raw))).wire_hash
    assert held.wire_hash != Registration.from_json(registration(version=2)).wire_hash
    assert held.wire_hash != Registration.from_json(registration(expire_after=301)).wire_hash


def test_a_hash_never_seen_is_asked_for_in_full() -> None:
    operator = Operator(KEY, Registry(":memory:"))
    named = _by_hash(request())
    assert _answer(operator, named)[0] == REGISTRATION_REQUIRED
    operator.evaluate_and_sign(request())  # the gateway resends it in full
    assert _answer(operator, _by_hash(request()))["decision"] == "allow"


@pytest.mark.parametrize("hash_", ["0x12", "cc" * 32, 7, None, "0x" + "zz" * 32])
def test_a_malformed_hash_is_refused(hash_: Any) -> None:
    operator = Operator(KEY, Registry(":memory:"))
    operator.evaluate_and_sign(request())
    body = request()
    del body["registration"]
    body["registration_hash"] = hash_
    assert _answer(operator, body)[0] == INVALID_PARAMS


def test_a_hash_names_one_client_only() -> None:
    """A registration held for another policy client, named for this one: refused exactly as
    its full JSON is (before: a cached full registration skipped this comparison)."""
    operator = Operator(KEY, Registry(":memory:"))
    other = registration(client=OTHER)
    operator.evaluate_and_sign(request(registration=other, policy_client=OTHER))
    full = _answer(operator, request(registration=other))
    assert full == (INVALID_PARAMS, "registration: it is for another policy client")
    assert _answer(operator, _by_hash(request(registration=other))) == full


def test_a_stale_hash_is_refused_like_the_stale_registration() -> None:
    operator = Operator(KEY, Registry(":memory:"))
    loose_params = params(max_per_tx=100 * UNIT)
    loose = registration(config=loose_params, version=1)
    assert operator.evaluate_and_sign(request(registration=loose, params=loose_params))
    operator.evaluate_and_sign(request(registration=registration(version=2)))
    stale = request(50 * UNIT, registration=loose, params=loose_params)
    full = _answer(operator, stale)
    assert full[0] == INVALID_PARAMS and "not newer" in full[1]
    assert _answer(operator, _by_hash(stale)) == full


def test_a_restarted_host_asks_again_and_keeps_every_check(tmp_path: Path) -> None:
    path = str(tmp_path / "registry.sqlite3")
    Operator(KEY, Registry(path)).evaluate_and_sign(request())
    restarted = Operator(KEY, Registry(path))
    assert _answer(restarted, _by_hash(request()))[0] == REGISTRATION_REQUIRED
    assert restarted.evaluate_and_sign(request())["decision"] == "allow"
    assert _answer(restarted, _by_hash(request(50 * UNIT)))["decision"] == "deny"


def test_seeded_requests_by_hash_answer_as_in_full() -> None:
    """A gateway that names what it sent before: same answers and errors as in full, for
    registrations of both clients, several versions, and the params of either."""
    rng = random.Random(11)
    full = Operator(KEY, Registry(":memory:"))
    named = Operator(KEY, Registry(":memory:"))
    choices = [
        (client, version, cap)
        for client in (CLIENT, OTHER)
        for version in (1, 2, 3)
        for cap in (None, 100 * UNIT)
    ]
    held: set[str] = set()
    compared = 0
    for _ in range(120):
        client, version, cap = rng.choice(choices)
        config = params() if cap is None else params(max_per_tx=cap)
        raw = registration(client=client, version=version, config=config)
        body = request(
            rng.choice([UNIT, 50 * UNIT]),
            registration=raw,
            params=rng.choice([config, params()]),
            policy_client=rng.choice([client, client, CLIENT, OTHER]),
        )
        expected = _answer(full, body)
        if _hash(raw) in held:
            got = _answer(named, _by_hash(body))
            compared += 1
        else:
            got = _answer(named, body)
        if isinstance(got, dict):
            held.add(_hash(raw))
        assert got == expected
    assert compared > 20


class _Link:
    """An operator link whose host is ``operator`` itself, in process."""

    def __init__(self, operator: Operator) -> None:
        self.operator = operator
        self.has_code: set[bytes] = set()
        self.has_registration: set[bytes] = set()
        self.http = self
        self.sent: list[dict[str, Any]] = []

    async def post(self, body: bytes, timeout: float) -> tuple[int, bytes]:
        sent = json.loads(body)
        self.sent.append(sent["params"])
        try:
            result = self.operator.evaluate_and_sign(sent["params"])
            return 200, json.dumps({"jsonrpc": "2.0", "id": 1, "result": result}).encode()
        except RPCError as exc:
            return 200, json.dumps({"jsonrpc": "2.0", "id": 1, "error": exc.to_json()}).encode()


def _bodies(body: dict[str, Any]) -> Bodies:
    def part(fields: dict[str, Any]) -> bytes:
        return json.dumps(fields).encode()[1:-1]

    raw = body["registration"]
    lean = {k: v for k, v in body.items() if k in ("policy_client", "policy_code_hash", "params")}
    task = {
        k: body[k] for k in ("task_id", "request_id", "chain_id", "intent", "expires_at", "wasm")
    }
    client: Any = SimpleNamespace(
        request_lean=part({**lean, "expire_after": body["expire_after"]}),
        request_registration=part({"registration": raw}),
        request_reference=part({"registration_hash": _hash(raw)}),
        request_policy=part({"policy": body["policy"]}),
        registration_hash=Registration.from_json(raw).wire_hash,
    )
    return Bodies(client, part(task), bytes.fromhex(body["task_id"][2:]))


def test_the_gateway_sends_the_hash_once_held_and_the_full_registration_when_asked() -> None:
    operator = Operator(KEY, Registry(":memory:"))
    link: Any = _Link(operator)
    code = bytes.fromhex(request()["policy_code_hash"][2:])

    def ask() -> Any:
        return asyncio.run(call_operator(link, code, _bodies(request()), 5.0))

    assert ask()["decision"] == "allow"
    assert ask()["decision"] == "allow"
    first, second = link.sent
    assert "registration" in first and "policy" in first and "registration_hash" not in first
    assert "registration" not in second and "policy" not in second
    assert second["registration_hash"] == _hash(first["registration"])
    link.operator = Operator(KEY, Registry(":memory:"))  # the host restarted
    link.sent.clear()
    assert ask()["decision"] == "allow"
    refused, resent = link.sent
    assert "registration_hash" in refused and "registration" in resent and "policy" in resent
