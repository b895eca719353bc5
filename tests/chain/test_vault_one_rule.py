"""Issue 14.1: the vault's ERC-1271 path and ``execute`` share one rule ("this attestation
authorizes exactly this movement of this asset, once"), and no contract but the attested token
gets a yes from the vault.

The attacker holds the agent key (a compromised agent host) and can get attestations for
whatever the policy allows; here, a transfer of a worthless token of their own.
"""

from __future__ import annotations

import secrets

from eth_abi.abi import encode as abi_encode
from web3.contract import Contract

from agentguard._attestation import operator_address, sign_attestation
from agentguard._eip712 import address_word, keccak, typed_data_digest, uint_word
from agentguard._intent import TransactionIntent
from agentguard.chain import deploy, execute_args, transact
from agentguard.chain.eip3009 import RECEIVE_WITH_AUTHORIZATION_TYPE
from agentguard.chain.vault import PAYMENT_SIGNATURE_TYPES
from tests.chain.helpers import (
    AGENT,
    AGENT_KEY,
    CHAIN_ID,
    FACILITATOR,
    INVALID,
    MAGIC,
    OUTSIDER,
    OWNER,
    PAYEE,
    PAYMENT_AMOUNT,
    STRANGER_KEYS,
    VAULT_USDC,
    DeployTest,
    Env,
    Payment,
    attest,
    create_vault,
    reverts,
)

STOLEN = 500_000_000  # 500 USDC
STRANGERS = [operator_address(k) for k in STRANGER_KEYS]


def _second_usdc(env: Env) -> Contract:
    """Another real EIP-3009 token, same name and version, holding vault funds."""
    token = deploy(env.w3, "UsdCoin", sender=OWNER)
    transact(env.w3, token.functions.mint(env.vault.address, VAULT_USDC), sender=OWNER)
    return token


def _balances(env: Env, *tokens: Contract) -> list[int]:
    of = [t.functions.balanceOf for t in tokens]
    return [int(b(a).call()) for b in of for a in (env.vault.address, PAYEE)]


def test_attestation_for_a_fake_token_pays_no_real_token(env: Env, deploy_test: DeployTest) -> None:
    """The issue's attack. Before the fix the vault took the token from the blob and read its
    ``DOMAIN_SEPARATOR()``: a fake token returning USDC's domain let an attestation for 500
    *fake* tokens (USDC's caps never applied) settle a real USDC ``transferWithAuthorization``,
    and, since nothing marked the task used, the same attestation then paid on a second
    EIP-3009 token. Both payments succeeded; now the vault answers only the attested token."""
    usdc2 = _second_usdc(env)
    fake = deploy_test(env.w3, "FakeToken", env.token.functions.DOMAIN_SEPARATOR().call())
    p = Payment(env, amount=STOLEN, asset=fake.address)  # attested: a transfer of FAKE
    before = _balances(env, env.token, usdc2)

    assert p.is_valid(p.blob()) == INVALID  # USDC asks: it is not the attested asset
    with reverts("InvalidSignature", env.vault.address):
        p.settle_call().transact({"from": FACILITATOR})

    # the fake token now mimics the second token's domain: the same attestation, again
    transact(
        env.w3,
        fake.functions.setDomainSeparator(usdc2.functions.DOMAIN_SEPARATOR().call()),
        sender=OWNER,
    )
    q = Payment(env, amount=STOLEN, asset=fake.address, token=usdc2, replay=p.attestation)
    assert q.is_valid(q.blob()) == INVALID
    with reverts("InvalidSignature", env.vault.address):
        q.settle_call().transact({"from": FACILITATOR})
    assert _balances(env, env.token, usdc2) == before

    # The vault's yes speaks only to the asker: the fake token, asking about itself, is told
    # what the operators attested (a transfer of fake tokens, which moves nothing real).
    assert bytes(fake.functions.ask(env.vault.address, q.digest, q.blob()).call()) == MAGIC


def test_nonce_answers_from_the_asset_fail_closed(env: Env, deploy_test: DeployTest) -> None:
    """Single use rests on the asset's EIP-3009 nonce record. Any nonzero answer counts as
    spent (on both paths); a token that gives no answer gets no payment (``execute`` still
    works: a call target need not be a token)."""
    fake = deploy_test(env.w3, "FakeToken", env.token.functions.DOMAIN_SEPARATOR().call())
    p = Payment(env, asset=fake.address)  # USDC's domain, which the fake claims

    def fake_asks() -> bytes:
        return bytes(fake.functions.ask(env.vault.address, p.digest, p.blob()).call())

    assert fake_asks() == MAGIC
    intent = p.intent.newton_intent()
    execute = env.vault.functions.execute(*execute_args(intent, p.attestation))
    transact(env.w3, fake.functions.setNonceAnswer(2, False), sender=OWNER)
    assert fake_asks() == INVALID
    with reverts("TaskAlreadyUsed", p.attestation.task_id):
        execute.transact({"from": AGENT})
    transact(env.w3, fake.functions.setNonceAnswer(0, True), sender=OWNER)
    assert fake_asks() == INVALID
    transact(env.w3, execute, sender=AGENT)
    assert env.vault.functions.taskUsed(p.attestation.task_id).call() is True


def test_a_real_payment_settles_on_its_own_token_only(env: Env) -> None:
    """Replay of a legitimate attestation on a second EIP-3009 token: refused whether the blob
    names the attested token (it is not the one asking) or the asking one (not attested)."""
    usdc2 = _second_usdc(env)
    p = Payment(env)
    transact(env.w3, p.settle_call(), sender=FACILITATOR)
    on_usdc2 = Payment(env, token=usdc2, replay=p.attestation)
    names_usdc = on_usdc2.raw_blob(token=env.token.address)
    names_usdc2 = on_usdc2.raw_blob(token=usdc2.address)
    for blob in (names_usdc, names_usdc2):
        assert on_usdc2.is_valid(blob) == INVALID
        with reverts("InvalidSignature", env.vault.address):
            on_usdc2.settle_call(blob).transact({"from": FACILITATOR})
    assert int(usdc2.functions.balanceOf(PAYEE).call()) == 0
    assert env.usdc(PAYEE) == PAYMENT_AMOUNT


def test_only_the_attested_token_gets_a_yes(env: Env) -> None:
    """An EOA, the zero address, a contract that is no token, another token and Permit2 asking
    about the attested token's own digest and blob are all told no."""
    permit2 = deploy(env.w3, "Permit2", sender=OWNER)
    usdc2 = _second_usdc(env)
    p = Payment(env)
    for asker in (PAYEE, "0x" + "00" * 20, env.factory.address, usdc2.address, permit2.address):
        assert p.is_valid(p.blob(), asker=asker) == INVALID, asker
    assert p.is_valid(p.blob()) == MAGIC


def _permit2_digest(permit2: Contract, token: str, amount: int) -> bytes:
    """A Permit2 ``PermitWitnessTransferFrom`` digest (x402 ``upto``) with the vault as owner."""
    stub = permit2.functions.PERMIT_WITNESS_TRANSFER_FROM_TYPEHASH_STUB().call()
    witness_type = (
        "Witness witness)TokenPermissions(address token,uint256 amount)"
        "Witness(address to,address facilitator,uint256 validAfter)"
    )
    permissions = keccak(
        keccak(b"TokenPermissions(address token,uint256 amount)")
        + address_word(bytes.fromhex(token[2:]))
        + uint_word(amount)
    )
    witness = keccak(
        keccak(b"Witness(address to,address facilitator,uint256 validAfter)")
        + address_word(bytes.fromhex(PAYEE[2:]))
        + address_word(bytes.fromhex(FACILITATOR[2:]))
        + uint_word(0)
    )
    struct = keccak(
        keccak((stub + witness_type).encode())
        + permissions
        + address_word(bytes.fromhex(FACILITATOR[2:]))
        + uint_word(7)
        + uint_word(2**40)
        + witness
    )
    return typed_data_digest(bytes(permit2.functions.DOMAIN_SEPARATOR().call()), struct)


def test_permit2_digests_are_never_valid(env: Env) -> None:
    """Permit2 asks an ERC-1271 owner too. It keeps no EIP-3009 nonces and its digests are no
    ``TransferWithAuthorization``, so a Permit2 permit is refused even when the agent signed it
    and the operators attested a payment "in" Permit2 or in USDC."""
    permit2 = deploy(env.w3, "Permit2", sender=OWNER)
    digest = _permit2_digest(permit2, env.token.address, STOLEN)
    agent_signature = sign_attestation(AGENT_KEY, digest)
    for asset in (permit2.address, env.token.address):
        p = Payment(env, amount=STOLEN, asset=asset, token=permit2)
        p.agent_signature = agent_signature
        assert p.is_valid(p.blob(), digest) == INVALID
        assert p.is_valid(p.raw_blob(token=permit2.address), digest) == INVALID


def test_a_digest_from_someone_else_is_invalid(env: Env) -> None:
    """Asked about an authorization whose ``from`` is not the vault, the vault says no, even
    with the agent's signature and a matching attestation."""
    p = Payment(env)
    p.digest = p.authorization_digest(from_=OUTSIDER)
    p.agent_signature = sign_attestation(AGENT_KEY, p.digest)
    assert p.is_valid(p.blob()) == INVALID


def test_receive_with_authorization_is_refused(env: Env) -> None:
    """The payee-initiated EIP-3009 variant signs another type: the vault refuses it, so a blob
    made for ``transferWithAuthorization`` cannot be replayed through it (nor through one the
    agent signed for it), and the nonce stays usable for the attested payment."""
    p = Payment(env)
    receive_digest = p.authorization_digest(primary_type=RECEIVE_WITH_AUTHORIZATION_TYPE)
    signed_for_receive = p.raw_blob(agent_signature=sign_attestation(AGENT_KEY, receive_digest))
    for blob in (p.blob(), signed_for_receive):
        assert p.is_valid(blob, receive_digest) == INVALID
        call = env.token.functions.receiveWithAuthorization(
            env.vault.address, PAYEE, PAYMENT_AMOUNT, p.valid_after, p.valid_before,
            p.attestation.task_id, blob,
        )  # fmt: skip
        with reverts("InvalidSignature", env.vault.address):
            call.transact({"from": PAYEE})
    transact(env.w3, p.settle_call(), sender=FACILITATOR)
    assert env.usdc(PAYEE) == PAYMENT_AMOUNT


def test_rotated_operators_and_agent_void_payment_signatures(env: Env) -> None:
    """The same rule as ``execute``: the current operator set and agent decide, not the ones
    at signing time."""
    p = Payment(env)
    transact(env.w3, env.vault.functions.setOperators(STRANGERS, 2), sender=OWNER)
    assert p.is_valid(p.blob()) == INVALID
    with reverts("InvalidSignature", env.vault.address):
        p.settle_call().transact({"from": FACILITATOR})
    by_strangers = Payment(env, keys=STRANGER_KEYS)
    assert by_strangers.is_valid(by_strangers.blob()) == MAGIC
    transact(env.w3, env.vault.functions.setAgent(OUTSIDER), sender=OWNER)
    assert by_strangers.is_valid(by_strangers.blob()) == INVALID


def test_no_payment_is_valid_while_an_attested_call_is_in_flight(env: Env) -> None:
    """An attested ``execute`` that makes the token settle a second, separately attested vault
    payment: refused (the vault honours no attestation while a call of its own runs), and
    nothing moves."""
    inner = Payment(env)
    signature = "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"
    types = signature[signature.index("(") + 1 : -1].split(",")
    args = [env.vault.address, PAYEE, PAYMENT_AMOUNT, inner.valid_after, inner.valid_before,
            inner.attestation.task_id, inner.blob()]  # fmt: skip
    intent = TransactionIntent(
        from_=env.vault.address,
        to=env.token.address,
        data=keccak(signature.encode())[:4] + abi_encode(types, args),
        chain_id=CHAIN_ID,
        function_signature=signature,
    )
    outer = attest(env.vault.address, intent, expires_at=env.now() + 600)
    with reverts("InvalidSignature", env.vault.address):
        env.vault.functions.execute(*execute_args(intent, outer)).transact({"from": AGENT})
    assert env.usdc(PAYEE) == 0
    transact(env.w3, inner.settle_call(), sender=FACILITATOR)  # alone, the payment is fine
    assert env.usdc(PAYEE) == PAYMENT_AMOUNT


def test_execute_refuses_a_task_settled_as_a_payment_on_its_target(env: Env) -> None:
    """Cross-path, the other way round from ``test_settled_payment_cannot_also_be_executed``:
    ``execute`` checks the target's EIP-3009 nonce for every call, not only for ``transfer``
    calldata, so no other attested call under the spent task id runs either."""
    p = Payment(env)
    transact(env.w3, p.settle_call(), sender=FACILITATOR)
    approve = TransactionIntent(
        from_=env.vault.address,
        to=env.token.address,
        data=bytes.fromhex(env.token.encode_abi("approve", args=[OUTSIDER, 1])[2:]),
        chain_id=CHAIN_ID,
        function_signature="approve(address,uint256)",
    )
    attestation = attest(
        env.vault.address, approve, expires_at=env.now() + 600, task_id=p.attestation.task_id
    )
    with reverts("TaskAlreadyUsed", p.attestation.task_id):
        env.vault.functions.execute(*execute_args(approve, attestation)).transact({"from": AGENT})
    unrelated = attest(
        env.vault.address, approve, expires_at=env.now() + 600, task_id=secrets.token_bytes(32)
    )
    transact(env.w3, env.vault.functions.execute(*execute_args(approve, unrelated)), sender=AGENT)


def test_malformed_blob_is_refused(env: Env) -> None:
    """Garbage where the blob should be: the vault's decode reverts, which the token treats as
    a refusal."""
    p = Payment(env)
    with reverts("InvalidSignature", env.vault.address):
        p.settle_call(b"\x00" * 100).transact({"from": FACILITATOR})


def test_the_uninitialized_implementation_validates_nothing(env: Env) -> None:
    """The locked implementation behind every clone has no agent, no operators and threshold
    0. Before, its ERC-1271 check took a blob without any signature (the agent check compared
    a failed recovery, address(0), with its agent, address(0); zero of zero operators made a
    quorum): USDC sent there by mistake was anyone's. Now an empty operator set authorizes
    nothing, on either path."""
    implementation = env.w3.eth.contract(
        address=env.factory.functions.implementation().call(), abi=env.vault.abi
    )
    transact(env.w3, env.token.functions.mint(implementation.address, STOLEN), sender=OWNER)
    valid_before = env.now() + 300
    task = secrets.token_bytes(32)
    blob = abi_encode(
        list(PAYMENT_SIGNATURE_TYPES),
        [env.token.address, OUTSIDER, STOLEN, 0, valid_before, task, task, b"\0" * 32,
         env.now() + 600, b"", [], 0],
    )  # fmt: skip
    settle = env.token.functions.transferWithAuthorization(
        implementation.address, OUTSIDER, STOLEN, 0, valid_before, task, blob
    )
    with reverts("InvalidSignature", implementation.address):
        settle.transact({"from": OUTSIDER})
    assert env.usdc(implementation.address) == STOLEN


def test_an_attestation_for_one_vault_pays_from_no_other(env: Env) -> None:
    """A second vault with the same agent, operators and policy: the agent signs the
    authorization from it, but the attestation names the first vault as its policy client."""
    other = create_vault(env.w3, env.factory, salt=b"\x02" * 32)
    transact(env.w3, env.token.functions.mint(other.address, VAULT_USDC), sender=OWNER)
    p = Payment(env)
    digest = p.authorization_digest(from_=other.address)
    blob = p.raw_blob(agent_signature=sign_attestation(AGENT_KEY, digest))
    verdict = other.functions.isValidSignature(digest, blob).call({"from": env.token.address})
    assert bytes(verdict) == INVALID
    settle = env.token.functions.transferWithAuthorization(
        other.address, PAYEE, PAYMENT_AMOUNT, p.valid_after, p.valid_before,
        p.attestation.task_id, blob,
    )  # fmt: skip
    with reverts("InvalidSignature", other.address):
        settle.transact({"from": FACILITATOR})
    assert p.is_valid(p.blob()) == MAGIC  # still good where it was attested
