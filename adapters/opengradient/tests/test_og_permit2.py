"""The project's Permit2 and x402 upto proxy on anvil, at their canonical addresses, driven by
the exact typed data ``X402Auth`` signs for an ``upto`` payment."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import AGENT, FACILITATOR, OPG, PAYEE, STRANGER, Chain, reverts, start_chain
from eth_account import Account
from eth_account.messages import encode_typed_data
from web3 import Web3

from agentguard.chain import transact
from agentguard.ledger import Reservation
from agentguard.x402 import resolver
from agentguard.x402._wire import Requirement
from agentguard.x402.upto import client as upto_client

MAX = OPG // 10


@pytest.fixture(scope="module")
def module_chain() -> Iterator[Chain]:
    anvil, chain = start_chain()
    transact(
        chain.w3, chain.opg.functions.approve(upto_client.PERMIT2, 10 * OPG), sender=AGENT.address
    )
    try:
        yield chain
    finally:
        anvil.stop()


@pytest.fixture
def chain(module_chain: Chain) -> Iterator[Chain]:
    snapshot = module_chain.anvil.snapshot()
    try:
        yield module_chain
    finally:
        module_chain.anvil.revert(snapshot)


def now(chain: Chain) -> int:
    return int(chain.w3.eth.get_block("latest")["timestamp"])


def signed_permit(
    chain: Chain, *, nonce: int = 7, deadline_in: int = 300, **witness: Any
) -> dict[str, Any]:
    """What the agent's ``X402Auth`` signs for a 402 offering ``MAX`` to PAYEE via FACILITATOR."""
    req = Requirement(
        x402_version=2, scheme="upto", network="eip155:8453", amount=MAX,
        asset=chain.opg.address, pay_to=PAYEE.address, max_timeout_seconds=deadline_in,
        extra={"facilitatorAddress": FACILITATOR.address}, resource="", raw={},
    )  # fmt: skip
    typed = upto_client.typed_data(
        req, AGENT.address, deadline=now(chain) + deadline_in, nonce=nonce
    )
    typed["message"]["witness"].update(witness)
    signature = Account.sign_typed_data(AGENT.private_key, full_message=typed).signature
    payload = upto_client.payload(typed, bytes(signature), AGENT.address)
    return {"typed": typed, "payload": payload}


def settle_args(permit: dict[str, Any], amount: int, **witness_override: Any) -> tuple[Any, ...]:
    auth = permit["payload"]["permit2Authorization"]
    witness = {**auth["witness"], **witness_override}
    return (
        (
            (auth["permitted"]["token"], int(auth["permitted"]["amount"])),
            int(auth["nonce"]),
            int(auth["deadline"]),
        ),
        amount,
        auth["from"],
        (witness["to"], witness["facilitator"], int(witness["validAfter"])),
        bytes.fromhex(permit["payload"]["signature"][2:]),
    )


def settle(
    chain: Chain,
    permit: dict[str, Any],
    amount: int,
    *,
    sender: str = FACILITATOR.address,
    **witness: Any,
) -> Any:
    """Settles and waits for the receipt: anvil answers the send before it mines the block, so
    a balance read right after would see the state before the settlement."""
    tx = chain.proxy.functions.settle(*settle_args(permit, amount, **witness)).transact(
        {"from": sender}
    )
    return chain.w3.eth.wait_for_transaction_receipt(tx, timeout=60)


def reservation(permit: dict[str, Any]) -> Reservation:
    reference = upto_client.reference(permit["typed"], AGENT.address)
    return Reservation(
        id="r", key="k", agent=AGENT.address, asset="", amount=MAX, reserved=MAX, recipient=None,
        state="signed", created_at=0, expires_at=0, updated_at=0, reference=reference,
    )  # fmt: skip


def test_contracts_sit_at_the_canonical_addresses(chain: Chain) -> None:
    assert chain.permit2.address == upto_client.PERMIT2
    assert chain.proxy.address == upto_client.UPTO_PERMIT2_PROXY
    assert chain.proxy.functions.PERMIT2().call() == upto_client.PERMIT2
    assert chain.opg.functions.name().call() == "OpenGradient"
    assert chain.opg.functions.decimals().call() == 18


def test_domain_separator_is_permit2s_for_its_own_address(chain: Chain) -> None:
    typed = signed_permit(chain)["typed"]
    # eth-account's generic EIP-712 encoder: header = the domain separator of the signed data
    assert (
        chain.permit2.functions.DOMAIN_SEPARATOR().call()
        == encode_typed_data(full_message=typed).header
    )
    domain = Web3.keccak(
        Web3.keccak(text="EIP712Domain(string name,uint256 chainId,address verifyingContract)")
        + Web3.keccak(text="Permit2")
        + (8453).to_bytes(32, "big")
        + bytes(12)
        + bytes.fromhex(upto_client.PERMIT2[2:])
    )
    assert chain.permit2.functions.DOMAIN_SEPARATOR().call() == domain


def test_valid_settle_moves_the_actual_amount_once(chain: Chain) -> None:
    permit = signed_permit(chain)
    payer, payee = chain.balance(AGENT.address), chain.balance(PAYEE.address)
    check = resolver(chain.w3)
    assert check(reservation(permit)) == "unknown"  # unspent and not yet expired
    actual = MAX // 3
    settle(chain, permit, actual)
    assert chain.balance(AGENT.address) == payer - actual
    assert chain.balance(PAYEE.address) == payee + actual
    assert chain.permit2.functions.nonceBitmap(AGENT.address, 0).call() == 1 << 7
    assert check(reservation(permit)) == "committed"
    with reverts("InvalidNonce"):  # the same permit cannot be settled again
        settle(chain, permit, 1)


def test_amount_above_the_permitted_maximum_is_refused(chain: Chain) -> None:
    permit = signed_permit(chain)
    with reverts("AmountExceedsPermitted") as args:
        settle(chain, permit, MAX + 1)
    assert args == [MAX + 1, MAX]


def test_witness_binds_payee_facilitator_and_start(chain: Chain) -> None:
    permit = signed_permit(chain)
    with reverts("InvalidSigner"):  # redirected to another payee: not what the agent signed
        settle(chain, permit, 1, to=STRANGER.address)
    with reverts("UnauthorizedFacilitator"):  # only the witnessed facilitator may settle
        settle(chain, permit, 1, sender=STRANGER.address)
    with reverts("InvalidSigner"):  # a stranger naming itself as facilitator breaks the signature
        settle(chain, permit, 1, sender=STRANGER.address, facilitator=STRANGER.address)
    early = signed_permit(chain, nonce=8, validAfter=now(chain) + 3600)
    with reverts("PaymentTooEarly"):
        settle(chain, early, 1)
    assert chain.balance(PAYEE.address) == 0


def test_a_spent_nonce_refuses_another_permit_with_it(chain: Chain) -> None:
    settle(chain, signed_permit(chain, nonce=300), 5)
    assert chain.permit2.functions.nonceBitmap(AGENT.address, 1).call() == 1 << (300 - 256)
    with reverts("InvalidNonce"):
        settle(chain, signed_permit(chain, nonce=300), 5)


def test_deadline_passed_is_refused_and_the_ledger_releases_it(chain: Chain) -> None:
    permit = signed_permit(chain, deadline_in=60)
    deadline = int(permit["typed"]["message"]["deadline"])
    chain.anvil.rpc("evm_increaseTime", 120)
    chain.anvil.rpc("evm_mine")
    with reverts("SignatureExpired") as args:
        settle(chain, permit, 1)
    assert args == [deadline]
    assert resolver(chain.w3, clock=lambda: deadline + 1)(reservation(permit)) == "released"


def test_settling_more_than_the_allowance_passes_the_token_error_through(chain: Chain) -> None:
    transact(chain.w3, chain.opg.functions.approve(upto_client.PERMIT2, 10), sender=AGENT.address)
    with reverts("InsufficientAllowance") as args:
        settle(chain, signed_permit(chain), 11)
    assert args == [upto_client.PERMIT2.lower(), 10, 11]
