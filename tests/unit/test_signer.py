from __future__ import annotations

import copy
import logging
import pickle
import time

import pytest
from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from hexbytes import HexBytes
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard import (
    ConfigurationError,
    IntentMismatch,
    Signer,
    TransactionIntent,
    VerificationError,
    Verifier,
)

from .conftest import PAYEE, POLICY_CLIENT, TOKEN

KEY = "0x" + "4c" * 32
AGENT_ADDRESS = Account.from_key(KEY).address


@pytest.fixture
def signer() -> Signer:
    return Signer.from_key(KEY)


def intent_from(signer: Signer, amount: int = 7) -> TransactionIntent:
    return TransactionIntent.erc20_transfer(
        sender=signer.address, token=TOKEN, recipient=PAYEE, amount=amount, chain_id=8453
    )


def test_signs_exactly_the_attested_intent(signer, operators):
    intent = intent_from(signer)
    verified = Verifier(operators.addresses, policy_client=POLICY_CLIENT).verify(
        operators.attest(intent), intent
    )
    signed = signer.sign_transaction(
        verified, nonce=3, gas=60_000, max_fee_per_gas=10**9, max_priority_fee_per_gas=10**6
    )
    tx = TypedTransaction.from_bytes(HexBytes(signed.raw)).as_dict()
    assert "0x" + bytes(tx["to"]).hex() == TOKEN.lower()
    assert tx["data"] == intent.data
    assert tx["value"] == 0
    assert tx["chainId"] == 8453
    assert Account.recover_transaction(signed.raw) == signer.address
    assert signed.task_id == verified.task_id


@pytest.mark.parametrize("fake", [None, "attestation", object()])
def test_refuses_anything_but_a_verified_attestation(signer, fake):
    with pytest.raises(VerificationError):
        signer.sign_transaction(fake, nonce=0, gas=1, max_fee_per_gas=1, max_priority_fee_per_gas=1)


def test_refuses_an_intent_from_another_account(signer, operators):
    intent = TransactionIntent.erc20_transfer(
        sender=PAYEE, token=TOKEN, recipient=PAYEE, amount=1, chain_id=8453
    )
    verified = Verifier(operators.addresses, policy_client=POLICY_CLIENT).verify(
        operators.attest(intent), intent
    )
    with pytest.raises(IntentMismatch):
        signer.sign_transaction(
            verified, nonce=0, gas=1, max_fee_per_gas=1, max_priority_fee_per_gas=1
        )


def test_key_never_leaks(signer, caplog, monkeypatch):
    secret = KEY[2:]
    caplog.set_level(logging.DEBUG)
    texts = [repr(signer), str(signer)]
    with pytest.raises(TypeError) as pickled:
        pickle.dumps(signer)
    texts.append(str(pickled.value))
    for bad in ("0x1234", "not a key", KEY[:-2]):
        with pytest.raises(ConfigurationError) as info:
            Signer.from_key(bad)
        texts.append(str(info.value))
    monkeypatch.setenv("AGENTGUARD_PRIVATE_KEY", KEY)
    texts.append(repr(Signer.from_env()))
    texts.append(caplog.text)
    for text in texts:
        assert secret not in text.lower()
    assert not hasattr(signer, "__dict__")


def test_keystore_round_trip(tmp_path, signer):
    keystore = Account.encrypt(KEY, "pw", iterations=2)
    path = tmp_path / "key.json"
    import json

    path.write_text(json.dumps(keystore))
    assert Signer.from_keystore(path, "pw").address == signer.address
    with pytest.raises(ConfigurationError) as info:
        Signer.from_keystore(path, "wrong")
    assert KEY[2:] not in str(info.value)


def eip3009(payer: str, payee: str, value: int, token: str = TOKEN, chain_id: int = 8453) -> dict:
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "TransferWithAuthorization": [
                {"name": "from", "type": "address"},
                {"name": "to", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "validAfter", "type": "uint256"},
                {"name": "validBefore", "type": "uint256"},
                {"name": "nonce", "type": "bytes32"},
            ],
        },
        "primaryType": "TransferWithAuthorization",
        "domain": {
            "name": "USD Coin",
            "version": "2",
            "chainId": chain_id,
            "verifyingContract": token,
        },
        "message": {
            "from": payer,
            "to": payee,
            "value": value,
            "validAfter": 0,
            "validBefore": int(time.time()) + 30,  # within the attestation's minute
            "nonce": b"\x07" * 32,
        },
    }


def test_sign_payment_only_signs_the_attested_payment(signer, operators):
    from agentguard import PaymentIntent

    payment = PaymentIntent(
        payer=signer.address,
        scheme="exact",
        network="eip155:8453",
        asset=TOKEN,
        amount=10_000,
        pay_to=PAYEE,
    )

    verified = Verifier(operators.addresses, policy_client=POLICY_CLIENT).verify(
        operators.attest(payment.newton_intent()), payment
    )
    good = eip3009(signer.address, PAYEE, 10_000)
    for bad, field in [
        (eip3009(signer.address, PAYEE, 10_001), "amount"),
        (eip3009(signer.address, TOKEN, 10_000), "payee"),
        (eip3009(signer.address, PAYEE, 10_000, token=PAYEE), "token"),
        (eip3009(signer.address, PAYEE, 10_000, chain_id=84532), "chainId"),
        (eip3009(PAYEE, PAYEE, 10_000), "payer"),
        ({**good, "primaryType": "Permit"}, "primaryType"),
    ]:
        with pytest.raises(IntentMismatch, match=field):  # refused: signs nothing, uses nothing
            signer.sign_payment(verified, bad)
    signature = signer.sign_payment(verified, good)
    assert (
        Account.recover_message(
            __import__("eth_account.messages", fromlist=["x"]).encode_typed_data(full_message=good),
            signature=signature,
        )
        == signer.address
    )
    with pytest.raises(IntentMismatch):  # a transaction attestation cannot sign a payment
        tx_intent = intent_from(signer)
        tx_verified = Verifier(operators.addresses, policy_client=POLICY_CLIENT).verify(
            operators.attest(tx_intent), tx_intent
        )
        signer.sign_payment(tx_verified, good)


@settings(max_examples=60, deadline=None)
@given(
    value=st.integers(0, 2**256 - 1),
    valid_after=st.integers(0, 2**64),
    valid_before=st.integers(0, 2**64),
    nonce=st.binary(min_size=32, max_size=32),
    chain_id=st.integers(1, 2**32),
    name=st.text(max_size=20),
    hex_nonce=st.booleans(),
)
def test_eip3009_fast_path_equals_eth_account(
    value, valid_after, valid_before, nonce, chain_id, name, hex_nonce
):
    from eth_account.messages import encode_typed_data

    from agentguard._signer import eip3009_digest

    typed = eip3009(AGENT_ADDRESS, PAYEE, value, chain_id=chain_id)
    typed["domain"]["name"] = name
    typed["message"].update(
        validAfter=valid_after,
        validBefore=valid_before,
        nonce="0x" + nonce.hex() if hex_nonce else nonce,
    )
    generic = encode_typed_data(
        full_message={**typed, "message": {**typed["message"], "nonce": nonce}}
    )
    from eth_utils.crypto import keccak as k

    assert eip3009_digest(typed) == k(b"\x19" + generic.version + generic.header + generic.body)


def test_other_typed_data_shapes_fall_back_to_the_generic_encoder():
    from agentguard._signer import eip3009_digest

    typed = eip3009(AGENT_ADDRESS, PAYEE, 1)
    typed["types"]["TransferWithAuthorization"] = typed["types"]["TransferWithAuthorization"][:-1]
    assert eip3009_digest(typed) is None
    assert eip3009_digest({**eip3009(AGENT_ADDRESS, PAYEE, 1), "primaryType": "Permit"}) is None


def _permit2(payer_token: str, spender: str, amount: int = 10_000) -> dict:
    """x402's upto Permit2 authorization (the only Permit2 shape the signer signs)."""
    from agentguard.x402.upto.client import _TYPES, PERMIT2

    return {
        "types": copy.deepcopy(_TYPES),
        "primaryType": "PermitWitnessTransferFrom",
        "domain": {"name": "Permit2", "chainId": 8453, "verifyingContract": PERMIT2},
        "message": {
            "permitted": {"token": payer_token, "amount": amount},
            "spender": spender,
            "nonce": 1,
            "deadline": int(time.time()) + 30,
            "witness": {"to": PAYEE, "facilitator": PAYEE, "validAfter": 0},
        },
    }


def test_permit2_signs_only_for_a_trusted_spender_and_the_signers_own_payment(signer, operators):
    from agentguard import PaymentIntent
    from agentguard.x402.upto.client import UPTO_PERMIT2_PROXY

    def verified_for(payer: str):
        payment = PaymentIntent(
            payer=payer,
            scheme="upto",
            network="eip155:8453",
            asset=TOKEN,
            amount=10_000,
            pay_to=PAYEE,
        )
        return Verifier(operators.addresses, policy_client=POLICY_CLIENT).verify(
            operators.attest(payment.newton_intent()), payment
        )

    trusted = [UPTO_PERMIT2_PROXY]
    assert signer.sign_payment(
        verified_for(signer.address), _permit2(TOKEN, UPTO_PERMIT2_PROXY), permit2_spenders=trusted
    )
    with pytest.raises(IntentMismatch, match="spender"):
        signer.sign_payment(
            verified_for(signer.address), _permit2(TOKEN, PAYEE), permit2_spenders=trusted
        )
    with pytest.raises(IntentMismatch, match="spender"):  # nothing is trusted by default
        signer.sign_payment(verified_for(signer.address), _permit2(TOKEN, UPTO_PERMIT2_PROXY))
    with pytest.raises(IntentMismatch, match="from"):  # Permit2's owner is whoever signs
        signer.sign_payment(
            verified_for(PAYEE), _permit2(TOKEN, UPTO_PERMIT2_PROXY), permit2_spenders=trusted
        )
