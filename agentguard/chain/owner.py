"""What a vault's owner sends: creation, guardians, policy switches, ownership, migration.

Every helper sends one owner transaction to an ``AgentVault`` and waits for it. A call the
vault refuses raises ``ConfigurationError`` naming the vault's reason (``TooEarly(applyAt=…)``,
``MigrationMismatch(field=policy)``…) before anything is sent: these are the owner's own
mistakes, and nothing moves. A node that fails is ``NodeUnavailable``; a transaction sent
without a receipt is ``OutcomeUnknown`` (read the vault before sending again).
``docs/vault-upgrades.md`` walks through the procedures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
    require_shipped_vault(w3, new.address)
    for vault in (old, new):
        expected = preimage.policy_id(vault.address)
        if bytes(vault.functions.policyId().call()) != expected:
            raise ConfigurationError(
                f"vault {vault.address} does not pin this policy (its policyId is not "
                f"0x{expected.hex()}); switch it first, or give the policy it pins"
            )
    call = old.functions.migrateTo(
        new.address,
        [to_checksum_address(t) for t in tokens],
        preimage.code_hash,
        preimage.params_hash,
        preimage.expire_after,
    )
    receipt = _send(w3, call, sender, "migrateTo")
    return {e["token"]: int(e["amount"]) for e in _event(old, "Withdrawn", receipt)}
