"""Red team: a hostile gateway (it holds the operators' bearer tokens) talking straight to the
REAL operator processes."""

from __future__ import annotations

import os
import time
from typing import Any

from agentguard import TransactionIntent
from agentguard.network.launcher import ReferenceNetwork
from agentguard.network.state import policy_material

from .conftest import NETCHECK, fresh_agent, fresh_client, params, transfer
from .test_hostile_gateway import evaluate


def registered_task(
    client: str, intent: TransactionIntent, task_id: str, **changes: Any
) -> dict[str, Any]:
    """A consistent request under the registration the operators hold for ``client``."""
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
    return body


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
    task_id = "0x" + "7a" * 32
    first, second = transfer(agent, 1), transfer(agent, 9, recipient="0x" + "66" * 20)
    for op in network.operators:
        signed = evaluate(op, registered_task(client, first, task_id))["result"]
        assert signed["decision"] == "allow"
        # a retry of the same intent under the same task id is fine (hedging, lost answers)
        assert evaluate(op, registered_task(client, first, task_id))["result"]["decision"] == (
            "allow"
        )
        refused = evaluate(op, registered_task(client, second, task_id))["error"]
        assert refused["code"] == -32602 and "different intent" in refused["message"], refused
        # nor for the same intent of another policy client
        other = evaluate(op, registered_task(other_client, first, task_id))["error"]
        assert other["code"] == -32602 and "different intent" in other["message"], other


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
        body = registered_task(client, intent, "0x" + os.urandom(32).hex())
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
    body = registered_task(client, intent, "0x" + os.urandom(32).hex())
    body["expires_at"] = body["wasm"]["now"] + 330
    for op in network.operators:
        refused = evaluate(op, body)["error"]
        assert refused["code"] == -32602 and "data.wasm.now + expire_after" in refused["message"]
