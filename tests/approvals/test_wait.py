"""The pipeline waits for a person: ``approval_timeout=`` on the wallet, against a real chain and
network. It keeps its local hold, re-authorizes the same intent once approved, and signs
nothing when the answer is no, never comes, or is a lie."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from agentguard import (
    ApprovalRejected,
    ApprovalRequired,
    ApprovalStatus,
    ApprovalTimedOut,
    Guard,
    NewtonGateway,
)
from agentguard.ledger import Ledger
from agentguard.network.approvals import ApprovalView
from agentguard.network.launcher import ReferenceNetwork
from agentguard.testing import SigningSpy
from tests.integration.pipeline_trace import PipelineTrace

from .conftest import (
    AGENT,
    PAYEE,
    USDC,
    AuditList,
    Chain,
    balance,
    connect,
    make_async_wallet,
    make_wallet,
    new_client,
)


def wait_for_pending(network: ReferenceNetwork, client: str, seconds: float = 60) -> ApprovalView:
    """The pending request of ``client`` once the gateway parked it."""
    deadline = time.monotonic() + seconds
    with contextlib.closing(network.approvals()) as approvals:
        while time.monotonic() < deadline:
            for view in approvals.list(status="pending"):
                if view.policy_client.lower() == client.lower():
                    return view
            time.sleep(0.05)
    raise AssertionError("no pending approval appeared")


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = work()
        except BaseException as exc:  # handed to the test
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_a_transfer_above_the_threshold_waits_and_lands_once_approved(
    chain: Chain, network: ReferenceNetwork
) -> None:
    client = new_client(network, chain)
    audit = AuditList()
    wallet = make_wallet(chain, network, client, audit=audit)
    before = balance(chain, PAYEE)
    with PipelineTrace() as trace:
        thread, out = in_thread(
            lambda: wallet.transfer(
                PAYEE, 10 * USDC, asset=chain.token.address, approval_timeout=60
            )
        )
        view = wait_for_pending(network, client)
        assert view.recipient.lower() == PAYEE.lower() and view.problem is None
        network.approve(client, view.intent_hash)
        thread.join(90)
    assert "error" not in out, out.get("error")
    trace.assert_signed_by_pipeline(1)
    steps = [s for s in trace.timeline if s not in ("Audit", "SIGNATURE")]
    assert steps[:3] == ["Reserve", "Authorize", "AwaitApproval"]  # one hold, kept
    assert steps[3:5] == ["Authorize", "Bind"]
    assert balance(chain, PAYEE) - before == 10 * USDC
    assert audit.kinds[:2] == ["approval_pending", "authorized"]
    assert audit.kinds[-1] == "committed"
    assert out["result"].intent.intent_hash.hex() == view.intent_hash[2:]  # not rebuilt
    with contextlib.closing(network.approvals()) as approvals:
        assert approvals.find(client, view.intent_hash).status == "used"


async def test_the_async_wallet_waits_too(chain: Chain, network: ReferenceNetwork) -> None:
    client = new_client(network, chain)
    wallet = make_async_wallet(chain, network, client)
    before = balance(chain, PAYEE)
    task = asyncio.ensure_future(
        wallet.transfer(PAYEE, 7 * USDC, asset=chain.token.address, approval_timeout=60)
    )
    view = await asyncio.to_thread(wait_for_pending, network, client)
    await asyncio.to_thread(network.approve, client, view.intent_hash)
    await asyncio.wait_for(task, 90)
    assert balance(chain, PAYEE) - before == 7 * USDC


def test_a_rejected_action_never_signs_and_gives_its_hold_back(
    chain: Chain, network: ReferenceNetwork
) -> None:
    client = new_client(network, chain)
    audit, ledger = AuditList(), Ledger()
    wallet = make_wallet(chain, network, client, audit=audit, ledger=ledger)
    with SigningSpy() as spy:
        thread, out = in_thread(
            lambda: wallet.transfer(PAYEE, 9 * USDC, asset=chain.token.address, approval_timeout=60)
        )
        view = wait_for_pending(network, client)
        network.reject(client, view.intent_hash)
        thread.join(90)
    assert isinstance(out.get("error"), ApprovalRejected)
    assert out["error"].intent_hash == view.intent_hash
    assert spy.calls == []
    assert ledger.usage(AGENT.address, 86400).spent == {}
    assert audit.kinds == ["approval_pending", "denied"]
    # and an approval signed after the rejection is refused (the request is decided)
    with pytest.raises(Exception, match="rejected, not pending"):
        network.approve(client, view.intent_hash)


def test_no_decision_in_time_is_a_timeout_and_nothing_signs(
    chain: Chain, network: ReferenceNetwork
) -> None:
    client = new_client(network, chain)
    ledger = Ledger()
    wallet = make_wallet(chain, network, client, ledger=ledger)
    with SigningSpy() as spy, pytest.raises(ApprovalTimedOut):
        wallet.transfer(PAYEE, 8 * USDC, asset=chain.token.address, approval_timeout=0.5)
    assert spy.calls == []
    assert ledger.usage(AGENT.address, 86400).spent == {}


def test_without_a_timeout_approval_required_is_final_and_parked(
    chain: Chain, network: ReferenceNetwork
) -> None:
    client = new_client(network, chain)
    wallet = make_wallet(chain, network, client)
    with pytest.raises(ApprovalRequired) as asked:
        wallet.transfer(PAYEE, 6 * USDC, asset=chain.token.address)
    assert wait_for_pending(network, client).intent_hash == asked.value.intent_hash


class LyingStatus(NewtonGateway):
    """A gateway that tells the waiting agent every intent is approved."""

    def approval_status(self, intent_hash: str) -> ApprovalStatus:
        return ApprovalStatus(intent_hash=intent_hash.lower(), status="approved", expires_at=None)


def test_a_forged_approved_status_gets_no_signature(
    chain: Chain, network: ReferenceNetwork
) -> None:
    """Attack: a lying gateway answers approvalStatus with "approved" although nobody approved.
    The agent re-authorizes, the operators still see no signed approval and ask for one: no
    attestation, nothing signed, the wait ends in a timeout."""
    client = new_client(network, chain)
    real = connect(network, client)
    liar = LyingStatus(network.url, policy_client=client, api_key=network.api_key)
    wallet = make_wallet(chain, network, client, guard=Guard(liar, real.verifier))
    with SigningSpy() as spy, pytest.raises(ApprovalTimedOut):
        wallet.transfer(PAYEE, 11 * USDC, asset=chain.token.address, approval_timeout=1.0)
    assert spy.calls == []
