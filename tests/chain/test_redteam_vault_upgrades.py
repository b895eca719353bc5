"""Red team: the riskiest moments of a vault are not its policy but its set-up and changes:
first initialization, re-initialization, an owner change, an operator-set change, a mode change.

Each test is the attack someone would try; the docstring says what it would have done where the
vault once allowed it.
"""

from __future__ import annotations

from coincurve import PrivateKey
from web3.contract import Contract

from agentguard._attestation import operator_address
from agentguard._eip712 import keccak
from agentguard._intent import TransactionIntent
from agentguard.chain import load_artifact, transact
from agentguard.chain.owner import accept_ownership, grant_guardian, transfer_ownership
from tests.chain.helpers import (
    AGENT,
    CHAIN_ID,
    OPERATOR_KEYS,
    OPERATORS,
    OUTSIDER,
    OWNER,
    PAYEE,
    POLICY_ID,
    STRANGER_KEYS,
    VAULT_USDC,
    Env,
    attested_execute,
    events,
    reverts,
)

ZERO = "0x" + "00" * 20
SALT = b"\x66" * 32
STRANGERS = [operator_address(k) for k in STRANGER_KEYS]


def _vault_at(env: Env, address: str) -> Contract:
    return env.w3.eth.contract(address=address, abi=load_artifact("AgentVault").abi)


# -- initialization -------------------------------------------------------------------------


def test_a_deployed_vault_cannot_be_initialized_again(env: Env) -> None:
    """Re-initializing a live clone would hand it to the caller (owner, agent, operators) with
    the funds inside; both initializers refuse, from anyone, the owner included."""
    v = env.vault.functions
    for caller in (OUTSIDER, OWNER):
        with reverts("AlreadyInitialized"):
            v.initialize(OUTSIDER, PAYEE, STRANGERS, 1, POLICY_ID).transact({"from": caller})
        with reverts("AlreadyInitialized"):
            v.initializeNewton(OUTSIDER, PAYEE, env.token.address, POLICY_ID).transact(
                {"from": caller}
            )
    assert (v.owner().call(), v.agent().call(), v.operators().call()) == (OWNER, AGENT, OPERATORS)


def test_the_implementation_cannot_be_initialized_or_used(env: Env) -> None:
    """The implementation behind every clone is a contract too: initialized by an attacker it
    would be theirs. It is locked in its constructor: no initializer, no owner function."""
    impl = _vault_at(env, env.factory.functions.implementation().call())
    with reverts("AlreadyInitialized"):
        impl.functions.initialize(OUTSIDER, PAYEE, STRANGERS, 1, POLICY_ID).transact(
            {"from": OUTSIDER}
        )
    with reverts("AlreadyInitialized"):
        impl.functions.initializeNewton(OUTSIDER, PAYEE, env.token.address, POLICY_ID).transact(
            {"from": OUTSIDER}
        )
    assert impl.functions.owner().call() == ZERO
    with reverts("NotOwner", OUTSIDER):
        impl.functions.grantGuardian(OUTSIDER).transact({"from": OUTSIDER})
    with reverts("NotOwner", OUTSIDER):
        impl.functions.transferOwnership(OUTSIDER).transact({"from": OUTSIDER})


def test_the_first_initialization_cannot_be_front_run(env: Env) -> None:
    """With deploy and initialize as two transactions, an attacker watching the mempool
    initializes the fresh clone first. The factory does both in one transaction: before it the
    address has no code (an `initialize` sent there does nothing), in it the vault emits
    `Initialized` with the creator's settings, and after it a second `initialize` reverts. An
    attacker who copies the salt lands elsewhere (the salt is mixed with the creator)."""
    f = env.factory.functions
    predicted = f.predictVault(OWNER, SALT).call()
    early = _vault_at(env, predicted).functions.initialize(OUTSIDER, PAYEE, STRANGERS, 1, POLICY_ID)
    transact(env.w3, early, sender=OUTSIDER)  # a call to an empty account: no effect
    assert env.w3.eth.get_code(predicted) == b""
    copied = transact(
        env.w3, f.createVault(OUTSIDER, PAYEE, STRANGERS, 1, POLICY_ID, SALT), sender=OUTSIDER
    )
    (theirs,) = events(env.factory, "VaultCreated", copied)
    assert theirs["vault"] != predicted
    receipt = transact(
        env.w3, f.createVault(OWNER, AGENT, OPERATORS, 2, POLICY_ID, SALT), sender=OWNER
    )
    vault = _vault_at(env, predicted)
    assert events(vault, "Initialized", receipt) == [
        {"owner": OWNER, "agent": AGENT, "policyId": POLICY_ID}
    ]
    with reverts("AlreadyInitialized"):
        vault.functions.initialize(OUTSIDER, PAYEE, STRANGERS, 1, POLICY_ID).transact(
            {"from": OUTSIDER}
        )
    assert vault.functions.owner().call() == OWNER


# -- ownership ------------------------------------------------------------------------------


def test_only_the_owner_starts_a_transfer_and_only_the_named_address_accepts(env: Env) -> None:
    """A one-step `transferOwnership` with a typo (or a phished address) loses the vault for
    good; here the named address must accept, nobody else can, and until then the old owner
    keeps every power and the pending one has none."""
    grant_guardian(env.w3, env.vault, PAYEE, sender=OWNER)
    v = env.vault.functions
    for caller in (AGENT, OUTSIDER, PAYEE):  # PAYEE is a guardian
        with reverts("NotOwner", caller):
            v.transferOwnership(caller).transact({"from": caller})
    with reverts("NotPendingOwner", OUTSIDER):
        v.acceptOwnership().transact({"from": OUTSIDER})
    receipt = transact(env.w3, v.transferOwnership(OUTSIDER), sender=OWNER)
    assert events(env.vault, "OwnershipTransferStarted", receipt) == [
        {"owner": OWNER, "pendingOwner": OUTSIDER}
    ]
    assert v.pendingOwner().call() == OUTSIDER
    with reverts("NotOwner", OUTSIDER):
        v.withdraw(env.token.address, OUTSIDER, 1).transact({"from": OUTSIDER})
    for caller in (AGENT, PAYEE, OWNER):
        with reverts("NotPendingOwner", caller):
            v.acceptOwnership().transact({"from": caller})
    receipt = transact(env.w3, v.acceptOwnership(), sender=OUTSIDER)
    assert events(env.vault, "OwnershipTransferred", receipt) == [
        {"previousOwner": OWNER, "newOwner": OUTSIDER}
    ]
    assert (v.owner().call(), v.pendingOwner().call()) == (OUTSIDER, ZERO)
    with reverts("NotOwner", OWNER):
        v.withdraw(env.token.address, OWNER, 1).transact({"from": OWNER})
    with reverts("NotPendingOwner", OUTSIDER):
        v.acceptOwnership().transact({"from": OUTSIDER})  # once
    transact(env.w3, v.withdraw(env.token.address, OUTSIDER, 1), sender=OUTSIDER)
    assert env.usdc(OUTSIDER) == 1


def test_a_cancelled_or_redirected_transfer_cannot_be_accepted(env: Env) -> None:
    v = env.vault.functions
    transact(env.w3, v.transferOwnership(OUTSIDER), sender=OWNER)
    transact(env.w3, v.transferOwnership(PAYEE), sender=OWNER)
    with reverts("NotPendingOwner", OUTSIDER):
        v.acceptOwnership().transact({"from": OUTSIDER})
    transact(env.w3, v.transferOwnership(ZERO), sender=OWNER)
    with reverts("NotPendingOwner", PAYEE):
        v.acceptOwnership().transact({"from": PAYEE})
    assert v.owner().call() == OWNER


def test_the_agent_cannot_become_the_owner(env: Env) -> None:
    """An owner tricked into naming the agent key would hand it `withdraw` (no attestation):
    the key alone would then move everything. Accepting is refused."""
    transact(env.w3, env.vault.functions.transferOwnership(AGENT), sender=OWNER)
    with reverts("AgentNotSeparate", AGENT):
        env.vault.functions.acceptOwnership().transact({"from": AGENT})
    assert env.vault.functions.owner().call() == OWNER


def test_a_quorum_attestation_cannot_make_the_vault_act_as_its_owner(env: Env) -> None:
    """The agent, even with a valid quorum attestation, calls the vault's own owner functions
    through `execute`: as `msg.sender` the vault is not its owner (`NotOwner(vault)`), and a
    transfer naming the vault cannot be accepted by it (a vault owning itself has nobody
    outside to pause it)."""
    vault = env.vault
    hijack = _self_call(env, "transferOwnership(address)", [AGENT])
    with reverts("NotOwner", vault.address):
        attested_execute(env, hijack).transact({"from": AGENT})
    transact(env.w3, vault.functions.transferOwnership(vault.address), sender=OWNER)
    accept = _self_call(env, "acceptOwnership()", [])
    with reverts("AgentNotSeparate", vault.address):
        attested_execute(env, accept).transact({"from": AGENT})
    assert vault.functions.owner().call() == OWNER


def _self_call(env: Env, signature: str, args: list[object]) -> TransactionIntent:
    name = signature.split("(")[0]
    return TransactionIntent(
        from_=env.vault.address,
        to=env.vault.address,
        data=env.vault.encode_abi(name, args=args),
        chain_id=CHAIN_ID,
        function_signature=signature,
    )


def test_python_helpers_transfer_and_accept(env: Env) -> None:
    transfer_ownership(env.w3, env.vault, OUTSIDER, sender=OWNER)
    accept_ownership(env.w3, env.vault, sender=OUTSIDER)
    assert env.vault.functions.owner().call() == OUTSIDER


# -- operator set ---------------------------------------------------------------------------


def test_a_removed_operators_signatures_stop_at_once(env: Env) -> None:
    """An operator caught signing wrong results (the challenger names it) is rotated out:
    an attestation it co-signed before the rotation, still unexpired, no longer executes,
    while the remaining keys go on."""
    intent = env.transfer_intent()
    with_removed = attested_execute(env, intent, keys=[OPERATOR_KEYS[0], OPERATOR_KEYS[2]])
    transact(env.w3, env.vault.functions.setOperators(OPERATORS[:2], 2), sender=OWNER)
    with reverts("UnknownOperator", OPERATORS[2]):
        with_removed.transact({"from": AGENT})
    transact(env.w3, attested_execute(env, intent, keys=OPERATOR_KEYS[:2]), sender=AGENT)
    assert env.usdc(PAYEE) == 5_000_000


def test_operator_sets_that_weaken_the_quorum_are_refused(env: Env) -> None:
    """Threshold 0 would execute with no signature at all; a threshold above the set would
    brick the vault; a duplicated key would count one operator twice toward the quorum; the
    zero address is what `ecrecover` returns for garbage. Refused on rotation and creation."""
    v, f = env.vault.functions, env.factory.functions
    cases = [
        ((OPERATORS, 0), ("InvalidThreshold", 0, 3)),
        ((OPERATORS, 4), ("InvalidThreshold", 4, 3)),
        (([], 1), ("InvalidThreshold", 1, 0)),
        (([OPERATORS[0], OPERATORS[0], OPERATORS[1]], 2), ("InvalidOperator", OPERATORS[0])),
        (([OPERATORS[0], ZERO], 2), ("InvalidOperator", ZERO)),
        (([f"0x{i + 1:040x}" for i in range(257)], 2), ("InvalidThreshold", 2, 257)),
    ]
    for (ops, threshold), (error, *args) in cases:
        ops = [env.w3.to_checksum_address(o) for o in ops]
        with reverts(error, *args):
            v.setOperators(ops, threshold).transact({"from": OWNER})
        with reverts(error, *args):
            f.createVault(OWNER, AGENT, ops, threshold, POLICY_ID, SALT).transact({"from": OWNER})
    assert (v.operators().call(), v.threshold().call()) == (OPERATORS, 2)
    # the zero-signature attestation threshold 0 would have let through
    empty = attested_execute(env, env.transfer_intent(), keys=[])
    with reverts("InsufficientQuorum", 0, 2):
        empty.transact({"from": AGENT})


def test_a_newton_vault_cannot_be_switched_to_ecdsa_operators(env: Env) -> None:
    """A Newton-mode vault trusts its validator's BLS quorum only. If its owner (or a stolen
    owner key) could install an ECDSA operator set, a handful of keys would replace Newton's
    quorum: `setOperators` and a second (ECDSA) initialization are refused, and its ECDSA
    paths authorize nothing."""
    created = transact(
        env.w3,
        env.factory.functions.createNewtonVault(OWNER, AGENT, env.token.address, POLICY_ID, SALT),
        sender=OWNER,
    )
    (event,) = events(env.factory, "VaultCreated", created)
    newton = _vault_at(env, event["vault"])
    transact(env.w3, env.token.functions.mint(newton.address, VAULT_USDC), sender=OWNER)
    with reverts("NewtonMode"):
        newton.functions.setOperators(STRANGERS, 1).transact({"from": OWNER})
    with reverts("AlreadyInitialized"):
        newton.functions.initialize(OWNER, AGENT, STRANGERS, 1, POLICY_ID).transact({"from": OWNER})
    intent = TransactionIntent.erc20_transfer(
        sender=newton.address, token=env.token.address, recipient=PAYEE, amount=1,
        chain_id=CHAIN_ID,
    )  # fmt: skip
    with reverts("NotInitialized"):
        attested_execute(env, intent, vault=newton, keys=STRANGER_KEYS).transact({"from": AGENT})
    assert newton.functions.threshold().call() == 0
    assert env.usdc(newton.address) == VAULT_USDC


def test_a_fresh_key_is_not_an_operator_until_the_owner_adds_it(env: Env) -> None:
    key = PrivateKey(keccak(b"agentguard test newcomer"))
    lone = attested_execute(env, env.transfer_intent(), keys=[key, OPERATOR_KEYS[0]])
    with reverts("UnknownOperator", operator_address(key)):
        lone.transact({"from": AGENT})


# -- gas ------------------------------------------------------------------------------------


def test_execute_gas_ignores_upgrade_state(env: Env) -> None:
    """Guardians, a scheduled switch, a delay and a pending owner are read by no hot path: an
    attested ERC-20 `execute` (2 of 3) costs what it cost before they existed (about 101 300
    gas once the payee holds tokens: 100 800 before the trust tier word), whatever of them is
    set. The margin is calldata noise (random task ids and signatures)."""

    def gas(amount: int) -> int:
        call = attested_execute(env, env.transfer_intent(amount=amount))
        return int(transact(env.w3, call, sender=AGENT)["gasUsed"])

    gas(1)  # the payee's first tokens (a cold, empty balance slot) cost more
    plain = gas(2)
    v = env.vault.functions
    transact(env.w3, v.grantGuardian(OUTSIDER), sender=OWNER)
    transact(env.w3, v.setPolicyDelay(3600), sender=OWNER)
    transact(env.w3, v.setPolicyId(keccak(b"next")), sender=OWNER)
    transact(env.w3, v.transferOwnership(OUTSIDER), sender=OWNER)
    upgraded = gas(3)
    print(f"execute gas: {plain} plain, {upgraded} with upgrade state set")
    assert abs(upgraded - plain) < 300
    assert plain < 102_000
