"""Concurrent requests against the real gateway: one approval, one allow; totals stay exact
while the policy client is re-registered."""

from __future__ import annotations

import json
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agentguard.network.launcher import ReferenceNetwork

from .conftest import (
    NETCHECK,
    RPC,
    TOKEN,
    UNIT,
    decision,
    fresh_agent,
    fresh_client,
    params,
    transfer,
)


def gateway_db(network: ReferenceNetwork) -> sqlite3.Connection:
    return sqlite3.connect(network.state_dir / "state.sqlite3")


def concurrently(network: ReferenceNetwork, calls: int, client: str, intent: Any) -> list[str]:
    """Each call's decision, or ``failed`` (a task sent under a registration the operators had
    just replaced is refused by them: no attestation)."""

    def one(_: int) -> str:
        result = RPC(network, network.api_key).create(client, intent)
        return "failed" if result["status"] == "failed" else decision(result)

    with ThreadPoolExecutor(calls) as pool:
        return list(pool.map(one, range(calls)))


def test_one_approval_yields_one_attestation(network: ReferenceNetwork) -> None:
    """Before the fix six concurrent tasks for one approved 100 USDC transfer all read
    ``approved`` before any of them consumed it: six allows, and the vault paid 600 USDC."""
    client = fresh_client()
    network.register_policy_client(client, NETCHECK, params(approval_above=2 * UNIT))
    big = transfer(fresh_agent(), amount=3 * UNIT)
    assert decision(RPC(network, network.api_key).create(client, big)) == "approval_required"
    network.approve(client, "0x" + big.intent_hash.hex())
    outcomes = concurrently(network, 6, client, big)
    assert sorted(outcomes) == ["allow"] + ["approval_required"] * 5


def test_an_approval_is_given_back_when_its_task_is_denied(
    network: ReferenceNetwork, rpc: RPC
) -> None:
    client = fresh_client()
    network.register_policy_client(
        client, NETCHECK, params(approval_above=2 * UNIT, daily_cap=4 * UNIT)
    )
    agent = fresh_agent()
    big = transfer(agent, amount=3 * UNIT)
    intent_hash = "0x" + big.intent_hash.hex()
    assert decision(rpc.create(client, big)) == "approval_required"
    network.approve(client, intent_hash)
    assert decision(rpc.create(client, transfer(agent, amount=2 * UNIT))) == "allow"
    assert decision(rpc.create(client, big)) == "deny"  # 5 > the 4-unit cap
    db = gateway_db(network)
    try:
        (used_by,) = db.execute(
            "SELECT used_by FROM approval_requests WHERE intent_hash = ?", (intent_hash,)
        ).fetchone()
    finally:
        db.close()
    assert used_by is None  # still there for a task the cap allows


def test_totals_stay_exact_under_concurrent_re_registration(network: ReferenceNetwork) -> None:
    """Before the fix re-registering a client while tasks were in flight dropped their
    amounts: 13-24 allows passed a 10-unit cap and totals went to -995 against a database
    truth of 12. ``test_state.test_re_registration_keeps_in_flight_amounts_exact`` replays the
    exact interleaving deterministically; this drives it through the real gateway and checks
    the invariants: never past the cap, the gateway's totals equal the database truth."""
    client = fresh_client()
    network.register_policy_client(client, NETCHECK, params(daily_cap=10 * UNIT))
    agent = fresh_agent()
    stop = threading.Event()
    windows = [61]

    def re_register() -> None:  # each time a new window: the gateway rebuilds its books
        while not stop.is_set():
            config = params(daily_cap=10 * UNIT)
            config["rate_limits"] = [{"window_seconds": windows[-1], "max_count": 1000}]
            network.register_policy_client(client, NETCHECK, config)
            windows.append(windows[-1] + 1)

    registrar = threading.Thread(target=re_register)
    registrar.start()
    try:
        outcomes = concurrently(network, 30, client, transfer(agent))
    finally:
        stop.set()
        registrar.join()
    assert len(windows) > 2  # re-registered while the tasks were in flight
    allowed = outcomes.count("allow")
    assert 0 < allowed <= 10
    assert set(outcomes) <= {"allow", "deny", "failed"}

    # A probe over the whole cap is denied, so it adds no row: it only shows the gateway's totals.
    probe = RPC(network, network.api_key).create(client, transfer(agent, amount=11 * UNIT))
    assert decision(probe) == "deny"
    data = probe["task_response"]["policy_task_data"]["policyData"][0]["data"]
    seen = json.loads(bytes.fromhex(data[2:]))["history"]["86400"]
    db = gateway_db(network)
    try:
        rows = db.execute(
            "SELECT amount FROM tasks WHERE policy_client = ? AND agent = ? "
            "AND status != 'released'",
            (client.lower(), agent.lower()),
        ).fetchall()
    finally:
        db.close()
    truth = sum(int(amount) for (amount,) in rows)
    assert truth == allowed * UNIT
    assert seen["count"] == len(rows) == allowed
    assert seen["spent"] == {TOKEN.lower(): str(truth)}
