"""AgentVault.execute: an attested call lands; every way around the attestation reverts with
the custom error that says what failed."""

from __future__ import annotations

import secrets

import pytest
from web3 import Web3

from agentguard._attestation import attestation_digest, operator_address
from agentguard._eip712 import domain_separator, keccak
from agentguard._exceptions import IntentMismatch, VerificationError
from agentguard._intent import PaymentIntent, TransactionIntent
from agentguard.chain import execute_args, execute_calldata, transact
from tests.chain.helpers import (
    AGENT,
    CHAIN_ID,
    OPERATOR_KEYS,
    OPERATORS,
    OUTSIDER,
    PAYEE,
    POLICY_ID,
    STRANGER_KEYS,
    VAULT_USDC,
    Env,
    attest,
    events,
    high_s,
    reverts,
)


def _execute(env: Env, args: tuple[object, ...] | list[object], sender: str = AGENT) -> object:
    return transact(env.w3, env.vault.functions.execute(*args), sender=sender)


def _attested_transfer(
    env: Env, amount: int = 5_000_000, **kw: object
) -> tuple[TransactionIntent, list[object]]:
    intent = env.transfer_intent(amount=amount)
    attestation = attest(env.vault.address, intent, expires_at=env.now() + 600, **kw)  # type: ignore[arg-type]
    return intent, list(execute_args(intent, attestation))


def test_attested_token_transfer_lands(env: Env) -> None:
    intent, args = _attested_transfer(env)
    receipt = _execute(env, args)
    assert env.usdc(PAYEE) == 5_000_000
    assert env.usdc(env.vault.address) == VAULT_USDC - 5_000_000
    (executed,) = events(env.vault, "Executed", receipt)  # type: ignore[arg-type]
    assert executed == {
        "taskId": args[4],
        "to": env.token.address,
        "value": 0,
        "dataHash": keccak(intent.data),
    }
    assert env.vault.functions.taskUsed(args[4]).call() is True


def test_attested_eth_payment_lands_via_raw_calldata(env: Env) -> None:
    intent = TransactionIntent(from_=env.vault.address, to=PAYEE, value=12345, chain_id=CHAIN_ID)
    attestation = attest(env.vault.address, intent, expires_at=env.now() + 600)
    before = env.w3.eth.get_balance(PAYEE)
    tx = env.w3.eth.send_transaction(
        {"from": AGENT, "to": env.vault.address, "data": execute_calldata(intent, attestation)}
    )
    assert env.w3.eth.wait_for_transaction_receipt(tx)["status"] == 1
    assert env.w3.eth.get_balance(PAYEE) == before + 12345


def test_all_three_operators_also_pass(env: Env) -> None:
    _, args = _attested_transfer(env, keys=OPERATOR_KEYS)
    _execute(env, args)
    assert env.usdc(PAYEE) == 5_000_000


def _assert_unknown_signer(env: Env, args: list[object]) -> None:
    """The signatures recover to keys nobody configured: the digest the vault computed for
    this call differs from the one the operators signed."""
    with reverts("UnknownOperator") as got:
        env.vault.functions.execute(*args).call({"from": AGENT})
    assert got[0] not in OPERATORS


def test_mutated_to_value_or_calldata_is_refused(env: Env) -> None:
    _, args = _attested_transfer(env)
    other = TransactionIntent.erc20_transfer(
        sender=env.vault.address,
        token=env.token.address,
        recipient=OUTSIDER,
        amount=5_000_000,
        chain_id=CHAIN_ID,
    )
    for index, mutated in [
        (0, OUTSIDER),  # to
        (1, 1),  # value
        (2, other.data),  # calldata: same amount, another recipient
        (2, args[2][:-1] + b"\x01"),  # calldata: one byte of the amount
    ]:
        tampered = list(args)
        tampered[index] = mutated
        _assert_unknown_signer(env, tampered)
    assert env.usdc(PAYEE) == 0
    _execute(env, args)  # the untampered call is the one that was attested
    assert env.usdc(PAYEE) == 5_000_000


def test_signatures_for_another_chain_are_refused(env: Env) -> None:
    _, args = _attested_transfer(env, chain_id=1)
    _assert_unknown_signer(env, args)


def test_signatures_for_another_vault_are_refused(env: Env) -> None:
    intent = env.transfer_intent()
    same_call_elsewhere = TransactionIntent.erc20_transfer(
        sender=OUTSIDER,
        token=env.token.address,
        recipient=PAYEE,
        amount=5_000_000,
        chain_id=CHAIN_ID,
    )
    elsewhere = attest(OUTSIDER, same_call_elsewhere, expires_at=env.now() + 600)
    args = [intent.to, 0, intent.data, intent.function_signature.encode(), elsewhere.task_id, POLICY_ID,
            elsewhere.expires_at, [s.signature for s in elsewhere.signatures], 0]  # fmt: skip
    _assert_unknown_signer(env, args)


def test_replayed_task_is_refused(env: Env) -> None:
    _, args = _attested_transfer(env)
    _execute(env, args)
    with reverts("TaskAlreadyUsed", args[4]):
        _execute(env, args)
    assert env.usdc(PAYEE) == 5_000_000


def test_expired_attestation_is_refused(env: Env) -> None:
    intent = env.transfer_intent()
    expires = env.now()  # the next block's timestamp is at least this
    args = list(execute_args(intent, attest(env.vault.address, intent, expires_at=expires)))
    with reverts("AttestationExpired"):
        _execute(env, args)


def test_unknown_keys_are_refused(env: Env) -> None:
    _, args = _attested_transfer(env, keys=STRANGER_KEYS)
    with reverts("UnknownOperator", operator_address(STRANGER_KEYS[0])):
        _execute(env, args)
    # one stranger among enough operators still poisons the set
    _, args = _attested_transfer(env, keys=[*OPERATOR_KEYS[:2], STRANGER_KEYS[1]])
    with reverts("UnknownOperator", operator_address(STRANGER_KEYS[1])):
        _execute(env, args)


def test_duplicate_signatures_are_refused(env: Env) -> None:
    _, args = _attested_transfer(env, keys=[OPERATOR_KEYS[0], OPERATOR_KEYS[0]])
    with reverts("DuplicateSignature", OPERATORS[0]):
        _execute(env, args)


def test_fewer_than_threshold_is_refused(env: Env) -> None:
    _, args = _attested_transfer(env, keys=OPERATOR_KEYS[:1])
    with reverts("InsufficientQuorum", 1, 2):
        _execute(env, args)


def test_agent_without_attestation_is_refused(env: Env) -> None:
    _, args = _attested_transfer(env)
    args[7] = []
    with reverts("InsufficientQuorum", 0, 2):
        _execute(env, args)


def test_high_s_signature_is_refused(env: Env) -> None:
    _, args = _attested_transfer(env)
    signatures = list(args[7])  # type: ignore[call-overload]
    signatures[1] = high_s(signatures[1])
    args[7] = signatures
    with reverts("MalformedSignature", 1):
        _execute(env, args)
    args[7] = [signatures[0], signatures[1][:64]]
    with reverts("MalformedSignature", 1):
        _execute(env, args)


def test_paused_vault_refuses_then_resumes(env: Env) -> None:
    _, args = _attested_transfer(env)
    transact(env.w3, env.vault.functions.pause(), sender=env.vault.functions.owner().call())
    with reverts("VaultPaused"):
        _execute(env, args)
    transact(env.w3, env.vault.functions.unpause(), sender=env.vault.functions.owner().call())
    _execute(env, args)
    assert env.usdc(PAYEE) == 5_000_000


def test_caller_other_than_agent_is_refused(env: Env) -> None:
    _, args = _attested_transfer(env)
    with reverts("NotAgent", OUTSIDER):
        _execute(env, args, sender=OUTSIDER)


def test_other_policy_id_is_refused(env: Env) -> None:
    other = keccak(b"another policy")
    _, args = _attested_transfer(env, policy_id=other)
    with reverts("PolicyMismatch", POLICY_ID, other):
        _execute(env, args)


def test_function_signature_must_match_calldata(env: Env) -> None:
    intent, args = _attested_transfer(env)
    for signature, data in [
        (b"approve(address,uint256)", intent.data),  # wrong signature for the selector
        (b"", intent.data),  # calldata without a signature
        (b"transfer(address,uint256)", b""),  # a signature without calldata
        (b"transfer(address,uint256)", intent.data[:3]),  # shorter than a selector
    ]:
        tampered = list(args)
        tampered[2], tampered[3] = data, signature
        with reverts("FunctionSignatureMismatch"):
            _execute(env, tampered)


def test_target_revert_data_bubbles_up(env: Env) -> None:
    _, args = _attested_transfer(env, amount=VAULT_USDC + 1)
    with reverts("InsufficientBalance", env.vault.address, VAULT_USDC, VAULT_USDC + 1):
        _execute(env, args)
    assert env.vault.functions.taskUsed(args[4]).call() is False  # the whole call reverted


def test_python_digests_equal_the_contracts(env: Env) -> None:
    v = env.vault.functions
    intent = env.transfer_intent(amount=123_456_789)
    assert (
        v.intentHash(
            intent.to, intent.value, intent.data, intent.function_signature.encode()
        ).call()
        == intent.intent_hash
    )
    eth = TransactionIntent(from_=env.vault.address, to=PAYEE, value=10**30, chain_id=CHAIN_ID)
    assert v.intentHash(PAYEE, 10**30, b"", b"").call() == eth.intent_hash
    payment = PaymentIntent(payer=env.vault.address, scheme="exact", network="eip155:8453",
                            asset=env.token.address, amount=42, pay_to=PAYEE)  # fmt: skip
    transfer = payment.newton_intent()
    assert (
        v.intentHash(transfer.to, 0, transfer.data, b"transfer(address,uint256)").call()
        == payment.intent_hash
    )
    vault = bytes.fromhex(env.vault.address[2:])
    assert v.domainSeparator().call() == domain_separator(CHAIN_ID, vault)
    for tier in (0, 1, 7):
        task, policy, expires = (
            secrets.token_bytes(32),
            secrets.token_bytes(32),
            secrets.randbits(64),
        )
        python = attestation_digest(chain_id=CHAIN_ID, policy_client=vault, task_id=task, policy_id=policy,
                                    intent_hash=intent.intent_hash, allow=True, expires_at=expires,
                                    tier=tier)  # fmt: skip
        assert v.attestationDigest(task, policy, intent.intent_hash, expires, tier).call() == python


def test_helper_refuses_what_the_vault_would_refuse(env: Env) -> None:
    intent = env.transfer_intent()
    attestation = attest(env.vault.address, intent, expires_at=env.now() + 600)
    with pytest.raises(VerificationError, match="allow"):
        execute_args(intent, attestation.model_copy(update={"decision": "deny"}))
    with pytest.raises(IntentMismatch, match="different intent"):
        execute_args(env.transfer_intent(amount=1), attestation)
    foreign = TransactionIntent.erc20_transfer(
        sender=OUTSIDER,
        token=env.token.address,
        recipient=PAYEE,
        amount=5_000_000,
        chain_id=CHAIN_ID,
    )
    with pytest.raises(IntentMismatch, match="own address"):
        execute_args(foreign, attestation)
    selectors = {
        Web3.keccak(text=f"{i['name']}({','.join(x['type'] for x in i['inputs'])})")[:4]
        for i in env.vault.abi
        if i["type"] == "function" and i["name"] == "execute"
    }
    assert selectors == {execute_calldata(intent, attestation)[:4]}
