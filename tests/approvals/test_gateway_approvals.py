"""The gateway parks and hands over approvals; the CLI lists, signs and rejects them."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard import GatewayRPCError, TransactionIntent
from agentguard._attestation import operator_address
from agentguard.cli import main as cli
from agentguard.network.approvals import (
    SIGNED_APPROVAL_LIFETIME,
    ApprovalsClient,
    ApprovalView,
    SignedApproval,
)
from agentguard.network.launcher import ReferenceNetwork
from tests.network.conftest import RPC, decision

from .conftest import AGENT, PAYEE, USDC, Chain, new_client


def big_transfer(chain: Chain, amount: int = 10 * USDC) -> TransactionIntent:
    return TransactionIntent.erc20_transfer(
        sender=AGENT.address,
        token=chain.token.address,
        recipient=PAYEE,
        amount=amount,
        chain_id=8453,
    )


def park(network: ReferenceNetwork, client: str, intent: TransactionIntent) -> str:
    assert decision(RPC(network, network.api_key).create(client, intent)) == "approval_required"
    return "0x" + intent.intent_hash.hex()


def sign(key: PrivateKey, client: str, intent_hash: str, expires_in: int = 600) -> dict[str, Any]:
    return SignedApproval.sign(
        key,
        policy_client=client,
        intent_hash=intent_hash,
        chain_id=8453,
        expires_at=int(time.time()) + expires_in,
    ).to_json()


def admin(network: ReferenceNetwork) -> RPC:
    return RPC(network, network.admin_key)


def error_of(rpc: RPC, method: str, params: Any) -> str:
    body = rpc.raw(method, params).json()
    assert "error" in body, body
    return str(body["error"]["message"])


def test_a_parked_request_lists_what_moves_in_human_units(
    chain: Chain, network: ReferenceNetwork
) -> None:
    client = new_client(network, chain)
    intent_hash = park(network, client, big_transfer(chain))
    with contextlib.closing(network.approvals()) as approvals:
        (view,) = [v for v in approvals.list(tokens=chain.usdc) if v.policy_client == client]
    assert (view.intent_hash, view.status, view.amount) == (intent_hash, "pending", "10 USDC")
    assert view.recipient.lower() == PAYEE.lower() and view.kind == "transfer"
    assert any("approval threshold" in r for r in view.reasons)
    assert view.expires_at - view.created_at == 900  # the default approval_ttl
    status = RPC(network, network.api_key).call(
        "agentguard_approvalStatus", {"policy_client": client, "intent_hash": intent_hash}
    )
    assert status["status"] == "pending"


def test_the_gateway_refuses_approvals_no_operator_would_accept(
    chain: Chain, network: ReferenceNetwork
) -> None:
    """Attack: the admin key alone (a compromised gateway operator) tries to approve with its
    own key, the agent's key, an expired approval, or one for an intent nobody parked."""
    client = new_client(network, chain)
    intent_hash = park(network, client, big_transfer(chain))
    rpc = admin(network)
    for key in (PrivateKey(), PrivateKey(bytes.fromhex(AGENT.private_key[2:]))):
        message = error_of(rpc, "agentguard_approve", {"approval": sign(key, client, intent_hash)})
        assert "not an approver" in message
    owner = PrivateKey(bytes.fromhex(network.owner_key_file.read_text().strip()[2:]))
    expired = sign(owner, client, intent_hash, expires_in=-5)
    assert "expired" in error_of(rpc, "agentguard_approve", {"approval": expired})
    unparked = "0x" + big_transfer(chain, 11 * USDC).intent_hash.hex()
    message = error_of(rpc, "agentguard_approve", {"approval": sign(owner, client, unparked)})
    assert "unknown, not pending" in message
    too_long = sign(owner, client, intent_hash, expires_in=3600)
    assert "outlives" in error_of(rpc, "agentguard_approve", {"approval": too_long})
    old = error_of(rpc, "agentguard_approve", {"policy_client": client, "intent_hash": intent_hash})
    assert "signed by an approver key" in old  # the old unsigned form is gone


def gateway_db(network: ReferenceNetwork) -> sqlite3.Connection:
    return sqlite3.connect(network.state_dir / "state.sqlite3", isolation_level=None)


def test_a_used_approval_cannot_be_replayed(chain: Chain, network: ReferenceNetwork) -> None:
    """Attack: a lying gateway keeps a used approval and re-arms it in its own database for the
    same intent again (a second transfer on one approval). Before this change the gateway's
    word was enough; now each operator remembers the approval it signed an allow for."""
    client = new_client(network, chain)
    intent = big_transfer(chain)
    intent_hash = park(network, client, intent)
    network.approve(client, intent_hash)
    rpc = RPC(network, network.api_key)
    assert decision(rpc.create(client, intent)) == "allow"
    with contextlib.closing(gateway_db(network)) as db:
        (used,) = db.execute(
            "SELECT approval FROM approval_requests WHERE policy_client = ? AND intent_hash = ? "
            "AND status = 'used'",
            (client.lower(), intent_hash),
        ).fetchone()
    assert decision(rpc.create(client, intent)) == "approval_required"  # the honest path
    with contextlib.closing(network.approvals()) as approvals:
        assert approvals.find(client, intent_hash).status == "pending"  # parked anew
    with contextlib.closing(gateway_db(network)) as db:
        db.execute(
            "UPDATE approval_requests SET status = 'approved', approval = ? "
            "WHERE policy_client = ? AND intent_hash = ?",
            (used, client.lower(), intent_hash),
        )
    replayed = rpc.create(client, intent)
    assert replayed["status"] == "failed" and replayed["attestation"] is None
    assert "already used" in replayed["error"]


def owner_key(network: ReferenceNetwork) -> PrivateKey:
    return PrivateKey(bytes.fromhex(network.owner_key_file.read_text().strip()[2:]))


def test_listed_approvers_sign_instead_of_the_owner(
    chain: Chain, network: ReferenceNetwork
) -> None:
    approver = PrivateKey()
    client = new_client(network, chain, approvers=[operator_address(approver)])
    intent = big_transfer(chain)
    intent_hash = park(network, client, intent)
    with pytest.raises(GatewayRPCError, match="not an approver"):
        network.approve(client, intent_hash)  # the owner key is not listed
    network.approve(client, intent_hash, approver_key="0x" + approver.secret.hex())
    assert decision(RPC(network, network.api_key).create(client, intent)) == "allow"


def test_the_cli_lists_approves_and_rejects(
    chain: Chain, network: ReferenceNetwork, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    client = new_client(network, chain)
    state = [
        "--state-dir",
        str(network.state_dir),
        "--url",
        network.url,
        "--token",
        f"USDC={chain.token.address}:6",
    ]
    approve_hash = park(network, client, big_transfer(chain, 12 * USDC))
    reject_hash = park(network, client, big_transfer(chain, 13 * USDC))
    assert cli(["approvals", "list", *state]) == 0
    listed = capsys.readouterr().out
    assert approve_hash in listed and "12 USDC to" in listed and "13 USDC" in listed
    assert "reason: amount" in listed
    assert cli(["approvals", "approve", approve_hash, "--policy-client", client, *state]) == 0
    assert f"approved {approve_hash}" in capsys.readouterr().out
    assert cli(["approvals", "reject", reject_hash, "--policy-client", client, *state]) == 0
    assert cli(["approvals", "approve", reject_hash, "--policy-client", client, *state]) == 1
    assert "rejected, not pending" in capsys.readouterr().out
    stranger = tmp_path / "stranger.key"
    stranger.write_text("0x" + PrivateKey().secret.hex())
    other_hash = park(network, client, big_transfer(chain, 14 * USDC))
    assert (
        cli(
            [
                "approvals",
                "approve",
                other_hash,
                "--policy-client",
                client,
                "--approver-key-file",
                str(stranger),
                *state,
            ]
        )
        == 1
    )
    assert "not an approver" in capsys.readouterr().out
    assert cli(["approvals", "list", "--all", *state]) == 0
    assert "[rejected]" in capsys.readouterr().out


def test_the_old_network_approve_command_is_gone() -> None:
    with pytest.raises(SystemExit):
        cli(["network", "approve", "--policy-client", "0x" + "11" * 20, "--intent-hash", "0x"])


def test_a_listing_whose_intent_does_not_match_its_hash_is_not_approvable() -> None:
    """Attack: a lying gateway lists "1 USDC to a friend" under the intent hash of a large
    transfer to itself, hoping the person signs the hash. The view is re-derived from the
    intent, flags the mismatch, and ``ApprovalsClient.approve`` refuses to sign it."""
    token = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
    shown = TransactionIntent.erc20_transfer(
        sender="0x" + "aa" * 20, token=token, recipient=PAYEE, amount=USDC, chain_id=8453
    )
    real = TransactionIntent.erc20_transfer(
        sender="0x" + "aa" * 20,
        token=token,
        recipient="0x" + "66" * 20,
        amount=10**12,
        chain_id=8453,
    )
    row = {
        "policy_client": "0x" + "cc" * 20,
        "intent_hash": "0x" + real.intent_hash.hex(),
        "intent": shown.wire(),
        "spend": {"amount": "1"},
        "reasons": ["<b>small</b>"],
        "created_at": 1,
        "expires_at": 2,
        "status": "pending",
    }
    view = ApprovalView.from_row(row)
    assert view.amount == "1 USDC" and view.problem is not None
    assert "does not hash" in view.problem


def test_what_a_person_signs_is_short_lived_whatever_the_gateway_lists() -> None:
    """Attack: a lying gateway lists a request that "expires" in a day, so the signature it
    collects stays usable long after the person moved on (or rejected it). The client signs at
    most SIGNED_APPROVAL_LIFETIME ahead."""
    import httpx

    intent = TransactionIntent.erc20_transfer(
        sender="0x" + "aa" * 20,
        token="0x" + "bb" * 20,
        recipient=PAYEE,
        amount=USDC,
        chain_id=8453,
    )
    intent_hash = "0x" + intent.intent_hash.hex()
    now = 1_800_000_000
    delivered: list[dict[str, Any]] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        call = json.loads(request.content)
        if call["method"] == "agentguard_listApprovals":
            row = {
                "policy_client": "0x" + "cc" * 20,
                "intent_hash": intent_hash,
                "intent": intent.wire(),
                "spend": {},
                "reasons": [],
                "created_at": now,
                "expires_at": now + 86400,
                "status": "pending",
            }
            result: Any = {"approvals": [row]}
        else:
            delivered.append(call["params"]["approval"])
            result = {"intent_hash": intent_hash, "approver": "x"}
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": call["id"], "result": result})

    client = ApprovalsClient(
        "http://127.0.0.1:1", "admin", transport=httpx.MockTransport(gateway), clock=lambda: now
    )
    client.approve(PrivateKey(), "0x" + "cc" * 20, intent_hash)
    (approval,) = delivered
    assert approval["expires_at"] == now + SIGNED_APPROVAL_LIFETIME
