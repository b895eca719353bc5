"""A hostile gateway talking straight to the REAL operator processes (with the gateway's
bearer tokens) cannot choose the policy they evaluate, and a Guard refuses what it makes them
sign for a policy client they hold no registration for."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest
from coincurve import PrivateKey

from agentguard import Attestation, Guard, TransactionIntent, Verifier
from agentguard._exceptions import ConfigurationError, IntentMismatch
from agentguard.network.launcher import OperatorProcess, ReferenceNetwork
from agentguard.network.registration import Registration
from agentguard.network.state import policy_from_material, policy_material
from agentguard.policies import Policy

from ..task_ids import bind
from .conftest import NETCHECK, fresh_agent, fresh_client, params, transfer

ALLOW_ALL = policy_from_material(
    {
        "name": "evil",
        "entrypoint": "evil.allow",
        "modules": {"p.rego": "package evil\nallow := true"},
    }
)
ATTACKER = "0x" + "66" * 20
STOLEN = 10**12


def evaluate(op: OperatorProcess, body: dict[str, Any]) -> dict[str, Any]:
    token = op.token_file.read_text().strip()
    envelope = {"jsonrpc": "2.0", "id": 1, "method": "newt_evaluateAndSign", "params": body}
    response = httpx.post(op.url, json=envelope, headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


def hostile_task(
    client: str, registration: dict[str, Any]
) -> tuple[dict[str, Any], TransactionIntent]:
    """``allow := true`` for a 10^12-unit transfer to the attacker, with consistent hashes."""
    intent = transfer(fresh_agent(), amount=STOLEN, recipient=ATTACKER)
    now = int(time.time())
    spend = intent.spend
    body = {
        "task_id": "0x" + uuid.uuid4().hex * 2,
        "policy_client": client,
        "chain_id": 8453,
        "intent": intent.wire(),
        "policy_code_hash": "0x" + ALLOW_ALL.code_hash.hex(),
        "policy": policy_material(ALLOW_ALL),
        "params": {},
        "expire_after": 300,
        "expires_at": now + 300,
        "registration": registration,
        "wasm": {
            "now": now,
            "intent_hash": "0x" + intent.intent_hash.hex(),
            "approved": False,
            "spend": spend.wasm(),
            "history": {},
        },
    }
    return bind(body), intent


def attackers_registration(client: str, policy: Policy = ALLOW_ALL) -> dict[str, Any]:
    return Registration.sign(
        PrivateKey(),
        policy_client=client,
        policy=policy,
        params={},
        expire_after=300,
        chain_id=8453,
        version=time.time_ns(),
    ).to_json()


def test_operators_refuse_a_policy_the_owner_did_not_register(
    network: ReferenceNetwork, client: str
) -> None:
    """Before the fix each operator evaluated the gateway's ``allow := true`` material (its hash
    matched the code hash the gateway itself sent) and signed the 10^12-unit theft."""
    # every operator was handed the owner's registration when it was registered
    for op in network.operators:
        body, _ = hostile_task(client, {})
        del body["registration"]  # the one the operator holds applies
        refused = evaluate(op, body)["error"]
        assert refused["code"] == -32602 and "is not the registered policy" in refused["message"]
        forged = evaluate(op, hostile_task(client, attackers_registration(client))[0])["error"]
        assert forged["code"] == -32602 and "a registration signed by" in forged["message"]


def test_a_guard_refuses_an_attestation_under_another_policy(network: ReferenceNetwork) -> None:
    """For a policy client the operators hold no registration for yet, a hostile gateway can
    make them sign under a registration of its own. Before the fix ``Guard.connect`` did not
    pin a policy id, and that attestation verified (an unpinned verifier still accepts it)."""
    client = fresh_client()
    task, intent = hostile_task(client, attackers_registration(client))
    answers = [evaluate(op, task)["result"] for op in network.operators[:2]]
    attestation = Attestation.model_validate(
        {
            "scheme": "ecdsa",
            "decision": "allow",
            "task_id": task["task_id"],
            "policy_id": answers[0]["policy_id"],
            "policy_client": client,
            "intent_hash": task["wasm"]["intent_hash"],
            "expires_at": task["expires_at"],
            "signatures": [
                {"operator": a["operator"], "signature": a["signature"]} for a in answers
            ],
        }
    )
    unpinned = Verifier(network.operator_addresses, policy_client=client)
    assert unpinned.verify(attestation, intent)  # the attack, as it worked before

    with pytest.raises(ConfigurationError, match="policy_id"):
        Guard.connect(network.url, policy_client=client, operators=network.operator_addresses)
    with (
        Guard.connect(
            network.url,
            policy_client=client,
            operators=network.operator_addresses,
            api_key=network.api_key,
            policy=NETCHECK,
            params=params(),
        ) as guard,
        pytest.raises(IntentMismatch, match="policy id"),
    ):
        guard._verify(attestation, intent)
