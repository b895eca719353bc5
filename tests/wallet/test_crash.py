"""A process killed between reserve and commit leaves a ledger that recovers correctly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentguard import Ledger

from .conftest import AGENT, PAYEE, make_wallet, new_policy_client

CHILD = Path(__file__).with_name("crash_child.py")


def run_child(tmp_path, chain, network, client: str, die: str, amount: int) -> Path:
    db = tmp_path / "ledger.sqlite3"
    cfg = {
        "rpc": chain.anvil.url,
        "ledger": str(db),
        "gateway": network.url,
        "policy_client": client,
        "policy_id": network.policy_clients[client],
        "operators": network.operator_addresses,
        "api_key": network.api_key,
        "key": AGENT.private_key,
        "token": chain.token.address,
        "payee": PAYEE,
        "amount": amount,
        "die": die,
    }
    proc = subprocess.run(
        [sys.executable, str(CHILD), json.dumps(cfg)], capture_output=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    return db


def usdc(chain, account: str) -> int:
    return int(chain.token.functions.balanceOf(account).call())


def test_killed_after_sending_recovers_as_committed(tmp_path, snapshot, network):
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    before = usdc(chain, PAYEE)
    db = run_child(tmp_path, chain, network, client, "after_send", 1_111_111)
    assert usdc(chain, PAYEE) - before == 1_111_111  # it landed; the process never heard

    ledger = Ledger(db)
    wallet = make_wallet(chain, network, policy_client=client, ledger=ledger)
    usage = ledger.usage(wallet.account, 3600)
    assert usage.spent[chain.token.address.lower()] == 1_111_111  # counted while unknown
    report = wallet.recover()
    # the transfer, and (EOA mode) the fee held next to it, both landed
    assert [r.state for r in report.committed if r.action] == ["committed"]
    assert [r.key.endswith(":fee") for r in report.committed] == [False, True]
    assert ledger.usage(wallet.account, 3600).spent[chain.token.address.lower()] == 1_111_111
    # the wallet keeps working after recovery, with the right nonce
    wallet.transfer(PAYEE, 1, asset=chain.token.address)


def test_killed_before_signing_gives_the_budget_back_after_expiry(tmp_path, snapshot, network):
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address, expire_after=2)
    nonce_before = chain.w3.eth.get_transaction_count(AGENT.address)
    db = run_child(tmp_path, chain, network, client, "after_reserve", 2_222_222)
    ledger = Ledger(db)
    wallet = make_wallet(chain, network, policy_client=client, ledger=ledger)
    assert ledger.usage(wallet.account, 3600).spent[chain.token.address.lower()] == 2_222_222
    report = wallet.recover()
    assert report.expired == ()  # not expired yet: still counted, never too loose
    time.sleep(2.5)
    report = wallet.recover()
    assert len(report.expired) == 1
    assert ledger.usage(wallet.account, 3600).spent.get(chain.token.address.lower(), 0) == 0
    assert chain.w3.eth.get_transaction_count(AGENT.address) == nonce_before  # nothing was sent


@pytest.mark.parametrize("die", ["after_send"])
def test_recovery_is_idempotent(tmp_path, snapshot, network, die):
    chain = snapshot
    client, _ = new_policy_client(network, chain.token.address)
    db = run_child(tmp_path, chain, network, client, die, 3_333)
    ledger = Ledger(db)
    wallet = make_wallet(chain, network, policy_client=client, ledger=ledger)
    first = wallet.recover()
    second = wallet.recover()
    assert len([r for r in first.committed if r.action]) == 1
    assert second.committed == () and second.unknown == ()
    assert ledger.usage(wallet.account, 3600).spent[chain.token.address.lower()] == 3_333
