"""newt_createTask against real gateway + operator processes: decisions, signatures, limits."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx

from agentguard import Attestation, Verifier
from agentguard.network.launcher import ReferenceNetwork
from agentguard.policies import policy_id

from .conftest import (
    NETCHECK,
    PAYEE,
    RPC,
    TOKEN,
    UNIT,
    decision,
    fresh_agent,
    fresh_client,
    fresh_eoa_client,
    params,
    simulation,
    transfer,
)


def test_allow_is_signed_by_a_quorum_the_verifier_accepts(
    network: ReferenceNetwork, rpc: RPC, client: str
) -> None:
    intent = transfer(fresh_agent())
    result = rpc.create(client, intent)

    assert decision(result) == "allow"
    attestation = Attestation.model_validate(result["attestation"])
    assert attestation.intent_hash == intent.intent_hash
    assert result["task_response"]["evaluation_result"] == [0] * 31 + [1]
    assert result["expiration"] == attestation.expires_at == result["timestamp"] + 300
    expected_pid = policy_id(client, NETCHECK, params(), 300)
    assert attestation.policy_id == expected_pid
    verified = Verifier(
        network.operator_addresses, policy_client=client, policy_id="0x" + expected_pid.hex()
    ).verify(attestation, intent)
    assert len(verified.signers) >= 2
    assert set(verified.signers) <= {a.lower() for a in network.operator_addresses}


def test_deny_carries_the_policy_reasons_and_deny_signatures(
    network: ReferenceNetwork, rpc: RPC, client: str
) -> None:
    intent = transfer(fresh_agent(), amount=11 * UNIT)  # max_per_tx is 10 units
    result = rpc.create(client, intent)

    assert decision(result) == "deny"
    assert result["attestation"]["reasons"] == ["amount 11000000 exceeds max_per_tx 10000000"]
    assert result["task_response"]["evaluation_result"] == [0] * 32
    attestation = Attestation.model_validate(result["attestation"])
    # operators signed allow=false for this exact task: the signatures recover to them
    from agentguard._attestation import recover_signer

    digest = attestation.digest_for(intent.intent_hash, 8453)
    signers = {"0x" + recover_signer(digest, s.signature).hex() for s in attestation.signatures}
    assert len(signers) >= 2
    assert signers <= {a.lower() for a in network.operator_addresses}


def test_newton_shape_of_the_result(rpc: RPC, client: str) -> None:
    intent = transfer(fresh_agent())
    rpc_id = str(uuid.uuid4())
    result = rpc.create(
        client, intent, rpc_id=rpc_id, wasm_args="0x", quorum_threshold_percentage=66
    )

    from agentguard._eip712 import address_word, keccak

    # no x402 details: 32 zero bytes in their place (``agentguard._task_id``)
    task_id = keccak(
        address_word(bytes.fromhex(client[2:]))
        + intent.intent_hash
        + b"\x00" * 32
        + rpc_id.encode()
    )
    assert result["task_id"] == "0x" + task_id.hex()
    assert result["task"]["taskId"] == result["task_id"]
    assert result["task"]["requestId"] == rpc_id
    assert result["task"]["intent"] == intent.wire()
    assert result["task"]["quorumThresholdPercentage"] == 66
    response = result["task_response"]
    assert response["policy_task_data"]["policyCodeHash"] == "0x" + NETCHECK.code_hash.hex()
    assert response["policy_config"]["expireAfter"] == 300
    assert response["policy_id"] == result["attestation"]["policy_id"]
    assert result["operator_errors"] == []
    assert result["error"] is None


def test_simulate_evaluates_without_signing_or_counting(
    rpc: RPC, network: ReferenceNetwork
) -> None:
    client = fresh_client()
    pid = network.register_policy_client(client, NETCHECK, params(daily_cap=2 * UNIT))
    agent = fresh_agent()
    for _ in range(3):
        sim = rpc.call("newt_simulateTask", simulation(transfer(agent).wire(), pid))
        # Newton's result shape: {success, result: {allow, reason}, error, details}
        assert sim["success"] is True and sim["error"] is None
        assert sim["result"]["allow"] is True and sim["result"]["decision"] == "allow"
        assert "signatures" not in sim and "attestation" not in sim
        details = sim["details"]
        assert details["parsed_intent"]["decoded_function_signature"] == "transfer(address,uint256)"
    # three simulations counted nothing: two real allows still fit the 2-unit cap
    assert decision(rpc.create(client, transfer(agent))) == "allow"
    assert decision(rpc.create(client, transfer(agent))) == "allow"
    assert decision(rpc.create(client, transfer(agent))) == "deny"


def test_daily_cap_holds_across_many_tasks(rpc: RPC, network: ReferenceNetwork) -> None:
    client = fresh_client()
    network.register_policy_client(client, NETCHECK, params(daily_cap=5 * UNIT))
    agent = fresh_agent()
    decisions = [decision(rpc.create(client, transfer(agent, amount=UNIT))) for _ in range(8)]
    assert decisions == ["allow"] * 5 + ["deny"] * 3
    # the cap is per agent: another agent of the same client still has its full budget
    assert decision(rpc.create(client, transfer(fresh_agent(), amount=5 * UNIT))) == "allow"


def test_rate_limit_counts_attested_tasks(rpc: RPC, network: ReferenceNetwork) -> None:
    client = fresh_client()
    network.register_policy_client(client, NETCHECK, params(rate=3))
    agent = fresh_agent()
    outcomes = [rpc.create(client, transfer(agent, amount=1)) for _ in range(4)]
    assert [decision(r) for r in outcomes] == ["allow", "allow", "allow", "deny"]
    assert outcomes[-1]["attestation"]["reasons"] == ["rate limit: 3 actions in 60s"]


def test_release_gives_the_budget_back_once_the_attestation_expires(
    rpc: RPC, network: ReferenceNetwork
) -> None:
    client, key = fresh_eoa_client()  # an EOA: nothing can use the attestation but its host
    network.register_policy_client(
        client, NETCHECK, params(daily_cap=2 * UNIT), expire_after=2, owner_key=key
    )
    agent = fresh_agent()
    first = rpc.create(client, transfer(agent))
    second = rpc.create(client, transfer(agent))
    assert decision(first) == decision(second) == "allow"
    assert decision(rpc.create(client, transfer(agent))) == "deny"

    released = rpc.call("agentguard_releaseTask", {"task_id": first["task_id"]})
    assert released["status"] == "releasing"
    assert released["counts_until"] == first["attestation"]["expires_at"]
    again = rpc.raw("agentguard_releaseTask", {"task_id": first["task_id"]}).json()
    assert again["error"]["code"] == -32602 and "releasing" in again["error"]["message"]
    # still valid, so a host could still use it: it keeps counting until it expires
    assert decision(rpc.create(client, transfer(agent))) == "deny"

    # a committed task was used: it can no longer be released
    assert rpc.call("agentguard_commitTask", {"task_id": second["task_id"], "outcome": "0xabc"})
    refused = rpc.raw("agentguard_releaseTask", {"task_id": second["task_id"]}).json()
    assert "committed" in refused["error"]["message"]

    deadline = time.time() + 10
    while decision(outcome := rpc.create(client, transfer(agent))) != "allow":
        assert time.time() < deadline, "the released amount never came back"
        time.sleep(0.5)
    assert outcome["attestation"]["expires_at"] > first["attestation"]["expires_at"]
    assert decision(rpc.create(client, transfer(agent))) == "deny"


def test_a_release_for_a_contract_client_counts_without_a_chain_usage_check(
    rpc: RPC, network: ReferenceNetwork
) -> None:
    """Release-then-use: before the fix a vault's host released each attestation and still
    executed it before expiry, and at expiry the gateway gave the amount back. A client not
    signed for by its own key may be a vault; with no chain to ask, its releases never give
    anything back (the vault case with a chain is tested on anvil in tests/wallet)."""
    client = fresh_client()
    network.register_policy_client(client, NETCHECK, params(daily_cap=UNIT), expire_after=1)
    agent = fresh_agent()
    first = rpc.create(client, transfer(agent))
    assert decision(first) == "allow"
    released = rpc.call("agentguard_releaseTask", {"task_id": first["task_id"]})
    assert released["status"] == "releasing"
    settled = task_status(network, first["task_id"], until="committed")
    assert settled == ("committed", "released, but its use cannot be ruled out: counted")
    assert decision(rpc.create(client, transfer(agent))) == "deny"


def task_status(network: ReferenceNetwork, task_id: str, *, until: str) -> tuple[str, str]:
    """The gateway's own record of a task, once the sweep moved it to ``until``."""
    import sqlite3

    db = sqlite3.connect(network.state_dir / "state.sqlite3")
    try:
        for _ in range(100):
            row = db.execute(
                "SELECT status, outcome FROM tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
            if row[0] == until:
                return row[0], row[1]
            time.sleep(0.1)
        raise AssertionError(f"task stayed {row[0]}")
    finally:
        db.close()


def test_retry_with_the_same_rpc_id_is_counted_once(rpc: RPC, network: ReferenceNetwork) -> None:
    client = fresh_client()
    network.register_policy_client(client, NETCHECK, params(daily_cap=2 * UNIT))
    agent = fresh_agent()
    rpc_id = str(uuid.uuid4())
    intent = transfer(agent)
    first = rpc.create(client, intent, rpc_id=rpc_id)
    retry = rpc.create(client, intent, rpc_id=rpc_id)
    assert retry == first
    assert decision(rpc.create(client, transfer(agent))) == "allow"  # the second unit
    assert decision(rpc.create(client, transfer(agent))) == "deny"
    # reusing the id for another request is refused, not answered with the old result
    clash = rpc.raw(
        "newt_createTask",
        {"policy_client": client, "intent": transfer(agent, amount=2).wire()},
        rpc_id=rpc_id,
    ).json()
    assert clash["error"]["code"] == -32602 and "already used" in clash["error"]["message"]


def test_concurrent_tasks_never_attest_past_the_cap(rpc: RPC, network: ReferenceNetwork) -> None:
    client = fresh_client()
    network.register_policy_client(client, NETCHECK, params(daily_cap=5 * UNIT))
    agent = fresh_agent()

    async def burst() -> list[dict[str, object]]:
        headers = {"authorization": f"Bearer {network.api_key}"}
        async with httpx.AsyncClient(headers=headers, timeout=30.0) as http:

            async def one() -> dict[str, object]:
                response = await http.post(
                    network.rpc_url,
                    json={
                        "jsonrpc": "2.0",
                        "id": str(uuid.uuid4()),
                        "method": "newt_createTask",
                        "params": {"policy_client": client, "intent": transfer(agent).wire()},
                    },
                )
                result: dict[str, object] = response.json()["result"]
                return result

            return await asyncio.gather(*(one() for _ in range(32)))

    results = asyncio.run(burst())
    decisions = [decision(r) for r in results]  # type: ignore[arg-type]
    assert decisions.count("allow") == 5
    assert decisions.count("deny") == 27
    assert decision(rpc.create(client, transfer(agent))) == "deny"


def test_one_policy_serves_two_clients_with_their_own_params_and_ids(
    rpc: RPC, network: ReferenceNetwork
) -> None:
    strict, loose = fresh_client(), fresh_client()
    strict_id = network.register_policy_client(strict, NETCHECK, params(max_per_tx=UNIT))
    loose_id = network.register_policy_client(loose, NETCHECK, params(max_per_tx=50 * UNIT))
    assert strict_id != loose_id
    intent = transfer(fresh_agent(), amount=5 * UNIT)
    strict_result, loose_result = rpc.create(strict, intent), rpc.create(loose, intent)
    assert decision(strict_result) == "deny"
    assert decision(loose_result) == "allow"
    assert strict_result["attestation"]["policy_id"] == strict_id
    assert loose_result["attestation"]["policy_id"] == loose_id
    code_hashes = {
        r["task_response"]["policy_task_data"]["policyCodeHash"]
        for r in (strict_result, loose_result)
    }
    assert code_hashes == {"0x" + NETCHECK.code_hash.hex()}
    # an attestation for one client is no good for a verifier pinned to the other's policy id
    from agentguard import IntentMismatch

    verifier = Verifier(network.operator_addresses, policy_client=loose, policy_id=strict_id)
    try:
        verifier.verify(Attestation.model_validate(loose_result["attestation"]), intent)
    except IntentMismatch as exc:
        assert "policy id" in str(exc)
    else:
        raise AssertionError("a different policy id must be refused")


def test_approval_flow(rpc: RPC, network: ReferenceNetwork) -> None:
    client = fresh_client()
    network.register_policy_client(client, NETCHECK, params(approval_above=2 * UNIT))
    agent = fresh_agent()
    big = transfer(agent, amount=3 * UNIT)

    first = rpc.create(client, big)
    assert decision(first) == "approval_required"
    assert first["attestation"]["reasons"] == ["amount needs a human approval"]
    assert decision(rpc.create(client, transfer(agent, amount=UNIT))) == "allow"  # small: fine

    intent_hash = "0x" + big.intent_hash.hex()
    signed = network.approvals()
    try:
        view = signed.find(client, intent_hash)
    finally:
        signed.close()
    assert (view.status, view.amount, view.recipient) == ("pending", "3 USDC", PAYEE.lower())
    refused = RPC(network, network.api_key).raw("agentguard_approve", {"approval": {}})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == -32002
    network.approve(client, intent_hash)
    approved = rpc.create(client, big)
    assert decision(approved) == "allow"
    # the approval covered that one exact intent once; another amount still needs one
    assert decision(rpc.create(client, transfer(agent, amount=3 * UNIT + 1))) == "approval_required"
    assert decision(rpc.create(client, big)) == "approval_required"


def test_payment_intent_reaches_the_policy_with_its_x402_details(
    rpc: RPC, network: ReferenceNetwork, client: str
) -> None:
    from agentguard import PaymentIntent
    from agentguard._intent import wasm_args_hex

    payment = PaymentIntent(
        payer=fresh_agent(),
        scheme="exact",
        network="eip155:8453",
        asset=TOKEN,
        amount=UNIT,
        pay_to=PAYEE,
        resource="https://api.example/infer",
    )
    result = rpc.create(
        client, payment.newton_intent(), wasm_args=wasm_args_hex(payment.wasm_args())
    )
    assert decision(result) == "allow"
    assert result["attestation"]["intent_hash"] == "0x" + payment.intent_hash.hex()
    data = bytes.fromhex(result["task_response"]["policy_task_data"]["policyData"][0]["data"][2:])
    assert b'"resource":"https://api.example/infer"' in data
    # x402 details that describe another payment than the transfer are refused
    lie = dict(payment.wasm_args()["x402"], amount="1")
    refused = rpc.raw(
        "newt_createTask",
        {
            "policy_client": client,
            "intent": payment.wire(),
            "wasm_args": wasm_args_hex({"x402": lie}),
        },
    ).json()
    assert refused["error"]["code"] == -32602 and "x402" in refused["error"]["message"]


def test_the_bundled_agent_spend_policy_enforces_caps_from_gateway_history(
    rpc: RPC, network: ReferenceNetwork
) -> None:
    client = fresh_client()
    token = TOKEN.lower()
    network.register_policy_client(
        client,
        "agent_spend",
        {
            "max_per_tx": {token: str(5 * UNIT)},
            "window_caps": [{"asset": TOKEN, "window_seconds": 86400, "max_amount": str(3 * UNIT)}],
            "approval_above": {token: str(2 * UNIT)},
        },
    )
    agent = fresh_agent()
    assert decision(rpc.create(client, transfer(agent, amount=UNIT + UNIT // 2))) == "allow"
    assert decision(rpc.create(client, transfer(agent, amount=UNIT + UNIT // 2))) == "allow"
    over = rpc.create(client, transfer(agent, amount=1))
    assert decision(over) == "deny" and over["attestation"]["reasons"]
    assert decision(rpc.create(client, transfer(fresh_agent(), amount=2 * UNIT + 1))) == (
        "approval_required"
    )
    assert decision(rpc.create(client, transfer(fresh_agent(), amount=6 * UNIT))) == "deny"


def test_a_newton_quickstart_policy_runs_unchanged(rpc: RPC, network: ReferenceNetwork) -> None:
    from pathlib import Path

    from agentguard import TransactionIntent
    from agentguard.policies import Policy

    quickstart = Policy.from_dir(
        Path(__file__).parents[2] / "examples" / "policies" / "newton_quickstart"
    )
    client = fresh_client()
    pid = network.register_policy_client(
        client, quickstart, {"allowed_recipients": [PAYEE], "max_value": 10**15}
    )
    agent = fresh_agent()

    def send(to: str, value: int) -> dict[str, object]:
        intent = TransactionIntent(from_=agent, to=to, value=value, chain_id=8453)
        return rpc.create(client, intent)

    allowed = send(PAYEE, 10**14)
    assert decision(allowed) == "allow"
    Verifier(network.operator_addresses, policy_client=client, policy_id=pid).verify(
        Attestation.model_validate(allowed["attestation"]),
        TransactionIntent(from_=agent, to=PAYEE, value=10**14, chain_id=8453),
    )
    assert decision(send(PAYEE, 10**16)) == "deny"
    assert decision(send("0x" + "77" * 20, 10**14)) == "deny"


def test_x402_details_reach_the_policy_in_canonical_form_only(
    rpc: RPC, network: ReferenceNetwork, client: str
) -> None:
    """Before the fix the client's own spelling reached the operators: ``"0001000000"``,
    ``eip155:08453`` and extra keys such as ``"trusted_merchant": true``."""
    import json

    from agentguard import PaymentIntent
    from agentguard._intent import wasm_args_hex

    payment = PaymentIntent(
        payer=fresh_agent(),
        scheme="exact",
        network="eip155:8453",
        asset=TOKEN,
        amount=UNIT,
        pay_to=PAYEE,
    )
    canonical = payment.wasm_args()["x402"]
    odd = {**canonical, "amount": "0001000000", "network": "eip155:08453", "asset": TOKEN.lower()}
    result = rpc.create(client, payment.newton_intent(), wasm_args=wasm_args_hex({"x402": odd}))
    assert decision(result) == "allow"
    data = result["task_response"]["policy_task_data"]["policyData"][0]["data"]
    assert json.loads(bytes.fromhex(data[2:]))["x402"] == canonical
    for extra in ({"trusted_merchant": True}, {"payer": PAYEE}):
        refused = rpc.raw(
            "newt_createTask",
            {
                "policy_client": client,
                "intent": payment.wire(),
                "wasm_args": wasm_args_hex({"x402": {**canonical, **extra}}),
            },
        ).json()["error"]
        assert refused["code"] == -32602 and "keys no x402 requirement has" in refused["message"]
