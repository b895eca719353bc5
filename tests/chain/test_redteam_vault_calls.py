"""Red team on the vault's two doors with a valid quorum in hand: calls aimed at the vault itself,
signature encodings the operators never produce, the expiry second, and blob variants.

Each attack here fails closed; the tests pin that down (coverage the earlier suites lacked).
"""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from web3.exceptions import ContractLogicError

from agentguard._eip712 import keccak
from agentguard._intent import TransactionIntent
from agentguard.chain import execute_args, transact
from agentguard.chain.vault import PAYMENT_SIGNATURE_TYPES
from tests.chain.helpers import (
    AGENT,
    CHAIN_ID,
    FACILITATOR,
    MAGIC,
    OPERATORS,
    OUTSIDER,
    PAYEE,
    PAYMENT_AMOUNT,
    POLICY_ID,
    VAULT_ETH,
    VAULT_USDC,
    Env,
    Payment,
    attest,
    reverts,
)


def _call_intent(env: Env, to: str, signature: str, args: list[Any]) -> TransactionIntent:
    types = [t for t in signature[signature.index("(") + 1 : -1].split(",") if t]
    return TransactionIntent(
        from_=env.vault.address,
        to=to,
        data=keccak(signature.encode())[:4] + abi_encode(types, args),
        chain_id=CHAIN_ID,
        function_signature=signature,
    )


def _execute(env: Env, intent: TransactionIntent, *, expires_at: int | None = None) -> Any:
    expires = env.now() + 600 if expires_at is None else expires_at
    attestation = attest(env.vault.address, intent, expires_at=expires)
    return env.vault.functions.execute(*execute_args(intent, attestation))


def test_an_attested_call_to_the_vault_itself_runs_no_owner_function(env: Env) -> None:
    """The agent gets attestations for calls whose target is the vault (so its owner
    functions would see ``msg.sender == vault``): withdraw everything, swap in its own
    operators, change the agent, re-initialize, or make the vault call ``execute`` on itself.
    Each reverts inside (the vault is not its owner, nor its agent) and nothing moves."""
    vault = env.vault.address
    calls: list[tuple[str, list[Any], str]] = [
        (
            "withdraw(address,address,uint256)",
            [env.token.address, OUTSIDER, VAULT_USDC],
            "NotOwner",
        ),
        ("withdraw(address,address,uint256)", ["0x" + "00" * 20, OUTSIDER, VAULT_ETH], "NotOwner"),
        ("setOperators(address[],uint256)", [[OUTSIDER], 1], "NotOwner"),
        ("setAgent(address)", [OUTSIDER], "NotOwner"),
        ("pause()", [], "NotOwner"),
        (
            "initialize(address,address,address[],uint256,bytes32)",
            [OUTSIDER, OUTSIDER, [OUTSIDER], 1, POLICY_ID],
            "AlreadyInitialized",
        ),
    ]
    for signature, args, error in calls:
        intent = _call_intent(env, vault, signature, args)
        with reverts(error, *([vault] if error == "NotOwner" else [])):
            _execute(env, intent).transact({"from": AGENT})
    inner = env.transfer_intent(to=OUTSIDER, amount=VAULT_USDC)
    inner_args: list[Any] = list(
        execute_args(inner, attest(vault, inner, expires_at=env.now() + 600))
    )
    nested = _call_intent(
        env,
        vault,
        "execute(address,uint256,bytes,bytes,bytes32,bytes32,uint64,bytes[],uint8)",
        inner_args,
    )
    with reverts("NotAgent", vault):
        _execute(env, nested).transact({"from": AGENT})
    assert env.usdc(vault) == VAULT_USDC and env.w3.eth.get_balance(vault) == VAULT_ETH
    assert env.vault.functions.operators().call() == OPERATORS


def test_signature_encodings_the_operators_never_produce_are_refused(env: Env) -> None:
    """Raw ``ecrecover`` accepts v = 0/1 as nothing and other encodings differently across
    libraries; a 66-byte signature with a trailing byte, v in {0, 1, 29}, and the all-zero
    signature (ecrecover's address(0)) must each be refused, not counted toward the quorum
    (the high-s twin and the 64-byte EIP-2098 form are covered in test_vault.py)."""
    intent = env.transfer_intent()
    attestation = attest(env.vault.address, intent, expires_at=env.now() + 600)
    args: list[Any] = list(execute_args(intent, attestation))
    good: list[bytes] = args[7]
    for bad in [
        good[1] + b"\x00",
        good[1][:64] + bytes([good[1][64] - 27]),
        good[1][:64] + b"\x1d",
        b"\x00" * 65,
    ]:
        args[7] = [good[0], bad]
        with reverts("MalformedSignature", 1):
            env.vault.functions.execute(*args).transact({"from": AGENT})
    assert env.usdc(PAYEE) == 0
    args[7] = good
    transact(env.w3, env.vault.functions.execute(*args), sender=AGENT)
    assert env.usdc(PAYEE) == 5_000_000


def _next_block_at(env: Env, timestamp: int) -> None:
    env.w3.provider.make_request("evm_setNextBlockTimestamp", [timestamp])  # type: ignore[arg-type]


def _mined_and_refused(env: Env, call: Any, sender: str, error: str) -> None:
    """Sends ``call`` unsimulated (the node would simulate at another timestamp), then asserts
    it reverted, with ``error`` when replayed against the block it was mined in."""
    receipt = env.w3.eth.wait_for_transaction_receipt(call.transact({"from": sender, "gas": 10**6}))
    assert receipt["status"] == 0
    with reverts(error):
        call.call({"from": sender}, block_identifier=receipt["blockNumber"])


def test_an_attestation_is_dead_at_its_expiry_second(env: Env) -> None:
    """``expiresAt`` is exclusive: a call mined in the expiry second itself is refused, one
    mined a second earlier runs; the same holds for a payment the token settles."""
    expires = env.now() + 100
    intent = env.transfer_intent()
    late = _execute(env, intent, expires_at=expires)
    on_time = _execute(env, intent, expires_at=expires)
    _next_block_at(env, expires - 1)
    transact(env.w3, on_time, sender=AGENT)
    _next_block_at(env, expires)
    _mined_and_refused(env, late, AGENT, "AttestationExpired")
    p = Payment(env, expires_at=expires + 100)
    _next_block_at(env, expires + 100)
    _mined_and_refused(env, p.settle_call(), FACILITATOR, "InvalidSignature")
    assert env.usdc(PAYEE) == 5_000_000


def test_blob_variants_neither_pay_twice_nor_pay_anything_else(env: Env) -> None:
    """The facilitator rewrites the ERC-1271 blob: dirty high bits in an address or in the
    uint64 expiry, an offset pointing out of the blob, extra bytes at the end. Dirty and broken
    encodings are refused; extra bytes change nothing the vault reads, so the payment settles
    once and a second variant of the same blob is refused by the token's nonce record."""
    p = Payment(env)
    blob = p.blob()
    dirty_token = b"\xff" * 12 + blob[12:]
    expiry_word = 8 * 32
    dirty_expiry = blob[:expiry_word] + b"\x01" + blob[expiry_word + 1 :]
    bad_offset = blob[: 9 * 32] + (10**6).to_bytes(32, "big") + blob[10 * 32 :]
    for variant in (dirty_token, dirty_expiry, bad_offset, blob[:-40]):
        with pytest.raises(ContractLogicError):  # the vault's strict decode reverts: a "no"
            p.is_valid(variant)
        with reverts("InvalidSignature", env.vault.address):
            p.settle_call(variant).transact({"from": FACILITATOR})
    assert p.is_valid(blob + b"\x00" * 32) == MAGIC
    transact(env.w3, p.settle_call(blob + b"\x00" * 32), sender=FACILITATOR)
    with reverts("AuthorizationAlreadyUsed", env.vault.address, p.attestation.task_id):
        p.settle_call(blob + b"\x01").transact({"from": FACILITATOR})
    assert env.usdc(PAYEE) == PAYMENT_AMOUNT
    assert len(PAYMENT_SIGNATURE_TYPES) == 12  # the layout the offsets above assume
