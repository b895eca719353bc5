"""The anvil launcher: real process, Base chain id, dev accounts, snapshots, clean stop."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from agentguard._exceptions import ConfigurationError
from agentguard.chain import DEV_ACCOUNTS, Anvil, find_anvil
from tests.chain.helpers import OUTSIDER, PAYEE, Env


def test_chain_id_is_base_and_dev_accounts_are_the_nodes(env: Env) -> None:
    assert env.w3.eth.chain_id == 8453
    assert env.w3.eth.accounts == [a.address for a in DEV_ACCOUNTS]
    for account in DEV_ACCOUNTS:
        assert Account.from_key(account.private_key).address == account.address


def test_dev_account_repr_hides_the_key() -> None:
    assert DEV_ACCOUNTS[0].private_key[2:] not in repr(DEV_ACCOUNTS[0])


def test_snapshot_and_revert_restore_state(env: Env) -> None:
    before = env.w3.eth.get_balance(PAYEE)
    snapshot = env.anvil.snapshot()
    # anvil answers eth_sendTransaction before it mines the block (automine runs as its own
    # task): without the receipt, a busy machine reads the balance before the transfer, and a
    # revert can even run before the transaction lands
    tx = env.w3.eth.send_transaction({"from": OUTSIDER, "to": PAYEE, "value": 12345})
    assert env.w3.eth.wait_for_transaction_receipt(tx, timeout=60)["status"] == 1
    assert env.w3.eth.get_balance(PAYEE) == before + 12345
    env.anvil.revert(snapshot)
    assert env.w3.eth.get_balance(PAYEE) == before
    with pytest.raises(ConfigurationError, match="no snapshot"):
        env.anvil.revert(snapshot)  # a snapshot is consumed by reverting to it


def test_stop_ends_the_process_and_frees_the_port() -> None:
    chain = Anvil(chain_id=84532).start()
    pid, url = chain.pid, chain.url
    assert pid is not None
    assert Web3(Web3.HTTPProvider(url)).eth.chain_id == 84532
    chain.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not Web3(Web3.HTTPProvider(url)).is_connected()
    with pytest.raises(ConfigurationError, match="not running"):
        _ = chain.url


def test_env_var_overrides_the_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = find_anvil()
    assert real.name == "anvil" and "node_modules" in real.parts
    monkeypatch.setenv("AGENTGUARD_ANVIL", str(real))
    assert find_anvil() == real
    monkeypatch.setenv("AGENTGUARD_ANVIL", str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match="AGENTGUARD_ANVIL"):
        find_anvil()


def test_a_binary_that_exits_at_once_is_reported(tmp_path: Path) -> None:
    fake = tmp_path / "anvil"
    fake.write_text("#!/bin/sh\necho 'bad flag' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(ConfigurationError, match=r"exited with code 3.*bad flag"):
        Anvil(binary=fake, startup_timeout=5).start()
