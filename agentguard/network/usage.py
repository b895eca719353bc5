"""What the gateway (and, given an RPC, each operator) asks the chain about policy clients:
is it a contract, who owns the vault, which policy id it pins, and was an attestation used.

For a policy client that is an ``AgentVault``, usage is a fact onchain: ``execute`` marks
``taskUsed[taskId]``, and an x402 payment from the vault spends the EIP-3009 nonce equal to the
task id on the token (``authorizationState(vault, taskId)``). So the gateway need not take a
host's word that it released an attestation unused. For a policy client without code the chain
cannot tell, and the check answers ``None``.

"No code" is never cached: a vault can be deployed at its predicted address at any time, and a
stale "no code" would let a vault's released attestation be given back (then spent twice).
"Code" is cached for ``CODE_TTL`` seconds only: a reorg or an anvil revert can take a contract
away, and a stale "code" fails closed meanwhile (the vault's ``taskUsed`` call fails, the task
stays counted) but would never end.

The gateway runs this check whenever its config names a chain RPC (``gateway.chain_rpc``,
``ReferenceNetwork(usage_check_rpc=...)``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.exceptions import BadFunctionCallOutput, ContractLogicError

from agentguard._exceptions import ConfigurationError
from agentguard._redact import register_url_secrets
from agentguard.network.registration import Registration
from agentguard.network.state import PENDING, Pending, TaskRecord

__all__ = ["CODE_CACHE", "CODE_TTL", "ChainUsageCheck"]

CODE_TTL = 30.0
"""Seconds a "this address has code" answer is trusted without asking again."""
CODE_CACHE = 4096
"""Addresses whose code is remembered at most (the least recently asked go first)."""

_VIEWS = [
    {
        "name": "taskUsed",
        "type": "function",
        "stateMutability": "view",
        "inputs": [{"name": "taskId", "type": "bytes32"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "name": "owner",
        "type": "function",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "address"}],
    },
    {
        "name": "policyId",
        "type": "function",
        "stateMutability": "view",
        "inputs": [],
        "outputs": [{"name": "", "type": "bytes32"}],
    },
    {
        "name": "authorizationState",
        "type": "function",
        "stateMutability": "view",
        "inputs": [
            {"name": "authorizer", "type": "address"},
            {"name": "nonce", "type": "bytes32"},
        ],
        # the raw word: the vault reads any nonzero word as spent (a strict bool would not)
        "outputs": [{"name": "", "type": "bytes32"}],
    },
]


class ChainUsageCheck:
    """Its calls block (5 s timeout each): the gateway's sweep calls it off the event loop."""

    def __init__(self, rpc_url: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        register_url_secrets(rpc_url)  # a failing node's error quotes the URL's path (a key?)
        self._w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 5}))
        self._clock = clock
        self._contracts: OrderedDict[str, float] = OrderedDict()  # address -> trusted until
        self._lock = threading.Lock()  # the sweep's worker thread and the loop both ask
        self._chain_id: int | None = None

    @property
    def chain_id(self) -> int:
        """The chain this RPC serves: it can say nothing about policy clients on another."""
        if self._chain_id is None:
            self._chain_id = int(self._w3.eth.chain_id)
        return self._chain_id

    def has_code(self, address: str, block: int | None = None) -> bool:
        """Whether ``address`` holds code at ``block`` (the latest by default). "Code" is
        remembered (``CODE_TTL``): if it is gone at ``block`` after all, a view called there
        fails (fails closed)."""
        key = address.lower()
        with self._lock:
            until = self._contracts.get(key)
            if until is not None and until > self._clock():
                self._contracts.move_to_end(key)
                return True
            self._contracts.pop(key, None)
        if len(self._w3.eth.get_code(to_checksum_address(address), block)) == 0:
            return False
        with self._lock:
            self._contracts[key] = self._clock() + CODE_TTL
            while len(self._contracts) > CODE_CACHE:
                self._contracts.popitem(last=False)
        return True

    def _contract(self, address: str) -> object:
        return self._w3.eth.contract(address=to_checksum_address(address), abi=_VIEWS)

    def owner(self, address: str) -> str | None:
        """The contract's ``owner()``, or ``None`` if it has none (not a vault)."""
        try:
            owner: str = self._contract(address).functions.owner().call()  # type: ignore[attr-defined]
        except Exception:  # reverts or answers garbage: not an owned contract
            return None
        return owner.lower()

    def policy_id(self, address: str) -> bytes | None:
        """The vault's pinned ``policyId()``, or ``None`` if the contract has none (not a
        vault). A node that fails raises (``agentguard.network.pins`` decides what then)."""
        try:
            pin = self._contract(address).functions.policyId().call()  # type: ignore[attr-defined]
        except (ContractLogicError, BadFunctionCallOutput, ValueError):
            return None  # reverts or answers garbage: not a vault
        return bytes(pin) if isinstance(pin, bytes) and len(pin) == 32 else None

    def check_owner(self, registration: Registration) -> str | None:
        """A contract client (a vault) is registered only by its ``owner()``: returns that
        owner once confirmed, ``None`` where the chain cannot tell (no code at the address
        yet, a registration for another chain than this RPC's, or a self-signed registration,
        which proves a key, not a contract)."""
        if registration.self_owned:
            return None
        client = registration.policy_client_hex
        try:
            if registration.chain_id != self.chain_id or not self.has_code(client):
                return None
        except Exception as exc:  # the node is down or answers garbage: hold nothing
            raise ConfigurationError(
                f"registration: cannot ask the chain whether {client} is a contract "
                f"({type(exc).__name__}); try again when the node answers"
            ) from None
        owner = self.owner(client)
        if owner != registration.owner_hex:
            raise ConfigurationError(
                f"registration: policy client {client} is a contract whose owner() is "
                f"{owner or 'not defined'}; the registration must be signed by that owner, "
                f"not by {registration.owner_hex}"
            )
        return owner

    def was_used(self, task: TaskRecord) -> bool | Pending | None:
        """Used is final; "unused" only once the chain's own clock has passed the expiry
        (``PENDING`` until then). The vault accepts an attestation while ``block.timestamp <
        expiresAt``, so on a chain stamped behind the gateway's clock, "unused" at the
        gateway's expiry proves nothing: the host could still execute it (or deploy the vault
        and then execute it). Blocks never go back in time, so once the latest block is at or
        past the expiry, no later block accepts it. (A chain that mines no block stays
        ``PENDING``: the amount stays counted.)

        Every answer is read at that very block, not at "latest": behind one RPC URL a load
        balancer's nodes may lag each other, and "latest" from a node a few blocks behind the
        one that said "settled" would miss the vault (its code or its ``taskUsed``) used in
        between. A node that does not have the block yet fails: the task stays counted."""
        latest = self._w3.eth.get_block("latest")
        settled = latest["timestamp"] >= task.expires_at
        block = int(latest["number"])
        if not self.has_code(task.policy_client, block):
            return None if settled else PENDING
        if self._used(task, block):
            return True
        return False if settled else PENDING

    def _used(self, task: TaskRecord, block: int) -> bool:
        """A node that fails raises: "unused" would give a paid x402 payment's amount back."""
        task_id = bytes.fromhex(task.task_id.removeprefix("0x"))
        vault = self._contract(task.policy_client)
        if vault.functions.taskUsed(task_id).call(block_identifier=block):  # type: ignore[attr-defined]
            return True
        if self.has_code(task.asset, block):
            token = self._contract(task.asset)
            try:
                owner = to_checksum_address(task.policy_client)
                answer = token.functions.authorizationState(owner, task_id)  # type: ignore[attr-defined]
                return any(answer.call(block_identifier=block))
            except (ContractLogicError, BadFunctionCallOutput):  # reverts or answers garbage
                return False  # not an EIP-3009 token: only execute could have used it
        return False
