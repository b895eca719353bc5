"""Operators decide ``approved``, not the gateway: in process, real engine, real keys.

Each test plays a lying gateway that sets ``data.wasm.approved = true`` and hands the operator
whatever approval it has (none, forged, expired, for another intent, already used). Before this
change an operator took ``approved`` from the gateway as it came: every one of these would
have been signed ``allow``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard._attestation import operator_address
from agentguard.network._rpc import RPCError
from agentguard.network.approvals import SignedApproval, approvers_of
from agentguard.network.operator import Operator
from agentguard.network.registration import Registration
from agentguard.network.registry import Registry
from agentguard.network.state import policy_material
from tests.network.conftest import NETCHECK, UNIT, params, transfer
from tests.task_ids import bind

CLIENT = "0x" + "cc" * 20
AGENT_KEY = PrivateKey(b"\x0a" * 32)
AGENT = operator_address(AGENT_KEY)
OWNER = PrivateKey(b"\x07" * 32)
APPROVER = PrivateKey(b"\x08" * 32)
BIG = 3 * UNIT  # above approval_above: needs a person
CONFIG = params(approval_above=2 * UNIT)


def registration(config: dict[str, Any] = CONFIG, version: int = 1) -> dict[str, Any]:
    return Registration.sign(
        OWNER,
        policy_client=CLIENT,
        policy=NETCHECK,
        params=config,
        expire_after=300,
        chain_id=8453,
        version=version,
    ).to_json()


def request(
    approval: dict[str, Any] | None,
    *,
    approved: bool = True,
    amount: int = BIG,
    config: dict[str, Any] = CONFIG,
    version: int = 1,
) -> dict[str, Any]:
    intent = transfer(AGENT, amount=amount)
    now = int(time.time())
    spend = intent.spend
    body: dict[str, Any] = {
        "policy_client": CLIENT,
        "chain_id": 8453,
        "intent": intent.wire(),
        "policy_code_hash": "0x" + NETCHECK.code_hash.hex(),
        "params": config,
        "expire_after": 300,
        "expires_at": now + 300,
        "registration": registration(config, version),
        "policy": policy_material(NETCHECK),
        "wasm": {
            "now": now,
            "intent_hash": "0x" + intent.intent_hash.hex(),
            "approved": approved,
            "spend": spend.wasm(),
            "history": {
                w: {"count": 0, "spent": {}, "projected": {spend.asset.lower(): str(spend.amount)}}
                for w in ("60", "3600", "86400")
            },
        },
    }
    if approval is not None:
        body["approval"] = approval
    return bind(body)


def signed(
    key: PrivateKey = OWNER,
    *,
    amount: int = BIG,
    expires_in: int = 600,
    chain_id: int = 8453,
    client: str = CLIENT,
) -> dict[str, Any]:
    return SignedApproval.sign(
        key,
        policy_client=client,
        intent_hash="0x" + transfer(AGENT, amount=amount).intent_hash.hex(),
        chain_id=chain_id,
        expires_at=int(time.time()) + expires_in,
    ).to_json()


@pytest.fixture
def operator() -> Operator:
    return Operator(PrivateKey(), Registry(":memory:"))


def refused(operator: Operator, body: dict[str, Any], mentions: str) -> None:
    with pytest.raises(RPCError) as caught:
        operator.evaluate_and_sign(body)
    assert caught.value.code == -32602
    assert mentions in caught.value.message, caught.value.message


def test_an_owner_signed_approval_lets_the_policy_allow(operator: Operator) -> None:
    assert operator.evaluate_and_sign(request(None, approved=False))["decision"] == (
        "approval_required"
    )
    assert operator.evaluate_and_sign(request(signed()))["decision"] == "allow"


def test_approved_true_without_an_approval_is_refused(operator: Operator) -> None:
    """Attack: the gateway alone sets data.wasm.approved = true (what agentguard_approve did
    before: an admin-key call, no approver signature)."""
    refused(operator, request(None), "without a signed approval")


@pytest.mark.parametrize(
    ("who", "key"),
    [("the agent", AGENT_KEY), ("the gateway's admin", PrivateKey(b"\x0b" * 32))],
)
def test_an_approval_signed_by_a_non_approver_is_refused(
    operator: Operator, who: str, key: PrivateKey
) -> None:
    """Attack: the agent (prompt-injected) or the gateway's operator signs its own approval."""
    refused(operator, request(signed(key)), "not an approver")


def test_an_expired_approval_is_refused(operator: Operator) -> None:
    """Attack: a gateway keeps an old approval and uses it after its expiry."""
    refused(operator, request(signed(expires_in=-1)), "expired")


def test_an_approval_valid_too_far_ahead_is_refused(operator: Operator) -> None:
    """Operators remember used approvals until expiry: one valid for years could not be."""
    refused(operator, request(signed(expires_in=10 * 86400)), "ahead")


def test_an_approval_for_intent_a_does_not_approve_intent_b(operator: Operator) -> None:
    """Attack: a person approved 3 USDC; the gateway attaches it to a 9 USDC transfer."""
    refused(operator, request(signed(amount=BIG), amount=9 * UNIT), "another intent")


@pytest.mark.parametrize(
    ("field", "value", "mentions"),
    [
        ("chain_id", 1, "another chain"),
        ("client", "0x" + "dd" * 20, "another policy client"),
    ],
)
def test_an_approval_for_another_chain_or_client_is_refused(
    operator: Operator, field: str, value: Any, mentions: str
) -> None:
    """Attack: an approval given on a testnet, or for another vault, replayed here."""
    refused(operator, request(signed(**{field: value})), mentions)


def test_a_tampered_approval_is_refused(operator: Operator) -> None:
    """Attack: the gateway edits a valid approval's expiry (the signature recovers to someone
    else, who is no approver)."""
    approval = signed()
    approval["expires_at"] += 60
    refused(operator, request(approval), "not an approver")


def test_an_approval_is_used_for_one_task_only(operator: Operator) -> None:
    """Attack: replay of a used approval, and two concurrent tasks for one approval. A lying
    gateway sends one approval with two task ids; the second allow is refused (a retry of the
    same task id is fine)."""
    approval = signed()
    first = request(approval)
    assert operator.evaluate_and_sign(first)["decision"] == "allow"
    assert operator.evaluate_and_sign({**first})["decision"] == "allow"  # the same task again
    refused(operator, request(approval), "already used")


def test_a_denied_task_does_not_use_the_approval(operator: Operator) -> None:
    """An approval that met a hard deny (here: over max_per_tx) stays usable: a person's
    decision is spent only by a task it allowed."""
    low_cap = params(approval_above=2 * UNIT, max_per_tx=BIG - 1)
    approval = signed()
    assert operator.evaluate_and_sign(request(approval, config=low_cap))["decision"] == "deny"
    assert operator.evaluate_and_sign(request(approval, version=2))["decision"] == "allow"


def test_an_approval_with_approved_false_is_refused(operator: Operator) -> None:
    """A gateway that sends an approval but tells the policy it is not approved is confused or
    probing; the operator signs nothing for it."""
    refused(operator, request(signed(), approved=False), "approved false")


def test_listed_approvers_replace_the_owner(operator: Operator) -> None:
    """Who may approve is in the owner-signed params (and so in the policy id): with
    ``approvers`` listed, the owner's own signature no longer approves."""
    config = {**CONFIG, "approvers": [operator_address(APPROVER)]}
    assert approvers_of(Registration.from_json(registration(config))) == {
        bytes.fromhex(operator_address(APPROVER)[2:])
    }
    assert operator.evaluate_and_sign(request(signed(APPROVER), config=config))["decision"] == (
        "allow"
    )
    refused(operator, request(signed(OWNER), config=config), "not an approver")


@pytest.mark.parametrize(
    "mutation",
    [
        {"signature": "0x" + "00" * 65},
        {"signature": 5},
        {"chain_id": True},
        {"expires_at": "1"},
        {"intent_hash": "0x12"},
        {"extra": 1},
    ],
)
def test_malformed_approvals_are_refused(operator: Operator, mutation: dict[str, Any]) -> None:
    """Garbage from the gateway is a refusal, never an exception inside the operator."""
    refused(operator, request({**signed(), **mutation}), "approval")
