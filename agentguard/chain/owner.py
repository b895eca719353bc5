"""What a vault's owner sends: creation, guardians, policy switches, ownership, migration.

``roll_out_policy`` and ``roll_out_migration`` are the whole procedures, network included:
they register with the network first and change the vault second, so the network (which
evaluates a vault under the registration whose policy id the vault pins) has the new
configuration at hand the moment the vault uses it, and nothing moves before every check passed.
Every other helper sends one owner transaction to an ``AgentVault`` and waits for it. A call the
vault refuses raises ``ConfigurationError`` naming the vault's reason (``TooEarly(applyAt=…)``,
``MigrationMismatch(field=policy)``…) before anything is sent: these are the owner's own
mistakes, and nothing moves. A node that fails is ``NodeUnavailable``; a transaction sent
without a receipt is ``OutcomeUnknown`` (read the vault before sending again).
``docs/vault-upgrades.md`` walks through the procedures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError, TimeExhausted, Web3RPCError
from web3.logs import DISCARD
from web3.types import TxReceipt

from agentguard._eip712 import address_word, keccak, uint_word
from agentguard._exceptions import ConfigurationError, NodeUnavailable, OutcomeUnknown
from agentguard._json import canonical_json
from agentguard.chain.contracts import load_artifact, transact

if TYPE_CHECKING:
    from agentguard.policies import Policy

__all__ = [
    "PolicyPreimage",
    "PolicyRegistrar",
    "Rollout",
    "Scheduled",
    "accept_ownership",
    "apply_policy_delay",
    "apply_policy_switch",
    "cancel_policy_delay",
    "cancel_policy_switch",
    "create_vault",
    "grant_guardian",
    "migrate_vault",
    "require_shipped_vault",
    "revoke_guardian",
    "roll_out_migration",
    "roll_out_policy",
    "set_policy_delay",
    "switch_policy",
    "transfer_ownership",
]

Sender = str | LocalAccount
_CLONE_PREFIX = bytes.fromhex("363d3d373d3d3d363d73")
_CLONE_SUFFIX = bytes.fromhex("5af43d82803e903d91602b57fd5bf3")


@dataclass(frozen=True, slots=True)
class PolicyPreimage:
    """What a policy id is made of, less the vault's address: the same policy pinned in two
    vaults has two ids, and ``migrateTo`` proves onchain they share this preimage."""

    code_hash: bytes
    params_hash: bytes
    expire_after: int

    @classmethod
    def of(cls, policy: Policy, params: Any, expire_after: int = 300) -> PolicyPreimage:
        return cls(policy.code_hash, keccak(canonical_json(params)), expire_after)

    def policy_id(self, vault: str) -> bytes:
        """Equals ``agentguard.policies.policy_id(vault, policy, params, expire_after)``."""
        return keccak(
            address_word(bytes.fromhex(vault[2:]))
            + self.code_hash
            + self.params_hash
            + uint_word(self.expire_after)
        )


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A policy switch or delay change: ``applied`` at once, or due from ``apply_at`` (unix s)."""

    applied: bool
    apply_at: int


@dataclass(frozen=True, slots=True)
class Rollout:
    """A new configuration registered with the network and switched to on the vault (or
    scheduled: ``switch.applied`` is False until ``apply_policy_switch`` from ``apply_at``)."""

    policy_id: bytes
    switch: Scheduled


class PolicyRegistrar(Protocol):
    """Where the owner registers a policy client's configuration (``ReferenceNetwork``)."""

    def register_policy_client(
        self,
        policy_client: str,
        policy: str | Policy,
        params: dict[str, Any],
        expire_after: int = ...,
        chain_id: int = ...,
        *,
        owner_key: str | None = ...,
        version: int | None = ...,
    ) -> str: ...


def _send(w3: Web3, call: ContractFunction, sender: Sender, what: str) -> TxReceipt:
    """``transact``, with the vault's refusal as a ``ConfigurationError`` naming its reason."""
    from agentguard.wallet._revert import decode_revert, revert_data  # the wallet imports chain

    try:
        return transact(w3, call, sender=sender)
    except ContractLogicError as exc:
        data = revert_data(exc)
        reason = decode_revert(data) if data else str(exc)
        raise ConfigurationError(f"the vault refused {what}: {reason}; nothing changed") from None
    except TimeExhausted:
        raise OutcomeUnknown(
            f"{what} was sent but no receipt came; read the vault's state before sending again"
        ) from None
    except (Web3RPCError, OSError) as exc:
        raise NodeUnavailable(
            f"the RPC node failed while sending {what} ({type(exc).__name__}); retry later"
        ) from None


def _event(contract: Contract, name: str, receipt: TxReceipt) -> list[dict[str, Any]]:
    found = contract.events[name]().process_receipt(receipt, errors=DISCARD)
    return [dict(e["args"]) for e in found if e["address"] == contract.address]


def create_vault(
    w3: Web3,
    factory: Contract,
    *,
    owner: str,
    agent: str,
    operators: Sequence[str],
    threshold: int,
    policy_id: bytes,
    salt: bytes,
    sender: Sender,
) -> Contract:
    """Creates and initializes an ECDSA-quorum ``AgentVault`` in one transaction (nobody can
    initialize it first); its address is ``factory.predictVault(sender, salt)``."""
    call = factory.functions.createVault(
        to_checksum_address(owner),
        to_checksum_address(agent),
        [to_checksum_address(o) for o in operators],
        threshold,
        policy_id,
        salt,
    )
    receipt = _send(w3, call, sender, "createVault")
    created = _event(factory, "VaultCreated", receipt)
    if len(created) != 1:
        raise ConfigurationError("createVault emitted no VaultCreated event")
    vault: Contract = w3.eth.contract(
        address=created[0]["vault"], abi=load_artifact("AgentVault").abi
    )
    return vault


def grant_guardian(w3: Web3, vault: Contract, guardian: str, *, sender: Sender) -> None:
    """``guardian`` may pause the vault (and do nothing else) from now on."""
    _send(w3, vault.functions.grantGuardian(to_checksum_address(guardian)), sender, "grantGuardian")


def revoke_guardian(w3: Web3, vault: Contract, guardian: str, *, sender: Sender) -> None:
    _send(
        w3, vault.functions.revokeGuardian(to_checksum_address(guardian)), sender, "revokeGuardian"
    )


def _scheduled(
    w3: Web3, vault: Contract, receipt: TxReceipt, applied: str, later: str
) -> Scheduled:
    if _event(vault, applied, receipt):
        block = w3.eth.get_block(receipt["blockNumber"])
        return Scheduled(applied=True, apply_at=int(block["timestamp"]))
    (event,) = _event(vault, later, receipt)
    return Scheduled(applied=False, apply_at=int(event["applyAt"]))


def switch_policy(w3: Web3, vault: Contract, policy_id: bytes, *, sender: Sender) -> Scheduled:
    """``setPolicyId``: switches at once when the vault's ``policyDelay`` is 0, else schedules
    the switch for ``apply_policy_switch`` from ``apply_at`` on. Attestations under the old id
    work until the switch applies, then never again."""
    receipt = _send(w3, vault.functions.setPolicyId(policy_id), sender, "setPolicyId")
    return _scheduled(w3, vault, receipt, "PolicyIdSet", "PolicySwitchScheduled")


def apply_policy_switch(w3: Web3, vault: Contract, *, sender: Sender) -> bytes:
    """Applies the scheduled switch (its delay has passed); returns the vault's new policy id."""
    receipt = _send(w3, vault.functions.applyPolicySwitch(), sender, "applyPolicySwitch")
    (event,) = _event(vault, "PolicyIdSet", receipt)
    return bytes(event["policyId"])


def cancel_policy_switch(w3: Web3, vault: Contract, *, sender: Sender) -> None:
    _send(w3, vault.functions.cancelPolicySwitch(), sender, "cancelPolicySwitch")


def set_policy_delay(w3: Web3, vault: Contract, delay: int, *, sender: Sender) -> Scheduled:
    """Raising the delay applies at once; lowering it waits the current delay."""
    receipt = _send(w3, vault.functions.setPolicyDelay(delay), sender, "setPolicyDelay")
    return _scheduled(w3, vault, receipt, "PolicyDelaySet", "PolicyDelayChangeScheduled")


def apply_policy_delay(w3: Web3, vault: Contract, *, sender: Sender) -> None:
    _send(w3, vault.functions.applyPolicyDelay(), sender, "applyPolicyDelay")


def cancel_policy_delay(w3: Web3, vault: Contract, *, sender: Sender) -> None:
    _send(w3, vault.functions.cancelPolicyDelay(), sender, "cancelPolicyDelay")


def transfer_ownership(w3: Web3, vault: Contract, new_owner: str, *, sender: Sender) -> None:
    """Step one of two (the zero address cancels): ``new_owner`` must ``accept_ownership``."""
    call = vault.functions.transferOwnership(to_checksum_address(new_owner))
    _send(w3, call, sender, "transferOwnership")


def accept_ownership(w3: Web3, vault: Contract, *, sender: Sender) -> None:
    _send(w3, vault.functions.acceptOwnership(), sender, "acceptOwnership")


def require_shipped_vault(w3: Web3, address: str) -> None:
    """Refuses (``ConfigurationError``) an address that is not an EIP-1167 clone of an
    implementation running exactly the ``AgentVault`` this package ships: the views
    ``migrateTo`` asks can be answered by any contract written to pass them."""
    code = bytes(w3.eth.get_code(to_checksum_address(address)))
    if len(code) != 45 or not code.startswith(_CLONE_PREFIX) or not code.endswith(_CLONE_SUFFIX):
        raise ConfigurationError(
            f"{address} is not an AgentVault clone; create the new vault with "
            "AgentVaultFactory.createVault"
        )
    implementation = to_checksum_address(code[10:30])
    if bytes(w3.eth.get_code(implementation)) != load_artifact("AgentVault").deployed_bytecode:
        raise ConfigurationError(
            f"{address} is a clone of {implementation}, which is not the AgentVault this "
            "agentguard ships; create the new vault with a factory deployed from this package"
        )


def _check_migration(w3: Web3, old: Contract, new: Contract, preimage: PolicyPreimage) -> None:
    """What ``migrateTo`` cannot see (``require_shipped_vault``), that ``new`` is as strict as
    ``old`` (``_as_strict``), and that both vaults pin the policy of ``preimage`` (the vault
    refuses otherwise; here it is refused before anything)."""
    require_shipped_vault(w3, new.address)
    _as_strict(old, new)
    for vault in (old, new):
        expected = preimage.policy_id(vault.address)
        if bytes(vault.functions.policyId().call()) != expected:
            raise ConfigurationError(
                f"vault {vault.address} does not pin this policy (its policyId is not "
                f"0x{expected.hex()}); switch it first, or give the policy it pins"
            )


def _as_strict(old: Contract, new: Contract) -> None:
    """``migrateTo`` compares owner, agent, operators, threshold and policy, not what guards
    a change: a fresh vault has policy delay 0, and its owner may have set a lower high-tier
    threshold at once. Moving the funds there would drop the delay a lowering must wait (and
    the watch window it gives) and loosen tier ``high`` in one step, and a switch scheduled on
    ``old`` would be lost. So ``new`` must have at least ``old``'s delay and tier thresholds,
    and neither vault a change scheduled: dropped on ``old``, and on ``new`` scheduled where
    nobody watching ``old`` looked (the operators, and with them tiers ``all`` and ``human``,
    are compared onchain)."""
    looser = [
        f"{label} {theirs} < {ours}"
        for label, view, args in (
            ("policyDelay", "policyDelay", ()),
            ("tier high's threshold", "tierThreshold", (1,)),
        )
        for ours, theirs in [(old.functions[view](*args).call(), new.functions[view](*args).call())]
        if int(theirs) < int(ours)
    ]
    if looser:
        raise ConfigurationError(
            f"vault {new.address} is looser than {old.address}: {', '.join(looser)}; raise "
            "them on the new vault (set_policy_delay, setHighThreshold) before migrating"
        )
    for vault, why in (
        (old, "a migration would drop it"),
        (new, "nobody watching the old vault saw it"),
    ):
        scheduled = _scheduled_changes(vault)
        if scheduled:
            raise ConfigurationError(
                f"vault {vault.address} has {' and '.join(scheduled)} scheduled, and {why}; "
                "apply or cancel it first"
            )


def _scheduled_changes(vault: Contract) -> list[str]:
    """The changes waiting for their delay on ``vault`` (a switch, a lower delay, a lower
    high-tier threshold)."""
    switch, _ = vault.functions.pendingPolicySwitch().call()
    _, delay_at = vault.functions.pendingPolicyDelay().call()
    _, _, high_at = vault.functions.highThreshold().call()
    return [
        what
        for what, pending in (
            (f"a policy switch to 0x{bytes(switch).hex()}", bytes(switch) != bytes(32)),
            ("a lower policy delay", delay_at != 0),
            ("a lower high-tier threshold", high_at != 0),
        )
        if pending
    ]


def migrate_vault(
    w3: Web3,
    old: Contract,
    new: Contract,
    *,
    tokens: Sequence[str],
    preimage: PolicyPreimage,
    sender: Sender,
) -> dict[str, int]:
    """Moves every wei of ETH and the whole balance of each of ``tokens`` from ``old`` to
    ``new`` in one owner transaction (``migrateTo``); ``old`` ends paused. ``new`` must be a
    clone of the shipped ``AgentVault`` with the same owner, agent, operators, threshold and
    policy (``preimage``). Returns what moved, by token (``0x0…0``: ETH)."""
    _check_migration(w3, old, new, preimage)
    call = old.functions.migrateTo(
        new.address,
        [to_checksum_address(t) for t in tokens],
        preimage.code_hash,
        preimage.params_hash,
        preimage.expire_after,
    )
    receipt = _send(w3, call, sender, "migrateTo")
    return {e["token"]: int(e["amount"]) for e in _event(old, "Withdrawn", receipt)}


def _owner_account(vault: Contract, owner_key: str) -> LocalAccount:
    """The owner's account, refused unless it is the vault's ``owner()`` (before anything is
    registered: a registration by another key would be refused by the network anyway)."""
    try:
        account: LocalAccount = Account.from_key(owner_key)
    except (ValueError, TypeError):
        raise ConfigurationError("owner_key must be a 32-byte hex private key") from None
    onchain = str(vault.functions.owner().call())
    if onchain.lower() != account.address.lower():
        raise ConfigurationError(
            f"vault {vault.address} is owned by {onchain}, not by {account.address}; only its "
            "owner registers its configuration and switches it"
        )
    return account


def _register(
    w3: Web3,
    network: PolicyRegistrar,
    vault: Contract,
    policy: Policy,
    params: Mapping[str, Any],
    expire_after: int,
    owner_key: str,
) -> bytes:
    """Registers ``vault``'s configuration (a new version) and checks the network's id."""
    expected = "0x" + PolicyPreimage.of(policy, params, expire_after).policy_id(vault.address).hex()
    registered = network.register_policy_client(
        vault.address,
        policy,
        dict(params),
        expire_after,
        int(w3.eth.chain_id),
        owner_key=owner_key,
    )
    if registered.lower() != expected:
        raise ConfigurationError(
            f"the network registered {vault.address} under policy id {registered}, not "
            f"{expected} (the id of this policy, params and expiry); the vault was not changed"
        )
    return bytes.fromhex(expected[2:])


def roll_out_policy(
    w3: Web3,
    vault: Contract,
    network: PolicyRegistrar,
    *,
    policy: Policy,
    params: Mapping[str, Any],
    expire_after: int = 300,
    owner_key: str,
) -> Rollout:
    """Registers the new configuration with the network, then switches the vault to its id
    (at once with ``policyDelay`` 0, else scheduled: ``apply_policy_switch`` from
    ``switch.apply_at``). In this order, a network that reads the vault's pin (a gateway with
    ``gateway.chain_rpc``, operators with ``--chain-rpc``) goes on attesting under the old id
    until the transaction that applies the switch, and under the new one from then on: no
    window where it attests what the vault refuses, and nothing under the new id is accepted
    before the owner's switch. A cancelled switch (``cancel_policy_switch``) leaves it on the
    old id. Returns the new id (pin it in the agent's ``Guard``)."""
    owner = _owner_account(vault, owner_key)
    new_id = _register(w3, network, vault, policy, params, expire_after, owner_key)
    if bytes(vault.functions.policyId().call()) == new_id:  # already pinned: re-registered
        block = w3.eth.get_block("latest")
        return Rollout(new_id, Scheduled(applied=True, apply_at=int(block["timestamp"])))
    return Rollout(new_id, switch_policy(w3, vault, new_id, sender=owner))


def roll_out_migration(
    w3: Web3,
    old: Contract,
    new: Contract,
    network: PolicyRegistrar,
    *,
    policy: Policy,
    params: Mapping[str, Any],
    expire_after: int = 300,
    tokens: Sequence[str],
    owner_key: str,
) -> dict[str, int]:
    """Registers ``new`` with the network under the same policy, params and expiry as
    ``old``, then moves the funds (``migrate_vault``). Everything is checked before anything is
    registered or sent: ``new`` is a shipped ``AgentVault`` and both vaults pin exactly this
    configuration, so a new vault set up with another policy than the one registered is refused
    with nothing registered and nothing moved. Registering first opens no window: ``new`` holds
    nothing until ``migrateTo``, and from that transaction on ``old`` is paused."""
    owner = _owner_account(old, owner_key)
    preimage = PolicyPreimage.of(policy, params, expire_after)
    _check_migration(w3, old, new, preimage)
    _owner_account(new, owner_key)
    _register(w3, network, new, policy, params, expire_after, owner_key)
    return migrate_vault(w3, old, new, tokens=tokens, preimage=preimage, sender=owner)
