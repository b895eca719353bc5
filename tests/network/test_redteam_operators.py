"""Red team: a hostile gateway (it holds the operators' bearer tokens) talking straight to the
REAL operator processes."""

from __future__ import annotations

import os
import time
from typing import Any

import httpx
import pytest

from agentguard import Attestation, TransactionIntent, Verifier
from agentguard._exceptions import IntentMismatch
from agentguard.network._rpc import RPCError
from agentguard.network.launcher import OperatorProcess, ReferenceNetwork
from agentguard.network.operator import CLOCK_SKEW
from agentguard.network.state import policy_material

from ..task_ids import bind
from .conftest import NETCHECK, UNIT, fresh_agent, fresh_client, params, transfer
from .test_hostile_gateway import evaluate


def registered_task(
    client: str, intent: TransactionIntent, task_id: str, **changes: Any
) -> dict[str, Any]:
    """A consistent request under the registration the operators hold for ``client``; its task
    id derived (``tests.task_ids.bind``) from ``task_id`` as the request id."""
    now = int(time.time())
    body = {
        "task_id": task_id,
        "policy_client": client,
        "chain_id": 8453,
        "intent": intent.wire(),
        "policy_code_hash": "0x" + NETCHECK.code_hash.hex(),
        "policy": policy_material(NETCHECK),
        "params": params(),
        "expire_after": 300,
        "expires_at": now + 300,
        "wasm": {
            "now": now,
            "intent_hash": "0x" + intent.intent_hash.hex(),
            "approved": False,
            "spend": intent.spend.wasm(),
            "history": {},
        },
    }
    body.update(changes)
    return bind(body, request_id=task_id or None)


def test_an_operator_signs_one_task_id_for_one_intent_only(
    network: ReferenceNetwork, client: str
) -> None:
    """Operators do not see how the gateway derives task ids. Before the fix a lying gateway
    got every operator to sign the same task id for two different intents (here 1 unit to the
    payee, then 9 units to itself): the vault's ``taskUsed``, a vault payment's EIP-3009 nonce,
    the SDK's replay guard and the gateway's records all take a task id to name one intent."""
    other_client = fresh_client()
    network.register_policy_client(other_client, NETCHECK, params())
    agent = fresh_agent()
    rid = "7a" * 32
    first, second = transfer(agent, 1), transfer(agent, 9, recipient="0x" + "66" * 20)
    task_id = registered_task(client, first, rid)["task_id"]
    for op in network.operators:
        signed = evaluate(op, registered_task(client, first, rid))["result"]
        assert signed["decision"] == "allow"
        # a retry of the same intent under the same task id is fine (hedging, lost answers)
        assert evaluate(op, registered_task(client, first, rid))["result"]["decision"] == ("allow")
        # the task id now derives from the intent: another intent under it is refused before
        # the memory of signed ids is even asked
        lie = dict(registered_task(client, second, rid), task_id=task_id)
        refused = evaluate(op, lie)["error"]
        assert refused["code"] == -32602 and "task_id is not keccak" in refused["message"]
        # nor for the same intent of another policy client
        lie = dict(registered_task(other_client, first, rid), task_id=task_id)
        other = evaluate(op, lie)["error"]
        assert other["code"] == -32602 and "task_id is not keccak" in other["message"], other


def test_data_wasm_carries_only_what_a_gateway_sends(
    network: ReferenceNetwork, client: str
) -> None:
    """Before the fix an operator signed with any extra key in ``data.wasm`` (here
    ``trusted_merchant``), which a policy could read as if the network had vouched for it, and
    with ``approved``/``history`` of any type."""
    intent = transfer(fresh_agent(), 1)
    for extra, mentions in [
        ({"trusted_merchant": True}, "keys no gateway sends: 'trusted_merchant'"),
        ({"approved": "yes"}, "approved must be a bool"),
        ({"history": []}, "history an object"),
    ]:
        body = registered_task(client, intent, os.urandom(16).hex())
        body["wasm"] = {**body["wasm"], **extra}
        for op in network.operators:
            refused = evaluate(op, body)["error"]
            assert refused["code"] == -32602 and mentions in refused["message"], refused


def test_the_expiry_is_the_registered_lifetime_after_the_time_the_policy_saw(
    network: ReferenceNetwork, client: str
) -> None:
    """Before the fix a gateway could tell the policy one time and sign an expiry 30 s later
    than the registered lifetime allows from it (330 s for a 300 s registration)."""
    intent = transfer(fresh_agent(), 1)
    body = registered_task(client, intent, os.urandom(16).hex())
    body["expires_at"] = body["wasm"]["now"] + 330
    for op in network.operators:
        refused = evaluate(op, body)["error"]
        assert refused["code"] == -32602 and "data.wasm.now + expire_after" in refused["message"]


def hold(op: OperatorProcess, registration: dict[str, Any]) -> dict[str, Any]:
    token = op.token_file.read_text().strip()
    envelope = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "agentguard_holdRegistration",
        "params": {"registration": registration},
    }
    answer: dict[str, Any] = httpx.post(
        op.url, json=envelope, headers={"authorization": f"Bearer {token}"}
    ).json()
    return answer


def test_a_quorum_that_missed_a_re_registration_is_stopped_by_the_pin(
    network: ReferenceNetwork,
) -> None:
    """The limit of catch-up: a gateway that withholds the owner's newer registration from
    operators that missed it can get those operators to sign under the older one (looser
    params) if they are a quorum. An up-to-date operator refuses the older registration, and
    the pinned policy id (``Guard.connect``, the vault's ``policyId``) refuses the result."""
    client = fresh_client()
    loose = network.sign_registration(client, NETCHECK, params(max_per_tx=100 * UNIT))
    tight = network.sign_registration(client, NETCHECK, params(max_per_tx=UNIT))
    for op in network.operators:
        assert "result" in hold(op, loose["registration"])
    assert "result" in hold(network.operators[0], tight["registration"])  # 1 and 2 missed it
    intent = transfer(fresh_agent(), 50 * UNIT)
    body = registered_task(
        client,
        intent,
        "0x" + os.urandom(32).hex(),
        params=params(max_per_tx=100 * UNIT),
        registration=loose["registration"],
    )
    refused = evaluate(network.operators[0], body)["error"]
    assert refused["code"] == -32602 and "not newer" in refused["message"], refused
    answers = [evaluate(op, body)["result"] for op in network.operators[1:]]
    assert [a["decision"] for a in answers] == ["allow", "allow"]
    attestation = Attestation.model_validate(
        {
            "scheme": "ecdsa",
            "decision": "allow",
            "task_id": body["task_id"],
            "policy_id": answers[0]["policy_id"],
            "policy_client": client,
            "intent_hash": body["wasm"]["intent_hash"],
            "expires_at": body["expires_at"],
            "signatures": [
                {"operator": a["operator"], "signature": a["signature"]} for a in answers
            ],
        }
    )
    pinned = Verifier(
        network.operator_addresses,
        policy_client=client,
        policy_id=tight["registration"]["policy_id"],
    )
    with pytest.raises(IntentMismatch, match="policy id"):
        pinned.verify(attestation, intent)


def test_an_operator_forgets_a_task_id_once_its_attestation_expired(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The memory behind one-intent-per-task-id is bounded by expiry: an expired attestation
    authorizes nothing, so its task id may name another intent afterwards. (Derived task ids
    name one intent already; the memory is the second line, reached here by a derivation
    that collides.)"""
    from agentguard.network import operator as operator_module

    from .test_operator import new_operator, request

    operator = new_operator()
    first = request(UNIT)
    second = request(2 * UNIT, task_id=first["task_id"], request_id=first["request_id"])
    collide = bytes.fromhex(first["task_id"][2:])
    monkeypatch.setattr(operator_module, "derive_task_id", lambda *_: collide)
    now = first["wasm"]["now"]
    assert operator.evaluate_and_sign(first, now=now)["decision"] == "allow"
    with pytest.raises(RPCError, match="different intent"):
        operator.evaluate_and_sign(second, now=now)
    later = now + 300 + CLOCK_SKEW + 1
    second["wasm"]["now"], second["expires_at"] = later, later + 300
    assert operator.evaluate_and_sign(second, now=later)["decision"] == "allow"
    with pytest.raises(RPCError, match="different intent"):  # now the second one holds it
        first["wasm"]["now"], first["expires_at"] = later, later + 300
        operator.evaluate_and_sign(first, now=later)
