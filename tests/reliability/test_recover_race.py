"""A restart's ``recover()`` racing another live agent on a shared ledger.

A receipt settles any agent's signed reservation (the hash is the proof), so an agent that
starts while another's transfer is between its receipt and its own ``commit`` settles that
reservation first. The owner's commit must then find its spend already counted, not fail.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from agentguard import GuardedWallet, Limits, Signer, WindowCap
from agentguard._exceptions import ReservationError
from agentguard._intent import Spend
from agentguard.audit import AuditLog
from agentguard.chain import DEV_ACCOUNTS
from agentguard.ledger import Spent, open_ledger
from agentguard.network.launcher import ReferenceNetwork
from agentguard.pipeline import Runner
from agentguard.pipeline._steps import Commit
from tests.ledger.conftest import base_url, fresh_url

from .conftest import (
    PAYEE,
    Chain,
    guard_for,
    ledger_usage,
    new_client,
    transfers,
    wallet_for,
)

AGENT = "0x1111111111111111111111111111111111111111"
USDC = "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"


@pytest.mark.parametrize("kind", ["sqlite", "redis", "postgres"])
def test_a_landed_transfer_another_agents_recover_settled_first_is_not_reported_failed(
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    chain: Chain,
    network: ReferenceNetwork,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Agent A's transfer has landed (receipt in hand); before A commits, agent B starts and
    runs ``recover()``, whose resolver finds A's receipt and commits A's reservation
    ("recovered: landed"). Before the fix A's own commit then raised ``ReservationError``
    ("already committed ... authorize the action again"): a payment that landed was reported
    as failed, inviting the caller to pay twice, and A's network commit and "committed" audit
    record were skipped. In the crash test, an agent told to die after that commit never died
    (the step raised), so it paid on until pytest's timeout: the CI failure on PostgreSQL."""
    url = fresh_url(kind, base_url(kind, request), tmp_path)
    open_ledger(url, create=True).close()
    audit = tmp_path / "audit.jsonl"
    client = new_client(network, chain.token.address)
    a, b = DEV_ACCOUNTS[3], DEV_ACCOUNTS[4]
    token = chain.token.address
    start = chain.w3.eth.block_number + 1
    settled_by_b: list[Any] = []
    original = Runner.execute

    def execute(self: Runner, step: Any, port: Any = None) -> Any:
        if isinstance(step, Commit) and not settled_by_b:  # B starts right now
            with open_ledger(url) as shared:
                report = wallet_for(chain, network, client, b, shared).recover()
            settled_by_b.extend(report.committed)
        return original(self, step, port)

    monkeypatch.setattr(Runner, "execute", execute)
    with open_ledger(url) as ledger:
        wallet = GuardedWallet(
            signer=Signer.from_key(a.private_key),
            guard=guard_for(network, client),
            web3=chain.w3,
            ledger=ledger,
            limits=Limits(windows=[WindowCap(token, 86_400, 10**15)]),
            audit=AuditLog(audit),
        )
        receipt = wallet.transfer(PAYEE, 5_000_000, asset=token)  # raised before the fix
    # the race did happen: B settled A's reservations (the transfer's and its fee's) from
    # A's receipt before A's own commit
    assert {(r.agent, r.outcome) for r in settled_by_b} == {
        (a.address.lower(), "recovered: landed")
    }
    assert any(r.reserved == 5_000_000 for r in settled_by_b)
    assert transfers(chain, a.address, start) == [(receipt.tx_hash.lower(), 5_000_000)]
    assert ledger_usage(url, a.address, token) == 5_000_000  # counted once
    log = AuditLog(audit)
    assert log.verify().ok
    committed = [e.record for e in log.entries() if e.kind == "committed"]
    assert [str(c["tx_hash"]).lower() for c in committed] == [receipt.tx_hash.lower()]


@pytest.mark.parametrize("kind", ["sqlite", "redis", "postgres"])
def test_a_commit_claiming_more_than_recovery_proved_is_still_refused(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The owner's commit is accepted over a recovered one only as the same spend counted at
    least as much: one that claims more than the chain proved is refused (an attacker's or a
    bug's disagreement stays visible), and nothing it says changes what is counted."""
    url = fresh_url(kind, base_url(kind, request), tmp_path)
    spend = Spend(asset=USDC, amount=100, recipient=PAYEE)
    with open_ledger(url, create=True) as ledger:
        r = ledger.reserve(AGENT, spend, key="k", expires_at=time.time() + 60, limits=Limits())
        ledger.mark_signed(r.id, "permit2:8453:0xowner:7:1764000060")
        (done,) = ledger.recover(lambda _: Spent(30)).committed
        with pytest.raises(ReservationError, match="already committed"):
            ledger.commit(r.id, "landed", 100)
        with pytest.raises(ReservationError, match="already committed"):
            ledger.commit(r.id, "landed")  # everything reserved: more than proved
        again = ledger.commit(r.id, "landed", 30)
        assert (again.amount, again.outcome) == (30, done.outcome)
        assert ledger.usage(AGENT, 3600).spent == {spend.asset: 30}
