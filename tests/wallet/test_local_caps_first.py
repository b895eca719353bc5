"""Finding 11: local caps are checked (held) before the network is asked, so an action the local
budget refuses never uses up the network's budget; a deny gives the local hold back."""

from __future__ import annotations

import pytest

from agentguard import BudgetExceeded, PolicyDenied
from agentguard.ledger import Ledger, Limits, RateCap, WindowCap
from agentguard.testing import SigningSpy

from .conftest import (
    DAILY_CAP,
    PAYEE,
    PER_TX_CAP,
    STRANGER,
    AuditList,
    make_wallet,
    new_policy_client,
)


def test_refused_locally_never_reaches_the_network(snapshot, network):
    """Before: each locally refused transfer was attested first, and the network kept counting
    it until the attestation expired (300 s): five refusals of 1.000001 USDC used up the 12 USDC
    network day, and the next legitimate 10 USDC purchase was denied. Now nothing is asked."""
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    audit = AuditList()
    limited = make_wallet(
        chain, network, policy_client=client, audit=audit,
        limits=Limits(windows=[WindowCap(chain.token.address, 3600, 3_000_000)]),
    )  # fmt: skip
    asked: list[object] = []
    gateway = limited._guard.authorizer
    original = gateway.authorize
    gateway.authorize = lambda *a, **k: asked.append(a) or original(*a, **k)  # type: ignore[method-assign]
    limited.transfer(PAYEE, 2_000_000, asset=chain.token.address)
    with SigningSpy() as spy:
        for _ in range(5):
            with pytest.raises(BudgetExceeded):
                limited.transfer(PAYEE, 1_000_001, asset=chain.token.address)
    assert spy.calls == [] and len(asked) == 1
    assert audit.kinds[-5:] == ["refused"] * 5
    # the whole rest of the network's day is still there, right away
    other = make_wallet(chain, network, policy_client=client)
    for _ in range(2):  # 2 + 5 + 5 = the 12 USDC day, to the unit
        other.transfer(PAYEE, PER_TX_CAP, asset=chain.token.address)
    assert 2_000_000 + 2 * PER_TX_CAP == DAILY_CAP


def test_a_deny_gives_the_local_hold_back(snapshot, network):
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    ledger = Ledger()
    wallet = make_wallet(
        chain, network, policy_client=client, ledger=ledger,
        limits=Limits(rate=[RateCap(3600, 1)]),
    )  # fmt: skip
    for _ in range(3):
        with pytest.raises(PolicyDenied):
            wallet.transfer(STRANGER, 1, asset=chain.token.address)
    assert ledger.usage(wallet.account, 3600).count == 0
    wallet.transfer(PAYEE, 1, asset=chain.token.address)  # the one allowed action still fits
    with pytest.raises(BudgetExceeded):
        wallet.transfer(PAYEE, 1, asset=chain.token.address)
