"""Newton mode of AgentVault on anvil (chain id 8453), with real BN254 keys and signatures.

The vault executes a call only through ``executeNewton`` after ``NewtonBlsValidator`` (Newton's
``validateAttestationDirect`` interface) verified the operators' BLS quorum over Newton's
consensus digest. Each test below is an attempt to move funds with something short of that:
a different call, another chain or sender, another policy, too late, twice, too few signers,
another message, a forged or rogue-key signature; a deny decision spends and moves nothing.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import TxReceipt

from agentguard._eip712 import keccak
from agentguard._gateway import _evaluation_allows
from agentguard._intent import TransactionIntent
from agentguard.chain import Anvil, deploy, load_artifact, transact
from agentguard.chain.newton import (
    VALIDATE_ATTESTATION_DIRECT,
    create_newton_vault,
    deploy_newton_validator,
    execute_newton_args,
    execute_newton_calldata,
    for_web3,
)
from agentguard.newton import (
    BN254Certificate,
    NewtonIntent,
    OperatorInfo,
    PolicyConfig,
    PolicyData,
    PolicyTaskData,
    Task,
    TaskResponse,
    Witness,
    aggregate_g1,
    certificate_digest,
    hash_to_g1,
    merkle_proof,
    operator_info_leaf,
)
from agentguard.newton._bn254 import g1_add, g1_mul, g1_neg
from tests.chain.helpers import (
    AGENT,
    CHAIN_ID,
    OPERATORS,
    OUTSIDER,
    OWNER,
    PAYEE,
    POLICY_ID,
    events,
    reverts,
)
from tests.chain.newton_bls import (
    Operator,
    aggregate_key,
    aggregate_signature,
    certificate,
    table_args,
    witness,
)
from tests.newton import newton_quorum as Q

BLS_OPERATORS = [
    Operator.from_seed(f"newton operator {i}", w) for i, w in enumerate((10, 20, 30, 40))
]
ATTACKER = Operator.from_seed("attacker", 1)
POLICY_ADDRESS = Web3.to_checksum_address("0x" + "5e" * 20)
FLOOR = 40  # the validator's least quorum percentage
TASK_THRESHOLD = 67  # what Newton's gateway asks by default
WINDOW = 30  # blocks a response stays usable after taskCreatedBlock
EXPIRE_AFTER = 150  # blocks, the policy's expireAfter
VAULT_USDC = 1_000_000_000
AMOUNT = 5_000_000
TRANSFER_SIGNATURE = b"transfer(address,uint256)"
ABI_TRUE = abi_encode(["bool"], [True])
ABI_FALSE = abi_encode(["bool"], [False])


@dataclass
class World:
    anvil: Anvil
    w3: Web3
    token: Contract
    factory: Contract
    validator: Contract
    vault: Contract

    def block(self) -> Any:
        return self.w3.eth.get_block("latest")

    def usdc(self, account: str) -> int:
        return int(self.token.functions.balanceOf(account).call())

    @property
    def reference_timestamp(self) -> int:
        return int(self.validator.functions.referenceTimestamp().call())


def set_table(world: World, operators: Sequence[Operator], **overrides: Any) -> TxReceipt:
    """The owner registers ``operators`` with their proofs of possession."""
    validator = world.validator
    args = table_args(validator, operators) | overrides
    call = validator.functions.setOperators(
        args["g1"], args["g2"], args["weights"], args["possession"]
    )
    return transact(world.w3, call, sender=OWNER)


@pytest.fixture(scope="module")
def world_once() -> Iterator[World]:
    with Anvil() as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        token = deploy(w3, "UsdCoin", sender=OWNER)
        factory = deploy(w3, "AgentVaultFactory", sender=OWNER)
        validator = deploy_newton_validator(
            w3,
            owner=OWNER,
            min_threshold_percentage=FLOOR,
            task_response_window_blocks=WINDOW,
            sender=OWNER,
        )
        vault = create_newton_vault(
            w3, factory, owner=OWNER, agent=AGENT, validator=validator.address,
            policy_id=POLICY_ID, salt=b"\x07" * 32, sender=OWNER,
        )  # fmt: skip
        world = World(anvil, w3, token, factory, validator, vault)
        set_table(world, BLS_OPERATORS)
        transact(w3, token.functions.mint(vault.address, VAULT_USDC), sender=OWNER)
        w3.eth.send_transaction(
            {"from": OWNER, "to": vault.address, "value": Web3.to_wei(1, "ether")}
        )
        yield world


@pytest.fixture
def world(world_once: World) -> Iterator[World]:
    snapshot = world_once.anvil.snapshot()
    try:
        yield world_once
    finally:
        world_once.anvil.revert(snapshot)


def transfer_intent(
    world: World,
    *,
    from_: str = AGENT,
    to: str = PAYEE,
    amount: int = AMOUNT,
    chain_id: int = CHAIN_ID,
) -> NewtonIntent:
    data = keccak(TRANSFER_SIGNATURE)[:4] + abi_encode(["address", "uint256"], [to, amount])
    return NewtonIntent(
        _addr(from_), _addr(world.token.address), 0, data, chain_id, TRANSFER_SIGNATURE
    )


def _addr(address: str) -> bytes:
    return bytes.fromhex(address[2:])


@dataclass(frozen=True)
class Attested:
    """What Newton's gateway returns for one task: the task, the response and its certificate."""

    task: Task
    response: TaskResponse
    certificate: bytes

    def args(self, **call: Any) -> tuple[Any, ...]:
        to, value, data, *rest = execute_newton_args(self.task, self.response, self.certificate)
        return (call.get("to", to), call.get("value", value), call.get("data", data), *rest)


def attest(
    world: World,
    intent: NewtonIntent,
    *,
    signers: Sequence[Operator] = tuple(BLS_OPERATORS),
    evaluation: bytes = ABI_TRUE,
    policy_id: bytes = POLICY_ID,
    threshold: int = TASK_THRESHOLD,
    created_block: int | None = None,
    initialized_at: int | None = None,
    expire_after: int = EXPIRE_AFTER,
    signed_message: bytes | None = None,
) -> Attested:
    """A quorum of ``signers`` (the rest listed as non-signers) certifies the response."""
    latest = world.block()
    task_id = secrets.token_bytes(32)
    initialized = int(latest["timestamp"]) if initialized_at is None else initialized_at
    vault = _addr(world.vault.address)
    task = Task(
        task_id=task_id,
        policy_client=vault,
        task_created_block=int(latest["number"]) - 1 if created_block is None else created_block,
        quorum_threshold_percentage=threshold,
        intent=intent,
        intent_signature=b"\x01" * 65,
        wasm_args=b"",
        quorum_numbers=b"\x00",
        initialization_timestamp=initialized,
    )
    response = TaskResponse(
        task_id=task_id,
        policy_client=vault,
        policy_id=policy_id,
        policy_address=_addr(POLICY_ADDRESS),
        intent=intent,
        intent_signature=b"\x01" * 65,
        evaluation_result=evaluation,
        policy_task_data=PolicyTaskData(
            policy_id, _addr(POLICY_ADDRESS), b"package agentguard\nallow := true", ()
        ),
        policy_config=PolicyConfig(b"{}", expire_after),
        initialization_timestamp=initialized,
    )
    cert = certificate(
        reference_timestamp=world.reference_timestamp,
        message_hash=response.consensus_digest(),
        table=BLS_OPERATORS,
        signers=signers,
        signed_message=signed_message,
    )
    return Attested(task, response, cert.encode())


def execute(world: World, attested: Attested, *, sender: str = AGENT, **call: Any) -> TxReceipt:
    return transact(
        world.w3, world.vault.functions.executeNewton(*attested.args(**call)), sender=sender
    )


# -- the allowed path ------------------------------------------------------------------------


def test_quorum_attested_call_executes_once(world: World) -> None:
    attested = attest(world, transfer_intent(world), signers=BLS_OPERATORS[1:])  # 90 of 100
    receipt = execute(world, attested)
    assert world.usdc(PAYEE) == AMOUNT
    assert world.usdc(world.vault.address) == VAULT_USDC - AMOUNT
    task_id = attested.task.task_id
    assert events(world.vault, "Executed", receipt)[0]["taskId"] == task_id
    assert events(world.validator, "AttestationSpent", receipt)[0]["allow"] is True
    assert world.vault.functions.taskUsed(task_id).call()
    assert world.validator.functions.spent(task_id).call()


def test_the_agent_can_send_the_raw_calldata(world: World) -> None:
    """What an agent's signer sends: a plain transaction to the vault with this calldata."""
    attested = attest(world, transfer_intent(world))
    data = execute_newton_calldata(attested.task, attested.response, attested.certificate)
    tx = world.w3.eth.send_transaction({"from": AGENT, "to": world.vault.address, "data": data})
    assert world.w3.eth.wait_for_transaction_receipt(tx)["status"] == 1
    assert world.usdc(PAYEE) == AMOUNT


def test_replaying_the_same_task_reverts(world: World) -> None:
    attested = attest(world, transfer_intent(world))
    execute(world, attested)
    with reverts("TaskAlreadyUsed", attested.task.task_id):
        execute(world, attested)
    assert world.usdc(PAYEE) == AMOUNT


def test_quorum_exactly_at_threshold_executes(world: World) -> None:
    """Newton's rule is total * threshold <= 100 * signed: 50 of 100 meets 50 %."""
    attested = attest(world, transfer_intent(world), signers=BLS_OPERATORS[1:3], threshold=50)
    execute(world, attested)
    assert world.usdc(PAYEE) == AMOUNT


def test_millisecond_initialization_timestamp_is_read_as_such(world: World) -> None:
    now_ms = int(world.block()["timestamp"]) * 1000
    execute(world, attest(world, transfer_intent(world), initialized_at=now_ms))
    assert world.usdc(PAYEE) == AMOUNT


# -- the vault's binding: the call is the attested intent ------------------------------------


@pytest.mark.parametrize(
    ("field", "call"),
    [
        ("to", {"to": OUTSIDER}),
        ("value", {"value": 1}),
        (
            "data",
            {
                "data": keccak(TRANSFER_SIGNATURE)[:4]
                + abi_encode(["address", "uint256"], [OUTSIDER, AMOUNT])
            },
        ),
    ],
)
def test_a_call_other_than_the_attested_intent_reverts(
    world: World, field: str, call: dict[str, Any]
) -> None:
    attested = attest(world, transfer_intent(world))
    with reverts("IntentMismatch", field):
        execute(world, attested, **call)
    assert world.usdc(world.vault.address) == VAULT_USDC


def test_an_intent_for_another_chain_reverts(world: World) -> None:
    """Properly signed for chain 1: not executable on 8453 (Newton's mixin chain check)."""
    with reverts("IntentMismatch", "chainId"):
        execute(world, attest(world, transfer_intent(world, chain_id=1)))


def test_an_intent_from_someone_else_reverts(world: World) -> None:
    """Newton's mixin requires intent.from == msg.sender: the agent may not use an attestation
    issued for another sender's intent."""
    with reverts("IntentMismatch", "from"):
        execute(world, attest(world, transfer_intent(world, from_=OUTSIDER)))


def test_only_the_agent_may_execute(world: World) -> None:
    attested = attest(world, transfer_intent(world, from_=OUTSIDER))
    with reverts("NotAgent", OUTSIDER):
        execute(world, attested, sender=OUTSIDER)


def test_a_selector_other_than_the_function_signature_reverts(world: World) -> None:
    intent = dataclasses.replace(
        transfer_intent(world), function_signature=b"approve(address,uint256)"
    )
    with reverts("FunctionSignatureMismatch"):
        execute(world, attest(world, intent))


def test_editing_the_attested_intent_breaks_the_signature(world: World) -> None:
    """The agent rewrites the intent (task and response alike) to the call it wants: the
    operators signed the original response's digest, so the certificate no longer matches;
    restating the digest in the certificate leaves a signature over another message."""
    attested = attest(world, transfer_intent(world))
    bigger = transfer_intent(world, amount=VAULT_USDC)
    task = dataclasses.replace(attested.task, intent=bigger)
    response = dataclasses.replace(attested.response, intent=bigger)
    with reverts("CertificateMessageHashMismatch"):
        execute(world, Attested(task, response, attested.certificate))
    signed = certificate_digest(world.reference_timestamp, attested.response.consensus_digest())
    restated = attest(world, bigger, signed_message=signed)
    restated = Attested(
        task, response, _with_message_hash(restated.certificate, response.consensus_digest())
    )
    with reverts("VerificationFailed"):
        execute(world, restated)
    assert world.usdc(world.vault.address) == VAULT_USDC


def _with_message_hash(certificate: bytes, message_hash: bytes) -> bytes:
    return certificate[:64] + message_hash + certificate[96:]


# -- policy, time, single use ----------------------------------------------------------------


def test_another_policy_id_reverts(world: World) -> None:
    other = keccak(b"another policy")
    with reverts("PolicyMismatch", POLICY_ID, other):
        execute(world, attest(world, transfer_intent(world), policy_id=other))


def test_after_the_expiration_block_reverts(world: World) -> None:
    attested = attest(world, transfer_intent(world), expire_after=5)
    expiration = attested.task.task_created_block + 5
    world.anvil.rpc("anvil_mine", 5)
    with reverts("NewtonAttestationExpired", expiration, expiration + 1):
        execute(world, attested)


def test_a_fresh_looking_task_block_does_not_revive_an_old_response(world: World) -> None:
    """taskCreatedBlock is not covered by the operators' signature, so the agent can restate it
    to pass the block expiry and the response window: the signed initializationTimestamp
    still bounds the response's life. With the block expiry alone (Newton's direct path), this
    two-hour-old allow would have executed."""
    now = int(world.block()["timestamp"])
    old = attest(world, transfer_intent(world), initialized_at=now - 7200)
    with reverts("NewtonTaskStale"):
        execute(world, old)


def test_a_timestamp_far_in_the_future_reverts(world: World) -> None:
    now = int(world.block()["timestamp"])
    with reverts("NewtonTaskStale"):
        execute(world, attest(world, transfer_intent(world), initialized_at=now + 3600))


def test_response_window_is_enforced(world: World) -> None:
    latest = int(world.block()["number"])
    world.anvil.rpc("anvil_mine", WINDOW + 1)
    attested = attest(world, transfer_intent(world), created_block=latest)
    with reverts("TaskResponseTooLate"):
        execute(world, attested)


def test_a_task_created_in_the_future_reverts(world: World) -> None:
    latest = int(world.block()["number"])
    with reverts("TaskCreatedBlockInFuture"):
        execute(world, attest(world, transfer_intent(world), created_block=latest + 3))


def test_deny_spends_the_attestation_and_moves_nothing(world: World) -> None:
    """Newton spends a task id whatever the decision; the vault does not revert on deny (that
    would undo the spend) but calls nothing."""
    attested = attest(world, transfer_intent(world), evaluation=ABI_FALSE)
    receipt = execute(world, attested)
    task_id = attested.task.task_id
    assert events(world.vault, "NewtonDenied", receipt) == [{"taskId": task_id}]
    assert events(world.vault, "Executed", receipt) == []
    assert world.usdc(world.vault.address) == VAULT_USDC
    assert world.vault.functions.taskUsed(task_id).call()
    assert world.validator.functions.spent(task_id).call()
    with reverts("TaskAlreadyUsed", task_id):
        execute(world, attested)


def test_a_non_canonical_true_is_deny_as_in_newton(world: World) -> None:
    """A 68-byte unpadded "true" is deny in Newton's evaluateResult, so nothing moves."""
    unpadded = (32).to_bytes(32, "big") + (4).to_bytes(32, "big") + b"true"
    receipt = execute(world, attest(world, transfer_intent(world), evaluation=unpadded))
    assert events(world.vault, "Executed", receipt) == []
    assert world.usdc(PAYEE) == 0


# -- the quorum and the signature ------------------------------------------------------------


def test_below_quorum_reverts(world: World) -> None:
    attested = attest(world, transfer_intent(world), signers=BLS_OPERATORS[:3])  # 60 of 100
    with reverts("InsufficientQuorumStake", 60, 100, TASK_THRESHOLD):
        execute(world, attested)


def test_a_task_asking_for_a_tiny_threshold_gets_the_floor(world: World) -> None:
    """The threshold comes from the task, which the operators' signature does not cover: an
    agent asking 1 % is held to the validator's floor (40 %). Under the task's threshold alone
    (Newton's direct path), these 30 % would have passed."""
    attested = attest(world, transfer_intent(world), signers=BLS_OPERATORS[:2], threshold=1)  # 30
    with reverts("InsufficientQuorumStake", 30, 100, FLOOR):
        execute(world, attested)


@pytest.mark.parametrize("threshold", [0, 101])
def test_an_impossible_threshold_reverts(world: World, threshold: int) -> None:
    with reverts("InvalidQuorumThresholdPercentage", threshold):
        execute(world, attest(world, transfer_intent(world), threshold=threshold))


def test_a_signature_over_another_message_reverts(world: World) -> None:
    other = attest(world, transfer_intent(world, amount=1))
    signed = certificate_digest(world.reference_timestamp, other.response.consensus_digest())
    attested = attest(world, transfer_intent(world), signed_message=signed)
    with reverts("VerificationFailed"):
        execute(world, attested)


def test_a_signature_over_the_bare_message_hash_reverts(world: World) -> None:
    """Operators sign EigenLayer's certificate digest, never ``messageHash`` itself: a
    certificate signed over the bare consensus digest (what this validator accepted before it
    verified the certificate digest, and what no EigenLayer verifier accepts) is refused."""
    attested = attest(world, transfer_intent(world))
    digest = attested.response.consensus_digest()
    bare = certificate(
        reference_timestamp=world.reference_timestamp,
        message_hash=digest,
        table=BLS_OPERATORS,
        signed_message=digest,
    )
    with reverts("VerificationFailed"):
        execute(world, Attested(attested.task, attested.response, bare.encode()))
    assert world.usdc(world.vault.address) == VAULT_USDC


@pytest.mark.parametrize("signature", [(1, 2), g1_mul((1, 2), 12345), (1, 3)])
def test_a_forged_signature_reverts(world: World, signature: tuple[int, int]) -> None:
    """A signature no operator made (the generator, a random point, a point off the curve)."""
    attested = attest(world, transfer_intent(world))
    forged = BN254Certificate(
        world.reference_timestamp,
        attested.response.consensus_digest(),
        signature,
        aggregate_key(BLS_OPERATORS),
        (),
    ).encode()
    with reverts("VerificationFailed"):
        execute(world, Attested(attested.task, attested.response, forged))


def test_an_all_zero_certificate_reverts(world: World) -> None:
    """Signature and aggregate key at infinity: the pairing would hold for any message if the
    signers' G1 key were also zero; it is the table's, so it does not."""
    attested = attest(world, transfer_intent(world))
    zero = BN254Certificate(
        world.reference_timestamp,
        attested.response.consensus_digest(),
        (0, 0),
        ((0, 0), (0, 0)),
        (),
    ).encode()
    with reverts("VerificationFailed"):
        execute(world, Attested(attested.task, attested.response, zero))


def test_a_rogue_aggregate_key_reverts(world: World) -> None:
    """The attacker signs with its own key and presents its own G2 key as the signers' aggregate
    (every operator listed as a signer): the G1 aggregate the validator computes from its table
    does not match that G2 key, and the pairing with gamma catches it."""
    attested = attest(world, transfer_intent(world))
    digest = attested.response.consensus_digest()
    signed = certificate_digest(world.reference_timestamp, digest)
    rogue = BN254Certificate(
        world.reference_timestamp, digest, ATTACKER.sign(signed), ATTACKER.pubkey_g2, ()
    ).encode()
    with reverts("VerificationFailed"):
        execute(world, Attested(attested.task, attested.response, rogue))


def test_a_non_signer_witness_must_be_the_tables_entry(world: World) -> None:
    """Claiming a non-signer with another key (to steer the signers' aggregate) or another
    weight (to inflate the signed stake) is refused, whatever Merkle proof the witness carries
    (the validator does not read it: a proof for the attacker's own tree proves nothing)."""
    attested = attest(world, transfer_intent(world), signers=BLS_OPERATORS[1:])
    digest = attested.response.consensus_digest()
    signed = certificate_digest(world.reference_timestamp, digest)
    rogue = OperatorInfo(ATTACKER.pubkey, (10,))
    light = OperatorInfo(BLS_OPERATORS[0].pubkey, (1,))
    own_tree = [operator_info_leaf(rogue), operator_info_leaf(BLS_OPERATORS[1].info)]
    for claim in (
        witness(0, rogue),
        witness(0, light),
        Witness(0, merkle_proof(own_tree, 0), rogue),
        Witness(0, b"\x00" * 32, light),
    ):
        forged = BN254Certificate(
            world.reference_timestamp,
            digest,
            aggregate_signature(BLS_OPERATORS[1:], signed),
            aggregate_key(BLS_OPERATORS[1:]),
            (claim,),
        ).encode()
        with reverts("VerificationFailed"):
            execute(world, Attested(attested.task, attested.response, forged))


def test_a_non_signer_listed_twice_reverts(world: World) -> None:
    attested = attest(world, transfer_intent(world), signers=BLS_OPERATORS[1:])
    op = BLS_OPERATORS[0]
    digest = attested.response.consensus_digest()
    signed = certificate_digest(world.reference_timestamp, digest)
    twice = BN254Certificate(
        world.reference_timestamp,
        digest,
        aggregate_signature(BLS_OPERATORS[1:], signed),
        aggregate_key(BLS_OPERATORS[1:]),
        (witness(0, op.info), witness(0, op.info)),
    ).encode()
    with reverts("InvalidOperatorIndex", 0):
        execute(world, Attested(attested.task, attested.response, twice))


def test_a_certificate_for_a_replaced_table_reverts(world: World) -> None:
    """Rotating the operators voids certificates for the old table."""
    attested = attest(world, transfer_intent(world))
    old = world.reference_timestamp
    set_table(world, BLS_OPERATORS[:3])
    with reverts("StaleCertificate", old, world.reference_timestamp):
        execute(world, attested)


def test_malformed_signature_data_reverts(world: World) -> None:
    attested = attest(world, transfer_intent(world))
    with reverts("MalformedSignatureData"):
        execute(world, Attested(attested.task, attested.response, b"\x00" * 40))


# -- task and response must agree (Newton's direct-path checks) ------------------------------


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"task_id": b"\x42" * 32}, "InvalidTaskId"),
        ({"intent_signature": b"\x02" * 65}, "TaskResponseMismatch"),
        ({"initialization_timestamp": 1}, "TaskResponseMismatch"),
        ({"policy_client": _addr(OUTSIDER)}, "InvalidPolicyClient"),
    ],
)
def test_a_task_disagreeing_with_its_response_reverts(
    world: World, change: dict[str, Any], error: str
) -> None:
    attested = attest(world, transfer_intent(world))
    task = dataclasses.replace(attested.task, **change)
    with reverts(error):
        execute(world, Attested(task, attested.response, attested.certificate))


def test_a_task_with_another_intent_reverts(world: World) -> None:
    attested = attest(world, transfer_intent(world))
    task = dataclasses.replace(attested.task, intent=transfer_intent(world, amount=1))
    with reverts("TaskResponseMismatch"):
        execute(world, Attested(task, attested.response, attested.certificate))


# -- modes and configuration -----------------------------------------------------------------


def test_newton_vault_refuses_the_ecdsa_paths(world: World) -> None:
    vault = world.vault
    with reverts("NewtonMode"):
        transact(world.w3, vault.functions.setOperators(OPERATORS, 2), sender=OWNER)
    call = vault.functions.execute(PAYEE, 0, b"", b"", b"\x01" * 32, POLICY_ID, 2**60, [], 0)
    with reverts("NotInitialized"):
        transact(world.w3, call, sender=AGENT)
    assert vault.functions.newtonValidator().call() == world.validator.address
    assert vault.functions.getPolicyId().call() == POLICY_ID
    # the ERC-1271 path's rule starts by refusing a vault without an operator threshold
    assert vault.functions.threshold().call() == 0
    assert vault.functions.operators().call() == []
    with reverts("AlreadyInitialized"):
        transact(
            world.w3,
            vault.functions.initializeNewton(OWNER, OUTSIDER, world.token.address, POLICY_ID),
            sender=OUTSIDER,
        )


def test_an_ecdsa_vault_refuses_newton_attestations(world: World) -> None:
    receipt = transact(
        world.w3,
        world.factory.functions.createVault(OWNER, AGENT, OPERATORS, 2, POLICY_ID, b"\x08" * 32),
        sender=OWNER,
    )
    address = world.factory.events.VaultCreated().process_receipt(receipt, errors=DISCARD)[0][
        "args"
    ]["vault"]
    ecdsa_vault = world.w3.eth.contract(address=address, abi=load_artifact("AgentVault").abi)
    attested = attest(world, transfer_intent(world))
    with reverts("NotNewtonMode"):
        transact(world.w3, ecdsa_vault.functions.executeNewton(*attested.args()), sender=AGENT)


def test_the_validator_cannot_become_the_agent(world: World) -> None:
    call = world.vault.functions.setAgent(world.validator.address)
    with reverts("AgentNotSeparate", world.validator.address):
        transact(world.w3, call, sender=OWNER)


def test_paused_newton_vault_executes_nothing(world: World) -> None:
    transact(world.w3, world.vault.functions.pause(), sender=OWNER)
    with reverts("VaultPaused"):
        execute(world, attest(world, transfer_intent(world)))


def test_a_validator_without_code_is_refused(world: World) -> None:
    call = world.factory.functions.createNewtonVault(
        OWNER, AGENT, OUTSIDER, POLICY_ID, b"\x09" * 32
    )
    with reverts("InvalidValidator", OUTSIDER):
        transact(world.w3, call, sender=OWNER)


def test_only_the_owner_sets_the_operator_table(world: World) -> None:
    op = BLS_OPERATORS[0]
    call = world.validator.functions.setOperators([op.pubkey], [op.pubkey_g2], [1], [(0, 0)])
    with reverts("NotOwner", OUTSIDER):
        transact(world.w3, call, sender=OUTSIDER)


def test_a_rogue_key_cannot_be_registered(world: World) -> None:
    """The classic rogue key: pk_rogue = pk_attacker - sum(others), so the table's aggregate is
    the attacker's key alone. Its holder knows no secret for it, so it has no proof of
    possession (the attacker's own signature does not verify for it)."""
    others = aggregate_g1([op.pubkey for op in BLS_OPERATORS])
    rogue = g1_add(ATTACKER.pubkey, g1_neg(others))
    g1s = [op.pubkey for op in BLS_OPERATORS] + [rogue]
    message = world.validator.functions.possessionMessage(rogue).call()
    overrides = {
        "g1": g1s,
        "g2": [op.pubkey_g2 for op in BLS_OPERATORS] + [ATTACKER.pubkey_g2],
        "weights": [op.weight for op in BLS_OPERATORS] + [1],
    }
    possession = [
        op.sign(world.validator.functions.possessionMessage(op.pubkey).call())
        for op in BLS_OPERATORS
    ]
    with reverts("InvalidOperatorKey", 4):
        set_table(world, [], **overrides, possession=[*possession, ATTACKER.sign(message)])


def test_a_proof_of_possession_for_another_validator_is_refused(world: World) -> None:
    """A proof is bound to this chain and this validator: one made elsewhere is not reused."""
    op = BLS_OPERATORS[0]
    domain = keccak(b"agentguard.NewtonBlsValidator.possession")
    elsewhere = keccak(
        abi_encode(
            ["bytes32", "uint256", "address", "uint256", "uint256"],
            [domain, CHAIN_ID, world.token.address, *op.pubkey],
        )
    )
    ours = keccak(
        abi_encode(
            ["bytes32", "uint256", "address", "uint256", "uint256"],
            [domain, CHAIN_ID, world.validator.address, *op.pubkey],
        )
    )
    assert world.validator.functions.possessionMessage(op.pubkey).call() == ours
    with reverts("InvalidOperatorKey", 0):
        set_table(world, [op], possession=[op.sign(elsewhere)])


def test_a_g2_key_not_matching_the_g1_key_is_refused(world: World) -> None:
    g2s = [op.pubkey_g2 for op in BLS_OPERATORS]
    g2s[1] = ATTACKER.pubkey_g2
    with reverts("InvalidOperatorKey", 1):
        set_table(world, BLS_OPERATORS, g2=g2s)


# -- agreement with Newton's definitions -----------------------------------------------------


def test_selector_is_newtons_validate_attestation_direct(world: World) -> None:
    abi = load_artifact("NewtonBlsValidator").abi
    (item,) = [i for i in abi if i.get("name") == "validateAttestationDirect"]
    canonical = f"validateAttestationDirect({','.join(_canonical(i) for i in item['inputs'])})"
    assert canonical == VALIDATE_ATTESTATION_DIRECT


def _canonical(param: dict[str, Any]) -> str:
    kind = str(param["type"])
    if kind.startswith("tuple"):
        return f"({','.join(_canonical(c) for c in param['components'])}){kind[len('tuple') :]}"
    return kind


def test_consensus_digest_matches_the_contract(world: World) -> None:
    """The validator's ``consensusDigest`` is ``agentguard.newton``'s
    ``TaskResponse.consensus_digest`` (what the client-side verifier checks), with and without
    policy data, policy params and a non-empty policy."""
    attested = attest(world, transfer_intent(world))
    data = PolicyData(b'{"address":"0x01"}', b"\x01\x02", _addr(POLICY_ADDRESS), 123)
    other = PolicyData(b"", b"\xff" * 70, _addr(OUTSIDER), 2**32 - 1)
    task_data = dataclasses.replace(
        attested.response.policy_task_data, policy_data=(data, other, data)
    )
    responses = [
        attested.response,
        dataclasses.replace(
            attested.response,
            policy_task_data=task_data,
            policy_config=PolicyConfig(b'{"a":1}', 7),
        ),
    ]
    digests = set()
    for response in responses:
        onchain = world.validator.functions.consensusDigest(for_web3(response.abi())).call()
        assert bytes(onchain) == response.consensus_digest()
        digests.add(response.consensus_digest())
    assert len(digests) == 2


def test_certificate_digest_matches_the_contract(world: World) -> None:
    """The validator's ``calculateCertificateDigest`` (EigenLayer's name, selector and typehash)
    is ``agentguard.newton.certificate_digest``: what NewtonVerifier and EigenLayer's
    BN254CertificateVerifier have the operators sign."""
    assert world.validator.functions.BN254_CERTIFICATE_TYPEHASH().call() == keccak(
        b"BN254Certificate(uint32 referenceTimestamp,bytes32 messageHash)"
    )
    for stamp, message in ((0, b"\x00" * 32), (world.reference_timestamp, keccak(b"m")),
                           (2**32 - 1, b"\xff" * 32)):  # fmt: skip
        onchain = world.validator.functions.calculateCertificateDigest(stamp, message).call()
        assert bytes(onchain) == certificate_digest(stamp, message)


@pytest.mark.parametrize("signers", [[0, 1, 2, 3], [1, 2, 3]], ids=["all", "3-of-4"])
def test_one_newton_certificate_passes_newton_verifier_and_the_validator(
    world: World, signers: list[int]
) -> None:
    """One certificate made the client-side verifier's way (``NewtonQuorum.certify``: signed
    over ``certificate_digest``, each non-signer with its Merkle witness) is accepted both by
    ``NewtonVerifier`` against an EigenLayer-style operator table and by the vault's validator,
    when both hold the same operators at the same reference timestamp. Before the validator
    verified the certificate digest (and read witnesses' proofs), it refused this certificate."""
    quorum_ops = [Q.Operator(op.secret, op.pubkey, op.pubkey_g2, (op.weight,))
                  for op in BLS_OPERATORS]  # fmt: skip
    stamp = world.reference_timestamp
    table = deploy(world.w3, "NewtonOperatorTable", sender=Q.OWNER)
    quorum = Q.NewtonQuorum(world.w3, table, quorum_ops, stamp)
    quorum.register(stamp, quorum_ops)
    intent = TransactionIntent.erc20_transfer(
        sender=AGENT, token=world.token.address, recipient=PAYEE, amount=AMOUNT, chain_id=CHAIN_ID
    )
    latest = world.block()
    created, now = int(latest["number"]) - 1, int(latest["timestamp"])
    result = Q.newton_result(
        intent, policy_client=world.vault.address, policy_id=POLICY_ID,
        task_id=secrets.token_bytes(32), expiration=created + EXPIRE_AFTER,
        task_created_block=created, threshold=TASK_THRESHOLD, expire_after=EXPIRE_AFTER,
    )  # fmt: skip
    result["task"]["initializationTimestamp"] = now
    result["task_response"]["initialization_timestamp"] = now
    certified = quorum.certify(result, signers=signers)
    signature_data = bytes.fromhex(certified["signature_data"][2:])
    assert BN254Certificate.decode(signature_data).non_signer_witnesses == tuple(
        Witness(i, merkle_proof([operator_info_leaf(o.info) for o in quorum_ops], i), o.info)
        for i, o in enumerate(quorum_ops)
        if i not in signers
    )

    verifier = quorum.verifier(world.vault.address, policy_id="0x" + POLICY_ID.hex())
    assert verifier.verify(Q.attestation_for(certified, intent), intent).assurance == "newton-bls"

    attested = Attested(
        Task.parse(certified["task"]), TaskResponse.parse(certified["task_response"]),
        signature_data,
    )  # fmt: skip
    execute(world, attested)
    assert world.usdc(PAYEE) == AMOUNT
    assert world.validator.functions.spent(attested.response.task_id).call()


def test_hash_to_g1_matches_the_contract(world: World) -> None:
    for message in (b"\x00" * 32, keccak(b"agentguard"), b"\xff" * 32):
        assert tuple(world.validator.functions.hashToG1(message).call()) == hash_to_g1(message)


@pytest.mark.parametrize(
    "result",
    [
        ABI_TRUE,
        ABI_FALSE,
        (2).to_bytes(32, "big"),
        abi_encode(["string"], ["true"]),
        abi_encode(["string"], ["false"]),
        (32).to_bytes(32, "big") + (4).to_bytes(32, "big") + b"true",
        (99).to_bytes(32, "big") + (4).to_bytes(32, "big") + b"true" + b"\x00" * 28,
        abi_encode(["string"], ["true"])[:64] + b"true" + b"\x00" * 27 + b"\x01",
        b"",
    ],
)
def test_evaluate_result_agrees_with_the_sdk(world: World, result: bytes) -> None:
    assert world.validator.functions.evaluateResult(result).call() is _evaluation_allows(result)


def test_gas_of_one_validated_execution(world: World) -> None:
    """Recorded in docs/architecture.md (run with -s to print): one executeNewton of an ERC-20
    transfer with 3 of 4 operators signing (one non-signer witness), allowed and denied."""
    receipt = execute(world, attest(world, transfer_intent(world), signers=BLS_OPERATORS[1:]))
    denied = execute(
        world,
        attest(world, transfer_intent(world), signers=BLS_OPERATORS[1:], evaluation=ABI_FALSE),
    )
    print(f"\nexecuteNewton gas: {receipt['gasUsed']} (denied: {denied['gasUsed']})")
    assert denied["gasUsed"] < receipt["gasUsed"] < 400_000
