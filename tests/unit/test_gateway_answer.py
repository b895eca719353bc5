"""The gateway's answer and operator request, joined from pre-encoded fragments, against the
way they were built before (a dict through the JSON encoder): byte for byte, on seeded random
tasks of several policy clients, allow, deny, approval_required and failures, with hostile
text (quotes, backslashes, control characters, non-ASCII) wherever an operator or a caller
can put text."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace
from typing import Any, cast

import pytest

from agentguard import TransactionIntent
from agentguard._intent import NATIVE_ASSET
from agentguard._json import canonical_json
from agentguard.network._rpc import PreEncoded, _dumps, encode
from agentguard.network.gateway._fanout import Outcome, Vote
from agentguard.network.gateway._operators import members, task_members
from agentguard.network.gateway._registry import PolicyClient
from agentguard.network.gateway._results import REFERENCE_BLOCK, task_result
from agentguard.network.gateway._validation import TaskInput

_FALSE_WORD = [0] * 32
_TRUE_WORD = [0] * 31 + [1]
TEXT = ['a"b', "back\\slash", "tab\tnew\nline", "é ü 日本", "\u2028\x00\x1f", "", "plain"]


def reference_task_result(
    task: TaskInput,
    task_id_hex: str,
    request_id: str,
    now: int,
    expires_at: int,
    wasm: dict[str, Any],
    wasm_json: bytes,
    outcome: Outcome,
) -> dict[str, Any]:
    """Newton's ``CreateTaskResponse`` shape, plus the ECDSA ``attestation`` on a quorum;
    ``wasm_json`` is ``canonical_json(wasm)``, as the operators got it."""
    client = task.client
    decision, votes = outcome.decision, outcome.votes
    wire = task.intent.wire()
    policy_id_hex = "0x" + client.policy_id.hex()
    result: dict[str, Any] = {
        "task_id": task_id_hex,
        "status": "success" if decision is not None else "failed",
        "error": outcome.failure,
        "timestamp": now,
        "task": {
            "taskId": task_id_hex,
            "requestId": request_id,
            "policyClient": client.address,
            "taskCreatedBlock": REFERENCE_BLOCK,
            "quorumThresholdPercentage": task.percentage,
            "intent": wire,
            "intentSignature": task.intent_signature,
            "wasmArgs": task.wasm_args_hex,
            "quorumNumbers": "0x00",
            "initializationTimestamp": now,
        },
        "task_response": None,
        "reference_block": REFERENCE_BLOCK,
        "expiration": expires_at,
        "operator_errors": outcome.errors,
        "attestation": None,
    }
    if decision is None:
        if outcome.tier is not None:
            result["tier"] = outcome.tier  # the tier whose threshold was not reached
        return result
    result["task_response"] = {
        "task_id": task_id_hex,
        "policy_client": client.address,
        "policy_id": policy_id_hex,
        "policy_address": NATIVE_ASSET,
        "intent": wire,
        "intent_signature": task.intent_signature,
        "evaluation_result": _TRUE_WORD if decision == "allow" else _FALSE_WORD,
        "policy_task_data": {
            "policyId": policy_id_hex,
            "policyAddress": NATIVE_ASSET,
            "policy": "0x",
            "policyCodeHash": "0x" + client.code_hash.hex(),
            "policyData": [
                {
                    "wasmArgs": task.wasm_args_hex,
                    "data": "0x" + wasm_json.hex(),
                    "policyDataAddress": NATIVE_ASSET,
                    "expireBlock": 0,
                }
            ],
        },
        "policy_config": {
            "policyParams": client.params_hex,
            "expireAfter": client.expire_after,
        },
        "initialization_timestamp": now,
    }
    result["attestation"] = {
        "scheme": "ecdsa",
        "decision": decision,
        "task_id": task_id_hex,
        "policy_id": policy_id_hex,
        "policy_client": client.address,
        "intent_hash": wasm["intent_hash"],
        "expires_at": expires_at,
        "tier": outcome.tier or 0,
        "signatures": [{"operator": v.link.address, "signature": v.signature} for v in votes],
        "reasons": votes[0].reasons,
    }
    return result


def _address(rng: random.Random) -> str:
    return "0x" + bytes(rng.getrandbits(8) for _ in range(20)).hex()


def _client(rng: random.Random) -> PolicyClient:
    policy = SimpleNamespace(code_hash=rng.randbytes(32))
    return PolicyClient(
        address="0x" + rng.randbytes(20).hex(),
        policy=cast(Any, policy),
        registration=cast(Any, None),
        registration_json={},
        params={},
        expire_after=rng.choice([1, 300, 86400, 2**40]),
        chain_id=8453,
        policy_id=rng.randbytes(32),
        windows=(),
        material={},
        params_hex="0x" + canonical_json({"k": rng.choice(TEXT)}).hex(),
        request_lean=b"",
        request_registration=b"",
        request_reference=b"",
        registration_hash=b"",
        request_policy=b"",
    )


def _intent(rng: random.Random) -> TransactionIntent:
    if rng.random() < 0.5:
        return TransactionIntent.erc20_transfer(
            sender=_address(rng),
            token=_address(rng),
            recipient=_address(rng),
            amount=rng.randrange(1, 2**255),
            chain_id=8453,
        )
    return TransactionIntent(
        **{"from": _address(rng), "to": _address(rng), "value": rng.randrange(2**80)},
        chain_id=8453,
    )


def _task(rng: random.Random, client: PolicyClient) -> TaskInput:
    intent = _intent(rng)
    spend = intent.spend
    return TaskInput(
        client=client,
        intent=intent,
        spend_asset=spend.asset.lower(),
        spend_amount=spend.amount,
        spend_recipient=(spend.recipient or "").lower(),
        percentage=rng.randrange(1, 101),
        timeout=5.0,
        intent_signature=rng.choice(["0x", "0x" + rng.randbytes(65).hex()]),
        # validation lets a trailing newline through HEX's ``$``: the encoder escapes it
        wasm_args_hex=rng.choice(["0x", "0x" + b"{}".hex(), "0x7b7d\n", "0xABcd"]),
        x402=None,
    )


def _outcome(rng: random.Random) -> Outcome:
    links = [SimpleNamespace(address=_address(rng)) for _ in range(rng.randrange(1, 5))]
    errors = [
        {
            "operator_address": _address(rng),
            "operator_id": "0x" + rng.randbytes(32).hex(),
            "error_code": rng.choice([401, -32602, 500]),
            "error_type": rng.choice(TEXT),
            "message": rng.choice(TEXT) + rng.choice(TEXT),
            "timestamp": "2026-12-01T00:00:00Z",
            "retryable": rng.random() < 0.5,
        }
        for _ in range(rng.choice([0, 0, 1, 2]))
    ]
    decision = rng.choice(["allow", "deny", "approval_required", None])
    if decision is None:
        failure = "quorum_not_reached: " + rng.choice(TEXT)
        return Outcome(None, [], errors, failure, rng.choice([None, 0, 3, 7]))
    votes = [
        Vote(
            cast(Any, link),
            [rng.choice(TEXT) for _ in range(rng.randrange(0, 4))],
            "0x" + rng.randbytes(65).hex(),
        )
        for link in links
    ]
    return Outcome(decision, votes, errors, None, rng.choice([None, 0, 1, 3, 7]))


def _wasm(rng: random.Random, task: TaskInput) -> dict[str, Any]:
    return {
        "now": rng.randrange(2**33),
        "intent_hash": "0x" + task.intent.intent_hash.hex(),
        "approved": rng.random() < 0.5,
        "spend": task.intent.spend.wasm(),
        "history": {"3600": {"count": 1, "spent": {}, "projected": {rng.choice(TEXT): "1"}}},
    }


@pytest.mark.parametrize("seed", range(4))
def test_answer_is_byte_identical_to_the_encoded_dict(seed: int) -> None:
    rng = random.Random(seed)
    clients = [_client(rng) for _ in range(4)]
    kinds: set[str | None] = set()
    for _ in range(300):
        task = _task(rng, rng.choice(clients))
        outcome = _outcome(rng)
        wasm = _wasm(rng, task)
        wasm_json = canonical_json(wasm)
        now, expires_at = rng.randrange(2**33), rng.randrange(2**33)
        task_id = "0x" + rng.randbytes(32).hex()
        request_id = rng.choice([*TEXT, rng.randbytes(16).hex()])  # escapes, non-ASCII too
        args = (task, task_id, request_id, now, expires_at, wasm, wasm_json, outcome)
        before = reference_task_result(*args)
        intent_json = rng.choice([None, encode(task.intent.wire()).decode()])
        after = task_result(*args, intent_json)
        assert after == before
        assert encode(after) == _dumps(before).encode()
        assert isinstance(after, PreEncoded) == (outcome.decision is not None)
        assert json.loads(encode(after)) == before
        kinds.add(outcome.decision)
    assert kinds == {"allow", "deny", "approval_required", None}


def test_a_pre_encoded_answer_holds_the_dict_it_was_built_from() -> None:
    """The state records the dict, the caller gets the bytes: they must be one answer."""
    rng = random.Random(7)
    task = _task(rng, _client(rng))
    outcome = _outcome(rng)
    while outcome.decision != "allow":
        outcome = _outcome(rng)
    wasm = _wasm(rng, task)
    result = task_result(task, "0x" + "11" * 32, "r", 5, 305, wasm, canonical_json(wasm), outcome)
    assert isinstance(result, PreEncoded)
    decoded = json.loads(result.json)
    assert decoded["attestation"]["decision"] == "allow"
    assert decoded["task_response"]["evaluation_result"] == _TRUE_WORD
    assert decoded == dict(result)
    assert dict(result)["reference_block"] == REFERENCE_BLOCK


@pytest.mark.parametrize("seed", range(3))
def test_operator_request_members_are_byte_identical(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        task = _task(rng, _client(rng))
        task_id, expires_at = rng.randbytes(32), rng.randrange(2**64)
        approval = rng.choice([None, {"signature": "0x" + rng.randbytes(65).hex(), "t": 'é"'}])
        request_id = rng.choice([*TEXT, rng.randbytes(16).hex()])
        fields: dict[str, Any] = {
            "task_id": "0x" + task_id.hex(),
            "request_id": request_id,
            "chain_id": task.intent.chain_id,
            "intent": task.intent.wire(),
            "expires_at": expires_at,
        }
        if approval is not None:
            fields["approval"] = approval
        intent_json = rng.choice([None, encode(task.intent.wire()).decode()])
        got = task_members(task, task_id, request_id, expires_at, approval, intent_json)
        assert got == members(fields)


def test_list_fragments_match_the_encoder_whatever_they_hold() -> None:
    """The reasons and signatures writers take their quick way only for the shapes they
    know; anything else (other key order, a non-string) is left to the encoder."""
    from agentguard.network.gateway._results import _signatures, _strings

    odd: list[Any] = [
        [],
        ["a", 'b"', "é\n"],
        ["a", 1],
        [None],
        [{"operator": "0xA", "signature": "0x1"}],
        [{"signature": "0x1", "operator": "0xA"}],
        [{"operator": "0xA", "signature": 5}],
        [{"operator": "0xA", "signature": "0x1", "x": 1}],
    ]
    for value in odd:
        assert _strings(value) == _dumps(value)
        if all(isinstance(v, dict) for v in value):
            assert _signatures(value) == _dumps(value)
