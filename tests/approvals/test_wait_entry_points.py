"""``approval_timeout=`` reaches the pipeline from every entry point built on it: the decorator
(both forms) and ``run_call``. Each waits for a person, resumes the same intent, and runs or
sends once approved; rejected, it never runs."""

from __future__ import annotations

import contextlib

import pytest

from agentguard import AgentGuardError, ApprovalRejected, Ledger, Limits, RateCap, TransactionIntent
from agentguard.network.launcher import ReferenceNetwork

from .conftest import AGENT, PAYEE, USDC, Chain, balance, connect, make_wallet, new_client
from .test_wait import in_thread, wait_for_pending

ETH = "0x" + "00" * 20


def _offchain_client(network: ReferenceNetwork) -> str:
    """A client whose policy asks a person about every call it cannot value (offchain calls)."""
    client = "0x" + "ac" * 20
    if client not in network.policy_clients:
        network.register_policy_client(client, "approval_threshold", {"approval_above": {ETH: "0"}})
    return client


def test_run_call_waits_for_a_person_then_runs_once(network: ReferenceNetwork) -> None:
    client = _offchain_client(network)
    guard = connect(network, client)
    ran: list[str] = []
    with contextlib.closing(guard):
        thread, out = in_thread(
            lambda: guard.run_call(
                "send_email",
                {"to": "ops@example.com"},
                lambda: ran.append("sent") or "ok",
                agent=AGENT.address,
                ledger=Ledger(),
                limits=Limits(rate=[RateCap(60, 10)]),
                approval_timeout=60,
            )
        )
        view = wait_for_pending(network, client)
        assert ran == []  # nothing runs while a person decides
        network.approve(client, view.intent_hash)
        thread.join(90)
    assert "error" not in out, out.get("error")
    assert out["result"] == "ok" and ran == ["sent"]


def test_a_rejected_decorated_call_never_runs(network: ReferenceNetwork) -> None:
    client = _offchain_client(network)
    guard = connect(network, client)
    ran: list[str] = []

    @guard.action(
        agent=AGENT.address,
        ledger=Ledger(),
        limits=Limits(rate=[RateCap(60, 10)]),
        approval_timeout=60,
    )
    def delete_records(table: str) -> str:
        ran.append(table)
        return "deleted"

    with contextlib.closing(guard):
        thread, out = in_thread(lambda: delete_records("customers"))
        view = wait_for_pending(network, client)
        network.reject(client, view.intent_hash)
        thread.join(90)
    assert isinstance(out.get("error"), ApprovalRejected)
    assert ran == []


def test_the_intent_form_waits_and_lands(chain: Chain, network: ReferenceNetwork) -> None:
    client = new_client(network, chain)
    wallet = make_wallet(chain, network, client)
    guard = connect(network, client)

    @guard.action(wallet=wallet, approval_timeout=60)
    def pay_invoice(amount: int) -> TransactionIntent:
        return TransactionIntent.erc20_transfer(
            sender=AGENT.address,
            token=chain.token.address,
            recipient=PAYEE,
            amount=amount,
            chain_id=8453,
        )

    before = balance(chain, PAYEE)
    thread, out = in_thread(lambda: pay_invoice(9 * USDC))
    view = wait_for_pending(network, client)
    network.approve(client, view.intent_hash)
    thread.join(90)
    assert "error" not in out, out.get("error")
    assert balance(chain, PAYEE) - before == 9 * USDC


@pytest.mark.parametrize("timeout", [-1.0, float("nan")])
def test_a_nonsense_timeout_is_refused_before_anyone_is_asked(
    network: ReferenceNetwork, timeout: float
) -> None:
    client = _offchain_client(network)
    guard = connect(network, client)
    with contextlib.closing(guard), pytest.raises(AgentGuardError):
        guard.run_call(
            "send_email",
            {},
            lambda: None,
            agent=AGENT.address,
            ledger=Ledger(),
            limits=Limits(),
            approval_timeout=timeout,
        )


def test_the_langchain_toolkit_transfer_waits_for_a_person(
    chain: Chain, network: ReferenceNetwork
) -> None:
    """A model's transfer above the approval threshold waits for the person, then lands."""
    from langchain_agentguard import AgentGuardToolkit

    client = new_client(network, chain)
    wallet = make_wallet(chain, network, client)
    tools = AgentGuardToolkit(
        guard=connect(network, client),
        wallet=wallet,
        web3=chain.w3,
        tokens=chain.usdc,
        approval_timeout=60,
    ).get_tools()
    transfer = next(t for t in tools if t.name == "transfer")
    before = balance(chain, PAYEE)
    thread, out = in_thread(lambda: transfer.invoke({"to": PAYEE, "amount": "6 USDC"}))
    view = wait_for_pending(network, client)
    assert view.recipient.lower() == PAYEE.lower() and view.problem is None
    network.approve(client, view.intent_hash)
    thread.join(90)
    assert "error" not in out, out.get("error")
    assert out["result"].startswith("Sent 6 USDC")
    assert balance(chain, PAYEE) - before == 6 * USDC
