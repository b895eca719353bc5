"""Attacks on the 2 s client copy a gateway replica keeps of a shared state's registration
(``gateway/_registry.py``), with two real gateway processes on one real PostgreSQL and real
operators (the ``replicas`` fixture of ``tests/network/test_gateway_replicas.py``)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from agentguard.network.gateway._registry import CLIENT_REFRESH
from tests.network.conftest import NETCHECK, UNIT, fresh_agent, fresh_client, params, transfer
from tests.network.test_gateway_replicas import _call, _create, replicas

__all__ = ["replicas"]  # the fixture, used by name


def _decision(answer: Any) -> str | None:
    result = answer.get("result")
    if not isinstance(result, dict) or result.get("status") != "success":
        return None  # an error: nothing attested
    return str(result["attestation"]["decision"])


def test_a_stale_replica_cannot_allow_past_a_cap_lowered_a_moment_ago(replicas: Any) -> None:
    """Attack: the owner lowers the cap through replica 1; at once (inside replica 2's 2 s
    copy of the old registration) the agent asks replica 2, which still holds the old cap.
    Held: the operators got the new registration delivered and refuse the old params, so no
    allow past the new cap is signed (an error or a deny, never an allow)."""
    net, (one, two) = replicas
    client, agent = fresh_client(), fresh_agent()
    signed = net.sign_registration(client, NETCHECK, params(daily_cap=3 * UNIT))
    assert "result" in _call(one.url, net.admin_key, "agentguard_registerPolicyClient", signed)
    assert _decision(_create(two.url, net.api_key, client, agent)) == "allow"  # two caches v1
    lowered = net.sign_registration(client, NETCHECK, params(daily_cap=UNIT))
    answer = _call(one.url, net.admin_key, "agentguard_registerPolicyClient", lowered)
    assert answer["result"]["operators_missed"] == [], answer
    for _ in range(3):
        assert _decision(_create(two.url, net.api_key, client, agent)) != "allow"


def test_an_old_registration_replayed_through_a_stale_replica_does_not_roll_back(
    replicas: Any,
) -> None:
    """Attack: a hostile admin keeps the owner's old registration (a looser cap). Right after
    the owner lowers the cap through replica 1, the admin replays the old one through replica
    2, whose copy is still the old one. Before the fix replica 2 compared the replay with its
    stale copy (the same registration: "not a replacement"), saved it anyway, and the shared
    state went back to the old registration for every replica: the gateways then sent params
    the operators (holding the newer one) refuse, so every task of the client failed until
    the owner signed yet another version. Now the replay is refused and the state keeps the
    newest registration."""
    net, (one, two) = replicas
    client, agent = fresh_client(), fresh_agent()
    old = net.sign_registration(client, NETCHECK, params(daily_cap=3 * UNIT))
    assert "result" in _call(one.url, net.admin_key, "agentguard_registerPolicyClient", old)
    assert _decision(_create(two.url, net.api_key, client, agent)) == "allow"  # two caches v1
    lowered = net.sign_registration(client, NETCHECK, params(daily_cap=UNIT))
    assert "result" in _call(one.url, net.admin_key, "agentguard_registerPolicyClient", lowered)
    replay = _call(two.url, net.admin_key, "agentguard_registerPolicyClient", old)
    assert "error" in replay, replay
    time.sleep(CLIENT_REFRESH + 0.5)  # every replica re-reads the shared state
    for replica in (one, two):
        answer = _create(replica.url, net.api_key, client, agent, str(uuid.uuid4()))
        assert _decision(answer) == "deny", answer  # the lowered cap, judged, not an error


def test_a_stored_result_keeps_the_params_it_was_signed_under(replicas: Any) -> None:
    """Attack on the compact records (``state/_compact.py``): a task's record keeps only its
    own values and points at a part shared by every task of its client (params, policy id,
    expiry). The owner re-registers the client with new params; a retry of the old task
    through the other replica (empty idempotency cache: the answer is rebuilt from the
    record) must be exactly the answer first given, old params and policy id included, not
    the new shared part. Held: the shared part is stored under the digest of its content."""
    net, (one, two) = replicas
    client, agent, rpc_id = fresh_client(), fresh_agent(), str(uuid.uuid4())
    first_params = params(daily_cap=5 * UNIT)
    signed = net.sign_registration(client, NETCHECK, first_params)
    assert "result" in _call(one.url, net.admin_key, "agentguard_registerPolicyClient", signed)
    first = _create(one.url, net.api_key, client, agent, rpc_id)
    assert _decision(first) == "allow", first
    changed = net.sign_registration(client, NETCHECK, params(daily_cap=7 * UNIT))
    assert "result" in _call(one.url, net.admin_key, "agentguard_registerPolicyClient", changed)
    time.sleep(CLIENT_REFRESH + 0.5)
    again = _create(two.url, net.api_key, client, agent, rpc_id)
    assert again["result"] == first["result"]
    fresh = _create(two.url, net.api_key, client, agent)
    assert _decision(fresh) == "allow", fresh
    new_policy = fresh["result"]["attestation"]["policy_id"]
    assert new_policy != first["result"]["attestation"]["policy_id"]  # the params did change


def test_an_rpc_id_reused_by_another_key_gets_its_own_answer(replicas: Any) -> None:
    """Attack on the idempotency cache (keyed by API key and JSON-RPC id): another host's
    key sends the first host's JSON-RPC id with a different intent, through the same replica
    (the first answer is in its cache). Held: it is judged as a task of its own (its own task
    id and intent), neither served the first host's answer nor refused as a reused id."""
    net, (one, _) = replicas
    client, agent, rpc_id = fresh_client(), fresh_agent(), str(uuid.uuid4())
    signed = net.sign_registration(client, NETCHECK, params())
    assert "result" in _call(one.url, net.admin_key, "agentguard_registerPolicyClient", signed)
    first = _create(one.url, net.api_key, client, agent, rpc_id)
    assert _decision(first) == "allow", first
    other_intent = {"policy_client": client, "intent": transfer(agent, 2 * UNIT).wire()}
    other = _call(one.url, net.admin_key, "newt_createTask", other_intent, rpc_id)
    assert _decision(other) == "allow", other
    assert other["result"]["task_id"] != first["result"]["task_id"]
    assert int(other["result"]["task"]["intent"]["data"][-64:], 16) == 2 * UNIT
