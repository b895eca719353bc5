"""The wallet with a Newton-mode ``AgentVault``, end to end on anvil (chain id 8453).

A fake Newton gateway (loopback HTTP, Newton's documented result shapes) answers
``newt_createTask``; its ``signature_data`` is a BN254 certificate made by the operators in
``NewtonBlsValidator``'s table. ``Guard`` verifies with ``NewtonBindingVerifier`` (binding
only, assurance ``newton-bls-binding``), the wallet builds ``executeNewton(to, value, data,
task, taskResponse, signatureData)`` from the gateway's result, and the agent's key sends it to
the vault, whose validator checks the BLS quorum. Each attack below fails closed before
anything is sent, and a direct call shows the contract would refuse it as well.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from eth_abi.abi import decode as abi_decode
from web3 import Web3
from web3.contract import Contract

from agentguard import (
    AsyncGuard,
    AsyncNewtonGateway,
    AttestationReplayed,
    Guard,
    IntentMismatch,
    NewtonBindingVerifier,
    NewtonGateway,
    PolicyDenied,
    Signer,
    TransactionIntent,
)
from agentguard._attestation import Attestation
from agentguard._defaults import Defaults
from agentguard._exceptions import MalformedAttestation, OnchainCheckRequired, VerificationError
from agentguard.chain import DEV_ACCOUNTS, Anvil, deploy, transact
from agentguard.chain.newton import (
    EXECUTE_NEWTON_SIGNATURE,
    create_newton_vault,
    deploy_newton_validator,
    execute_newton_args,
    for_web3,
    newton_call,
)
from agentguard.ledger import Ledger, Limits, WindowCap
from agentguard.newton import Task, TaskResponse
from agentguard.newton._structs import TASK_ABI, TASK_RESPONSE_ABI
from agentguard.wallet import GuardedWallet
from tests.chain.helpers import AGENT, OUTSIDER, OWNER, PAYEE, reverts
from tests.chain.newton_bls import Operator, certify, table_args
from tests.newton_fake.gateway import POLICY_ID, Answer, FakeNewton, fake_newton

AGENT_SIGNER = Signer.from_key(DEV_ACCOUNTS[1].private_key)
OPERATORS = [
    Operator.from_seed(f"vault wallet operator {i}", w) for i, w in enumerate((30, 30, 40))
]
VAULT_USDC = 1_000_000_000
AMOUNT = 5_000_000


@dataclass
class World:
    anvil: Anvil
    w3: Web3
    token: Contract
    validator: Contract
    vault: Contract
    gateway: FakeNewton

    def usdc(self, account: str) -> int:
        return int(self.token.functions.balanceOf(account).call())

    def agent_nonce(self) -> int:
        return int(self.w3.eth.get_transaction_count(Web3.to_checksum_address(AGENT)))

    def certify(self, result: dict[str, Any]) -> dict[str, Any]:
        """Newton's answer for this chain: the task created a block ago and initialized now
        (the fake's fixed values are for another chain), certified by the validator's
        operators."""
        latest = self.w3.eth.get_block("latest")
        block, now = int(latest["number"]) - 1, int(latest["timestamp"])
        task, response = dict(result["task"]), dict(result["task_response"])
        task["taskCreatedBlock"] = block
        task["initializationTimestamp"] = now
        response["initialization_timestamp"] = now
        expire_after = int(response["policy_config"]["expireAfter"])
        fresh = {**result, "task": task, "task_response": response}
        fresh["expiration"] = block + expire_after
        return certify(
            fresh,
            reference_timestamp=int(self.validator.functions.referenceTimestamp().call()),
            table=OPERATORS,
        )

    def guard(self) -> Guard:
        vault = self.vault.address
        verifier = NewtonBindingVerifier(
            policy_client=vault,
            block_number=lambda: int(self.w3.eth.block_number),
            policy_id=POLICY_ID,
        )
        gateway = NewtonGateway(self.gateway.url, policy_client=vault, policy_id=POLICY_ID)
        return Guard(gateway, verifier, Defaults())

    def wallet(self, guard: Guard | None = None, **options: Any) -> GuardedWallet:
        return (guard or self.guard()).wallet(
            signer=AGENT_SIGNER,
            web3=self.w3,
            ledger=Ledger(),
            limits=Limits(windows=[WindowCap(self.token.address, 86400, 10**15)]),
            vault=self.vault.address,
            **options,
        )

    def transfer(self, recipient: str = PAYEE, amount: int = AMOUNT) -> TransactionIntent:
        return TransactionIntent.erc20_transfer(
            sender=AGENT, token=self.token.address, recipient=recipient, amount=amount,
            chain_id=8453,
        )  # fmt: skip


@pytest.fixture(scope="module")
def world_once() -> Iterator[World]:
    assert AGENT_SIGNER.address == AGENT
    with Anvil() as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        token = deploy(w3, "UsdCoin", sender=OWNER)
        factory = deploy(w3, "AgentVaultFactory", sender=OWNER)
        validator = deploy_newton_validator(
            w3, owner=OWNER, min_threshold_percentage=40, task_response_window_blocks=30,
            sender=OWNER,
        )  # fmt: skip
        args = table_args(validator, OPERATORS)
        transact(
            w3,
            validator.functions.setOperators(
                args["g1"], args["g2"], args["weights"], args["possession"]
            ),
            sender=OWNER,
        )
        vault = create_newton_vault(
            w3, factory, owner=OWNER, agent=AGENT, validator=validator.address,
            policy_id=bytes.fromhex(POLICY_ID[2:]), salt=b"\x11" * 32, sender=OWNER,
        )  # fmt: skip
        transact(w3, token.functions.mint(vault.address, VAULT_USDC), sender=OWNER)
        world = World(anvil, w3, token, validator, vault, FakeNewton())
        with fake_newton(certify=lambda result: world.certify(result)) as gateway:
            world.gateway = gateway
            yield world


@pytest.fixture
def world(world_once: World) -> Iterator[World]:
    snapshot = world_once.anvil.snapshot()
    try:
        yield world_once
    finally:
        world_once.anvil.revert(snapshot)


def executed_call(world: World, tx_hash: str) -> tuple[Any, ...]:
    """The ``executeNewton`` arguments of a landed transaction."""
    tx = world.w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
    data = bytes(tx["input"])
    assert data[:4] == Web3.keccak(text=EXECUTE_NEWTON_SIGNATURE)[:4]
    assert tx["to"] == world.vault.address and tx["from"] == AGENT and tx["value"] == 0
    types = ["address", "uint256", "bytes", TASK_ABI, TASK_RESPONSE_ABI, "bytes"]
    return for_web3(tuple(abi_decode(types, data[4:])))  # type: ignore[no-any-return]


# -- the allowed path ------------------------------------------------------------------------


def test_an_attested_transfer_lands_from_the_vault(world: World) -> None:
    wallet = world.wallet()
    assert wallet.mode == "vault" and wallet.account == world.vault.address
    receipt = wallet.transfer(PAYEE, AMOUNT, asset=world.token.address)
    assert world.usdc(PAYEE) == AMOUNT
    assert world.usdc(world.vault.address) == VAULT_USDC - AMOUNT
    # the gateway was asked about the agent's own intent, for the vault as policy client
    (asked,) = world.gateway.calls("newt_createTask")
    params = asked["params"]
    assert params["intent"]["from"].lower() == AGENT.lower()
    assert params["policy_client"].lower() == world.vault.address.lower()
    # the transaction carries exactly the attested intent, and the validator spent the task
    to, value, data, task, response, _ = executed_call(world, receipt.tx_hash)
    assert (to, value, bytes(data)) == (world.token.address, 0, receipt.intent.data)
    assert receipt.intent == world.transfer()
    task_id = bytes.fromhex(receipt.task_id[2:])
    assert bytes(task[0]) == bytes(response[0]) == task_id
    assert world.vault.functions.taskUsed(task_id).call()
    assert world.validator.functions.spent(task_id).call()


async def test_the_async_wallet_sends_the_same_call(world: World) -> None:
    vault = world.vault.address
    guard = AsyncGuard(
        AsyncNewtonGateway(world.gateway.url, policy_client=vault, policy_id=POLICY_ID),
        NewtonBindingVerifier(
            policy_client=vault,
            block_number=lambda: int(world.w3.eth.block_number),
            policy_id=POLICY_ID,
        ),
        Defaults(),
    )
    wallet = guard.wallet(
        signer=AGENT_SIGNER,
        web3=world.w3,
        ledger=Ledger(),
        limits=Limits(windows=[WindowCap(world.token.address, 86400, 10**15)]),
        vault=vault,
    )
    receipt = await wallet.transfer(PAYEE, AMOUNT, asset=world.token.address)
    assert wallet.account == vault and receipt.intent.from_ == AGENT
    assert world.usdc(PAYEE) == AMOUNT


def test_the_mode_follows_the_guard_and_can_be_told(world: World) -> None:
    assert world.wallet()._account.address == AGENT
    ecdsa = world.wallet(newton=False)
    assert ecdsa._account.address == world.vault.address


# -- a deny moves nothing --------------------------------------------------------------------


def test_a_deny_sends_nothing(world: World) -> None:
    world.gateway.answer(Answer(decision="deny"))
    nonce = world.agent_nonce()
    with pytest.raises(PolicyDenied):
        world.wallet().transfer(PAYEE, AMOUNT, asset=world.token.address)
    assert world.agent_nonce() == nonce
    assert world.usdc(world.vault.address) == VAULT_USDC


# -- a mutated intent ------------------------------------------------------------------------


def _mutated(result: dict[str, Any], recipient: str) -> dict[str, Any]:
    """``result`` with the transfer in its task and task response redirected to ``recipient``
    (calldata rewritten, everything else kept, the certificate untouched)."""
    out: dict[str, Any] = json.loads(json.dumps(result))
    for part in ("task", "task_response"):
        intent = out[part]["intent"]
        data = (
            bytes.fromhex(intent["data"][2:])
            if isinstance(intent["data"], str)
            else bytes(intent["data"])
        )
        data = data[:16] + bytes.fromhex(recipient[2:]) + data[36:]
        intent["data"] = "0x" + data.hex()
    return out


def test_a_gateway_mutating_the_intent_after_certifying_is_refused(world: World) -> None:
    """A lying gateway redirects the certified transfer to another recipient: the client
    refuses the result (it attests another intent than the agent's) before anything is sent;
    sent directly, the vault's validator refuses it (the certificate signs the original)."""
    honest = world.certify
    captured: list[dict[str, Any]] = []

    def lying(result: dict[str, Any]) -> dict[str, Any]:
        captured.append(_mutated(honest(result), OUTSIDER))
        return captured[-1]

    world.gateway.certify = lying
    try:
        nonce = world.agent_nonce()
        with pytest.raises(IntentMismatch):
            world.wallet().transfer(PAYEE, AMOUNT, asset=world.token.address)
        assert world.agent_nonce() == nonce
    finally:
        world.gateway.certify = honest
    result = captured[0]
    task = Task.parse(result["task"])
    response = TaskResponse.parse(result["task_response"])
    args = execute_newton_args(task, response, bytes.fromhex(result["signature_data"][2:]))
    with reverts("CertificateMessageHashMismatch"):
        transact(world.w3, world.vault.functions.executeNewton(*args), sender=AGENT)
    assert world.usdc(world.vault.address) == VAULT_USDC


def test_a_certified_result_for_another_intent_is_not_sent_for_this_one(world: World) -> None:
    """The attestation's summary names the agent's intent, but the result it carries is a
    genuinely certified transfer to someone else. ``NewtonBindingVerifier`` checks only the
    summary, so a ticket is issued; the Signer re-reads the result and refuses before signing.
    A call built from the result alone would be the other transfer, which the vault executes
    (it is certified and sent by the agent: shown by an eth_call). Sent with the agent's own
    call instead, the vault reverts (the call is not the attested intent)."""
    guard = world.guard()
    local = world.transfer()
    other = world.transfer(recipient=OUTSIDER)
    certified = world.gateway.create_result(
        {
            "intent": other.newton_intent().wire(),
            "policy_client": world.vault.address,
        },
        Answer(),
    )
    forged = Attestation(
        decision="allow",
        task_id=certified["task_id"],
        policy_id=POLICY_ID,
        policy_client=world.vault.address,
        intent_hash="0x" + local.intent_hash.hex(),
        expires_at=certified["expiration"],
        scheme="newton-bls",
        newton_result=json.dumps(certified),
    )
    verified = guard.verifier.verify(forged, local)
    assert verified.assurance == "newton-bls-binding"
    nonce = world.agent_nonce()
    with pytest.raises(IntentMismatch, match="different intent"):
        AGENT_SIGNER.sign_transaction(
            verified, nonce=nonce, gas=900_000, max_fee_per_gas=10**9,
            max_priority_fee_per_gas=10**8, vault=world.vault.address,
        )  # fmt: skip
    assert world.agent_nonce() == nonce
    task, response, signature_data = newton_call(
        other, forged, vault=world.vault.address, agent=AGENT
    )
    to, value, data, *rest = execute_newton_args(task, response, signature_data)
    assert data == other.data and data != local.data
    world.vault.functions.executeNewton(to, value, data, *rest).call({"from": AGENT})
    with reverts("IntentMismatch", "data"):
        transact(
            world.w3,
            world.vault.functions.executeNewton(world.token.address, 0, local.data, *rest),
            sender=AGENT,
        )
    assert world.usdc(world.vault.address) == VAULT_USDC


# -- replay ----------------------------------------------------------------------------------


def test_a_replayed_execution_is_refused_by_the_contract(world: World) -> None:
    """The agent (or anyone holding its key) re-sends the landed executeNewton call: the
    vault has marked the task id used."""
    receipt = world.wallet().transfer(PAYEE, AMOUNT, asset=world.token.address)
    tx = world.w3.eth.get_transaction(receipt.tx_hash)  # type: ignore[arg-type]
    with reverts("TaskAlreadyUsed", bytes.fromhex(receipt.task_id[2:])):
        transact(
            world.w3,
            world.vault.functions.executeNewton(*executed_call(world, receipt.tx_hash)),
            sender=AGENT,
        )
    assert tx["to"] == world.vault.address
    assert world.usdc(PAYEE) == AMOUNT


def test_a_gateway_replaying_an_answer_is_refused_before_sending(world: World) -> None:
    wallet = world.wallet()
    first = wallet.transfer(PAYEE, AMOUNT, asset=world.token.address)
    world.gateway.answer(Answer(task_id=first.task_id))
    nonce = world.agent_nonce()
    with pytest.raises(AttestationReplayed):
        wallet.transfer(PAYEE, AMOUNT, asset=world.token.address)
    assert world.agent_nonce() == nonce
    assert world.usdc(PAYEE) == AMOUNT


# -- the Signer uses newton-bls-binding only for this vault call ------------------------------


def test_a_newton_binding_ticket_signs_nothing_else(world: World) -> None:
    guard = world.guard()
    local = world.transfer()
    for options in ({"vault": None}, {"vault": OUTSIDER}):
        verified = guard.authorize(local)
        assert verified.assurance == "newton-bls-binding"
        with pytest.raises((OnchainCheckRequired, IntentMismatch)):
            AGENT_SIGNER.sign_transaction(
                verified, nonce=0, gas=900_000, max_fee_per_gas=10**9,
                max_priority_fee_per_gas=10**8, **options,
            )  # fmt: skip


def test_an_ecdsa_mode_wallet_does_not_send_newton_attestations(world: World) -> None:
    """Told the vault is an ECDSA vault, the wallet asks for intents from the vault; the
    Newton attestation for such an intent is refused (a Newton vault runs the agent's)."""
    nonce = world.agent_nonce()
    with pytest.raises(IntentMismatch):
        world.wallet(newton=False).transfer(PAYEE, AMOUNT, asset=world.token.address)
    assert world.agent_nonce() == nonce


# -- what newton_call refuses before anything is signed --------------------------------------


def _certified(world: World, intent: TransactionIntent, **answer: Any) -> dict[str, Any]:
    params = {"intent": intent.newton_intent().wire(), "policy_client": world.vault.address}
    return world.gateway.create_result(params, Answer(**answer))


def _summary(result: dict[str, Any], intent: TransactionIntent, vault: str) -> Attestation:
    return Attestation(
        decision="allow",
        task_id=result["task_id"],
        policy_id=POLICY_ID,
        policy_client=vault,
        intent_hash="0x" + intent.intent_hash.hex(),
        expires_at=result["expiration"],
        scheme="newton-bls",
        newton_result=json.dumps(result),
    )


def _edit(result: dict[str, Any], part: str, key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(result))
    out[part][key] = value
    return out


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda r, w: r, None),
        (lambda r, w: _edit(r, "task", "taskId", "0x" + "42" * 32), IntentMismatch),
        (lambda r, w: _edit(r, "task", "policyClient", OUTSIDER), IntentMismatch),
        (lambda r, w: _edit(r, "task_response", "policy_client", OUTSIDER), IntentMismatch),
        (
            lambda r, w: _edit(r, "task", "intent", _mutated(r, OUTSIDER)["task"]["intent"]),
            IntentMismatch,
        ),
        (lambda r, w: {**r, "signature_data": r["signature_data"] + "00"}, MalformedAttestation),
        (lambda r, w: {k: v for k, v in r.items() if k != "signature_data"}, VerificationError),
        (lambda r, w: _edit(r, "task_response", "evaluation_result", "0x" + "00" * 32), None),
    ],
)
def test_newton_call_refuses_a_result_the_vault_would_not_run(
    world: World, edit: Any, error: type[Exception] | None
) -> None:
    """Each edit of an honestly certified result (as a lying gateway or a forged attestation
    could make it) is refused with a typed error before anything is signed. The unedited
    result passes; a deny passes binding but is refused as a deny."""
    local = world.transfer()
    result = edit(_certified(world, local), world)
    attestation = _summary(result, local, world.vault.address)
    denied = result["task_response"]["evaluation_result"] == "0x" + "00" * 32
    if error is None and not denied:
        task, response, _ = newton_call(local, attestation, vault=world.vault.address, agent=AGENT)
        assert task.task_id == response.task_id == bytes.fromhex(result["task_id"][2:])
        return
    with pytest.raises(VerificationError if denied else error):  # type: ignore[arg-type]
        newton_call(local, attestation, vault=world.vault.address, agent=AGENT)


def test_newton_call_refuses_another_sender_or_vault(world: World) -> None:
    local = world.transfer()
    attestation = _summary(_certified(world, local), local, world.vault.address)
    with pytest.raises(IntentMismatch, match="sent by its agent"):
        newton_call(local, attestation, vault=world.vault.address, agent=OUTSIDER)
    with pytest.raises(IntentMismatch, match="policy client"):
        newton_call(local, attestation, vault=OUTSIDER, agent=AGENT)
