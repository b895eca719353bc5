"""``tests/anvil_mined.py``: a node-signed send to an automining anvil returns mined, so a test
reads the state after it; nothing else changes."""

from __future__ import annotations

import pytest
from web3 import Web3
from web3.exceptions import ContractLogicError, TransactionNotFound

from tests.chain.helpers import OUTSIDER, PAYEE, Env


def test_every_web3_built_in_the_tests_has_it(env: Env) -> None:
    assert "anvil_mined_sends" in env.w3.middleware_onion
    assert "anvil_mined_sends" in Web3(Web3.HTTPProvider(env.anvil.url)).middleware_onion


def test_a_send_returns_with_its_receipt_and_the_new_state(env: Env) -> None:
    before = env.w3.eth.get_balance(PAYEE)
    tx = env.w3.eth.send_transaction({"from": OUTSIDER, "to": PAYEE, "value": 777})
    assert env.w3.eth.get_transaction_receipt(tx)["status"] == 1  # no waiting: already mined
    assert env.w3.eth.get_balance(PAYEE) == before + 777


def test_with_automine_off_a_send_returns_unmined(env: Env) -> None:
    """Blocks mined by hand stay the test's to mine: the middleware must not wait for them."""
    env.anvil.rpc("evm_setAutomine", False)
    try:
        tx = env.w3.eth.send_transaction({"from": OUTSIDER, "to": PAYEE, "value": 1})
        with pytest.raises(TransactionNotFound):
            env.w3.eth.get_transaction_receipt(tx)
        env.anvil.rpc("evm_mine")
    finally:
        env.anvil.rpc("evm_setAutomine", True)
    assert env.w3.eth.get_transaction_receipt(tx)["status"] == 1


def test_a_reverting_transact_still_raises_before_anything_is_sent(env: Env) -> None:
    nonce = env.w3.eth.get_transaction_count(OUTSIDER)
    with pytest.raises(ContractLogicError):  # gas estimation reverts: nothing sent
        env.token.functions.transfer(PAYEE, 10**30).transact({"from": OUTSIDER})
    assert env.w3.eth.get_transaction_count(OUTSIDER, "pending") == nonce
