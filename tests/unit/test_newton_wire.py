"""NewtonGateway reads Newton's own answers exactly as Newton's contracts and SDK define them.

Authorities (stored public sources):
* ``evaluation_result``: newt-foundation/newton-contracts ``src/libraries/TaskLib.sol``,
  ``evaluateResult`` (identical at commits 0cd3df243037f2bc8424069330203093633f4e5d and
  b81a4daf1d2a4ce91b2c892f01fc8c6be1618fa2): 32 bytes -> ``word == 1``; >= 96 bytes ->
  ``word[1] == 4 and word[2] == "true" zero-padded`` (offset word and the tail unread);
  anything else -> false; it never reverts.
* ``newt_createTask`` result shape: newt-foundation/newton-sdk ``src/types/task.ts``
  (commit 03d825c4f92c003f27f688d2b97fb936d0b9714f, ``GatewayCreateTaskResult``): snake_case
  ``task_response`` whose ``intent`` is camelCase (``chainId``, ``functionSignature``), and a
  camelCase ``task`` (``taskId``, ``policyClient``, ``taskCreatedBlock``, ``intent``).
"""

from __future__ import annotations

from typing import Any

import pytest

from agentguard import GatewayProtocolError, IntentError, TransactionIntent
from agentguard._exceptions import MalformedAttestation

from .conftest import POLICY_CLIENT
from .test_gateway_client import gateway, rpc_result, task_result

TASK_ID = "0x" + "ab" * 32
POLICY_ID = "0x" + "cd" * 32


def word(n: int) -> bytes:
    return n.to_bytes(32, "big")


TRUE_TEXT = b"true" + bytes(28)


def camel_intent(intent: TransactionIntent) -> dict[str, Any]:
    """``task_response.intent`` / ``task.intent`` as Newton's gateway returns them."""
    wire = intent.wire()
    return {
        "chainId": wire["chain_id"],
        "data": wire["data"],
        "from": wire["from"],
        "functionSignature": wire["function_signature"],
        "to": wire["to"],
        "value": wire["value"],
    }


def newton_result(intent: TransactionIntent, evaluation: Any = None) -> dict[str, Any]:
    """A ``GatewayCreateTaskResult`` in the exact shape of newton-sdk ``src/types/task.ts``."""
    return {
        "aggregation_response": {"signers_agg_sig_g1": {"g1_point": [0] * 64}},
        "error": None,
        "expiration": 40_000_123,
        "reference_block": 40_000_000,
        "status": "success",
        "task": {
            "intent": camel_intent(intent),
            "intentSignature": "0x",
            "policyClient": POLICY_CLIENT,
            "quorumNumbers": "0x00",
            "quorumThresholdPercentage": 66,
            "taskCreatedBlock": 40_000_000,
            "taskId": TASK_ID,
            "wasmArgs": "0x",
        },
        "task_id": TASK_ID,
        "task_response": {
            "evaluation_result": list(word(1)) if evaluation is None else evaluation,
            "intent": camel_intent(intent),
            "intent_signature": "0x",
            "policy_address": "0x" + "11" * 20,
            "policy_client": POLICY_CLIENT,
            "policy_config": {"expireAfter": 300, "policyParams": "0x"},
            "policy_id": POLICY_ID,
            "policy_task_data": {"policy": "0x", "policyAddress": "0x" + "11" * 20},
            "task_id": TASK_ID,
        },
        "signature_data": "0x",
        "timestamp": 1_764_000_000,
    }


def authorize(result: dict[str, Any], intent: TransactionIntent) -> Any:
    return gateway(lambda request: rpc_result(request, result)).authorize(intent)


# -- evaluation_result, decoded as TaskLib.evaluateResult ------------------------------------

EVALUATIONS = [
    pytest.param(word(1), "allow", id="abi-bool-true"),
    pytest.param(word(0), "deny", id="abi-bool-false"),
    pytest.param(word(2), "deny", id="abi-bool-dirty"),
    pytest.param(word(1 << 255 | 1), "deny", id="abi-bool-high-bit"),
    pytest.param(word(32) + word(4) + TRUE_TEXT, "allow", id="abi-string-true"),
    # offset word 0x20, length 4, then the 4 bytes unpadded: 68 bytes, neither 32 nor >= 96
    pytest.param(word(32) + word(4) + b"true", "deny", id="68-byte-unpadded-true"),
    pytest.param(word(32) + word(4) + b"true\x01" + bytes(27), "deny", id="96-byte-dirty-padding"),
    # offset 0x40 skips a junk word: a decoder following the offset finds "true", Newton reads
    # the junk word as the length
    pytest.param(word(64) + word(7) + word(4) + TRUE_TEXT, "deny", id="128-byte-junk-word"),
    # Newton never reads the offset word: a garbage offset with "true" where Newton looks
    pytest.param(word(1 << 255) + word(4) + TRUE_TEXT, "allow", id="garbage-offset"),
    pytest.param(word(32) + word(4) + TRUE_TEXT + word(9), "allow", id="tail-unread"),
    pytest.param(word(32) + word(5) + b"true\x00" + bytes(27), "deny", id="length-5"),
    pytest.param(word(32) + word(4) + b"True" + bytes(28), "deny", id="capital-True"),
    pytest.param(word(32) + word(4), "deny", id="64-bytes"),
    pytest.param((word(32) + word(4) + TRUE_TEXT)[:95], "deny", id="95-bytes"),
    pytest.param(b"", "deny", id="empty"),
    pytest.param(b"\x01", "deny", id="one-byte"),
    pytest.param(bytes(31) + b"\x01" + bytes(1), "deny", id="33-bytes"),
]


@pytest.mark.parametrize(("evaluation", "decision"), EVALUATIONS)
def test_evaluation_result_is_decoded_as_newton_decodes_it(intent, evaluation, decision):
    """Each form gets the decision Newton's ``TaskLib.evaluateResult`` gives it (module
    docstring: newton-contracts src/libraries/TaskLib.sol). Before this change the 68-byte,
    dirty-padding and junk-word forms were read as allow (Newton: deny) and the garbage offset
    as deny (Newton: allow): a gateway could get allow from us for what Newton's contracts deny.
    """
    result = newton_result(intent, list(evaluation))
    result["task_response"]["intent"] = intent.wire()  # isolates the decoding from camelCase
    assert authorize(result, intent).decision == decision


@pytest.mark.parametrize(("evaluation", "decision"), EVALUATIONS[:6])
def test_evaluation_result_as_hex_decodes_the_same(intent, evaluation, decision):
    attestation = authorize(newton_result(intent, "0x" + evaluation.hex()), intent)
    assert attestation.decision == decision


def test_reference_attestation_contradicted_by_a_newton_deny_form_is_refused(operators, intent):
    """A signed allow next to a 128-byte junk-word result (Newton: deny) is a contradiction.
    Before, the junk-word form read as allow and the answer was accepted."""
    result = task_result(operators.attest(intent))
    result["task_response"]["evaluation_result"] = list(word(64) + word(7) + word(4) + TRUE_TEXT)
    with pytest.raises(GatewayProtocolError, match="contradicts"):
        authorize(result, intent)


# -- camelCase as Newton's gateway sends it ---------------------------------------------------


def test_newton_camelcase_answer_authorizes_an_erc20_transfer(intent):
    """Newton's gateway returns ``task_response.intent`` camelCase. Before this change its
    ``functionSignature`` was not read, so calldata was refused as "calldata without a
    function_signature": no ERC-20 transfer or payment could be authorized on Newton."""
    assert intent.data  # calldata present
    attestation = authorize(newton_result(intent), intent)
    assert attestation.scheme == "newton-bls"
    assert attestation.decision == "allow"
    assert attestation.intent_hash == intent.intent_hash
    assert attestation.task_id == bytes.fromhex(TASK_ID[2:])
    assert attestation.policy_id == bytes.fromhex(POLICY_ID[2:])


def test_camelcase_task_response_fields_are_read(intent):
    result = newton_result(intent)
    response = result["task_response"]
    for snake, camel in (
        ("task_id", "taskId"),
        ("policy_client", "policyClient"),
        ("policy_id", "policyId"),
        ("evaluation_result", "evaluationResult"),
    ):
        response[camel] = response.pop(snake)
    del result["task_id"]
    attestation = authorize(result, intent)
    assert attestation.decision == "allow"
    assert attestation.task_id == bytes.fromhex(TASK_ID[2:])


def test_from_wire_reads_both_spellings_alike(intent):
    assert TransactionIntent.from_wire(camel_intent(intent)) == intent
    assert TransactionIntent.from_wire(intent.wire()) == intent
    same_twice = {**intent.wire(), **camel_intent(intent)}
    assert TransactionIntent.from_wire(same_twice) == intent


@pytest.mark.parametrize(
    ("snake", "camel", "other"),
    [
        ("chain_id", "chainId", hex(1)),
        ("function_signature", "functionSignature", "0x" + b"approve(address,uint256)".hex()),
    ],
)
def test_intent_with_both_spellings_disagreeing_is_refused(intent, snake, camel, other):
    """Attack: one spelling for a reader that prefers snake_case, another for one that prefers
    camelCase. Before, ``chain_id`` silently won over ``chainId``; now neither wins."""
    wire = {**intent.wire(), camel: other}
    with pytest.raises(IntentError, match=f"{snake} and {camel}"):
        TransactionIntent.from_wire(wire)
    result = newton_result(intent)
    result["task_response"]["intent"][snake] = intent.wire()[snake]
    result["task_response"]["intent"][camel] = other
    with pytest.raises(GatewayProtocolError, match=f"{snake} and {camel}"):
        authorize(result, intent)


@pytest.mark.parametrize(
    ("snake", "camel", "other"),
    [
        ("task_id", "taskId", "0x" + "ee" * 32),
        ("policy_client", "policyClient", "0x" + "22" * 20),
        ("policy_id", "policyId", "0x" + "ef" * 32),
        ("evaluation_result", "evaluationResult", list(word(0))),
    ],
)
def test_task_response_with_both_spellings_disagreeing_is_refused(intent, snake, camel, other):
    result = newton_result(intent)
    result["task_response"][camel] = other
    with pytest.raises(MalformedAttestation, match=f"{snake} and {camel}"):
        authorize(result, intent)


def test_task_with_both_spellings_disagreeing_is_refused(intent):
    result = newton_result(intent)
    result["task"]["task_created_block"] = 1
    with pytest.raises(MalformedAttestation, match="task_created_block and taskCreatedBlock"):
        authorize(result, intent)


def _other_recipient(intent: TransactionIntent) -> dict[str, Any]:
    other = TransactionIntent.erc20_transfer(
        sender=intent.from_, token=intent.to, recipient=intent.from_, amount=1, chain_id=8453
    )
    assert other.intent_hash != intent.intent_hash
    return camel_intent(other)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("taskId", "0x" + "ee" * 32, "task.taskId differs"),
        ("policyClient", "0x" + "22" * 20, "task.policyClient differs"),
        ("intent", None, "task.intent differs"),
    ],
)
def test_task_contradicting_the_signed_response_is_refused(intent, field, value, message):
    """Newton's ``TaskLib.sanityCheckTaskResponse`` requires the response to match the task;
    a gateway whose ``task`` names another task, client or intent is not trusted."""
    result = newton_result(intent)
    result["task"][field] = _other_recipient(intent) if value is None else value
    with pytest.raises(GatewayProtocolError, match=message):
        authorize(result, intent)


def test_task_response_id_contradicting_the_result_id_is_refused(intent):
    result = newton_result(intent)
    result["task_response"]["task_id"] = "0x" + "ee" * 32
    with pytest.raises(GatewayProtocolError, match=r"task_response\.task_id differs"):
        authorize(result, intent)


# -- Newton's block-number expiry becomes the ticket's unix deadline --------------------------


@pytest.mark.parametrize(
    ("expiration", "block", "deadline"),
    [
        (40_000_100, 40_000_000, 1_000 + 200),  # 100 blocks at 2 s
        (40_000_001, 40_000_000, 1_000 + 2),
        (40_000_000, 40_000_000, 1_000),  # expires now: no time left
        (2**32 - 1, 40_000_000, 1_000 + 3600),  # far future: capped at max_lifetime
        (39_000_000, 40_000_000, 1_000),  # passed: never a deadline in the future
    ],
)
def test_block_deadline(expiration: int, block: int, deadline: int) -> None:
    from agentguard._verifier import block_deadline

    assert block_deadline(expiration, block, 1_000.5, 2.0, 3600) == deadline


@pytest.mark.parametrize("block_time", [0, -1, 61, True, "2", float("nan")])
def test_binding_verifier_refuses_a_nonsense_block_time(block_time: Any) -> None:
    from agentguard import ConfigurationError, NewtonBindingVerifier

    with pytest.raises(ConfigurationError, match="block_time"):
        NewtonBindingVerifier(
            policy_client=POLICY_CLIENT, block_number=lambda: 1, block_time=block_time
        )
