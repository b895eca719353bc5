"""The hand-written EIP-1559 encoder must equal eth-account's, byte for byte."""

from __future__ import annotations

from coincurve import PrivateKey
from eth_account import Account
from eth_utils.address import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard._transaction import sign_eip1559


@settings(max_examples=80, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32).filter(
        lambda b: 0 < int.from_bytes(b, "big") < 2**255
    ),
    chain_id=st.integers(1, 2**32),
    nonce=st.integers(0, 2**64 - 1),
    tip=st.integers(0, 2**64),
    fee=st.integers(0, 2**80),
    gas=st.integers(21_000, 30_000_000),
    to=st.binary(min_size=20, max_size=20),
    value=st.integers(0, 2**256 - 1),
    data=st.binary(max_size=300),
)
def test_matches_eth_account(secret, chain_id, nonce, tip, fee, gas, to, value, data):
    raw, tx_hash = sign_eip1559(
        PrivateKey(secret),
        chain_id=chain_id,
        nonce=nonce,
        max_priority_fee_per_gas=tip,
        max_fee_per_gas=fee,
        gas=gas,
        to=to,
        value=value,
        data=data,
    )
    account = Account.from_key(secret)
    expected = account.sign_transaction(
        {
            "type": 2,
            "chainId": chain_id,
            "nonce": nonce,
            "maxPriorityFeePerGas": tip,
            "maxFeePerGas": fee,
            "gas": gas,
            "to": to_checksum_address("0x" + to.hex()),
            "value": value,
            "data": data,
        }
    )
    assert raw == bytes(expected.raw_transaction)
    assert tx_hash == bytes(expected.hash)
    assert Account.recover_transaction(raw) == account.address
