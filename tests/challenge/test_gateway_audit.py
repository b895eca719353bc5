"""The gateway's auditor reads: a key sees its own clients' tasks and registrations only;
bad params are clean JSON-RPC errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentguard.network._rpc import INVALID_PARAMS, UNAUTHORIZED, RPCError
from agentguard.network.config import ApiKeyEntry
from agentguard.network.gateway._audit import MAX_TASKS_PER_CALL, policy_version, tasks
from tests.network.conftest import NETCHECK, UNIT, fresh_agent, fresh_client, params, transfer

from .inprocess import InProcessNetwork


@pytest.fixture(scope="module")
def two_clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    net = InProcessNetwork(tmp_path_factory.mktemp("net"))
    mine, theirs = fresh_client(), fresh_client()
    ids = {c: net.register(c, NETCHECK, params()) for c in (mine, theirs)}
    for client in (mine, theirs, mine):
        net.create(client, transfer(fresh_agent(), UNIT))
    yield net, mine, theirs, ids
    net.close()


def _key(*clients: str, admin: bool = False) -> ApiKeyEntry:
    return ApiKeyEntry(sha256="11" * 32, policy_clients=frozenset(clients), admin=admin)


def test_a_client_key_reads_its_own_tasks_only(two_clients: Any) -> None:
    net, mine, theirs, _ = two_clients
    state, key = net.gateway.state, _key(mine.lower())
    answer = tasks(state, key, {"policy_client": mine})
    assert [t["policy_client"] for t in answer["tasks"]] == [mine.lower()] * 2
    assert answer["next"] == answer["tasks"][-1]["seq"]
    assert isinstance(answer["tasks"][0]["amount"], str)
    assert tasks(state, key, {"policy_client": mine, "after": answer["next"]})["tasks"] == []
    for params_ in ({"policy_client": theirs}, {}):
        with pytest.raises(RPCError) as refused:
            tasks(state, key, params_)
        assert refused.value.code == UNAUTHORIZED


def test_the_admin_key_reads_every_task(two_clients: Any) -> None:
    net, *_ = two_clients
    answer = tasks(net.gateway.state, _key(admin=True), {"limit": 2})
    assert len(answer["tasks"]) == 2
    rest = tasks(net.gateway.state, _key("*"), {"after": answer["next"]})
    assert len(rest["tasks"]) == 1


def test_a_registration_is_readable_by_its_clients_keys_only(two_clients: Any) -> None:
    net, mine, theirs, ids = two_clients
    state = net.gateway.state
    found = policy_version(state, _key(mine.lower()), {"policy_id": ids[mine]})
    assert found["registration"]["policy_id"] == ids[mine]
    assert found["policy"]["modules"] == dict(NETCHECK.modules)
    with pytest.raises(RPCError) as refused:
        policy_version(state, _key(mine.lower()), {"policy_id": ids[theirs]})
    unknown = "0x" + "00" * 32
    with pytest.raises(RPCError) as missing:
        policy_version(state, _key(mine.lower()), {"policy_id": unknown})
    # the same answer: a key cannot tell another client's configuration from none
    assert refused.value.code == missing.value.code == INVALID_PARAMS
    assert refused.value.message.replace(ids[theirs], unknown) == missing.value.message


@pytest.mark.parametrize(
    "bad",
    [
        {"after": -1},
        {"after": "0"},
        {"after": True},
        {"limit": MAX_TASKS_PER_CALL + 1},
        {"policy_client": "0x12"},
    ],
)
def test_bad_params_are_invalid_params(two_clients: Any, bad: dict[str, Any]) -> None:
    net, *_ = two_clients
    with pytest.raises(RPCError) as refused:
        tasks(net.gateway.state, _key(admin=True), bad)
    assert refused.value.code == INVALID_PARAMS


@pytest.mark.parametrize("bad", [{}, {"policy_id": 1}, {"policy_id": "0x" + "zz" * 32}])
def test_bad_policy_ids_are_invalid_params(two_clients: Any, bad: dict[str, Any]) -> None:
    net, *_ = two_clients
    with pytest.raises(RPCError) as refused:
        policy_version(net.gateway.state, _key(admin=True), bad)
    assert refused.value.code == INVALID_PARAMS


def test_a_state_made_before_the_versions_table_still_finds_its_registrations(
    tmp_path: Path,
) -> None:
    """A gateway upgraded in place: its current registrations are copied into the versions
    table when the state opens."""
    import sqlite3

    from agentguard.network.state import open_state

    net = InProcessNetwork(tmp_path)
    client = fresh_client()
    policy_id = net.register(client, NETCHECK, params())
    net.close()
    with sqlite3.connect(net.state_path) as db:
        db.execute("DELETE FROM policy_versions")
    state = open_state(net.state_path)
    try:
        found = state.policy_version(policy_id)
        assert found is not None and found.registration.policy_client_hex == client.lower()
    finally:
        state.close()
