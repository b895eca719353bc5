"""A ``UsageCheck`` that asks the chain whether an attestation was used.

For a policy client that is an ``AgentVault``, usage is a fact onchain: ``execute`` marks
``taskUsed[taskId]``, and an x402 payment from the vault spends the EIP-3009 nonce equal to the
task id on the token (``authorizationState(vault, taskId)``). So the gateway need not take a
host's word that it released an attestation unused. For a policy client without code (EOA mode)
the chain cannot tell, and the check answers ``None`` (the host's report stands: in EOA mode
the host holds the key and could bypass the network anyway).

Enable it with ``--usage-check agentguard.network.usage:from_environment`` and the node's URL
in ``AGENTGUARD_USAGE_CHECK_RPC`` (``ReferenceNetwork(usage_check_rpc=...)`` does both).
"""

from __future__ import annotations

import os
from functools import lru_cache

from eth_utils.address import to_checksum_address
from web3 import Web3

from agentguard._exceptions import ConfigurationError
from agentguard.network.state import TaskRecord

__all__ = ["ENV", "ChainUsageCheck", "from_environment"]

ENV = "AGENTGUARD_USAGE_CHECK_RPC"
_TASK_USED = [
    {
        "name": "taskUsed",
        "type": "function",
        "stateMutability": "view",
        "inputs": [{"name": "taskId", "type": "bytes32"}],
        "outputs": [{"name": "", "type": "bool"}],
    }
]
_AUTHORIZATION_STATE = [
    {
        "name": "authorizationState",
        "type": "function",
        "stateMutability": "view",
        "inputs": [
            {"name": "authorizer", "type": "address"},
            {"name": "nonce", "type": "bytes32"},
        ],
        "outputs": [{"name": "", "type": "bool"}],
    }
]


class ChainUsageCheck:
    def __init__(self, rpc_url: str) -> None:
        self._w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 5}))
        self._has_code = lru_cache(maxsize=4096)(self._code)

    def _code(self, address: str) -> bool:
        return len(self._w3.eth.get_code(to_checksum_address(address))) > 0

    def was_used(self, task: TaskRecord) -> bool | None:
        if not self._has_code(task.policy_client):
            return None
        vault = to_checksum_address(task.policy_client)
        task_id = bytes.fromhex(task.task_id.removeprefix("0x"))
        contract = self._w3.eth.contract(address=vault, abi=_TASK_USED)
        if contract.functions.taskUsed(task_id).call():
            return True
        if self._has_code(task.asset):
            token = self._w3.eth.contract(
                address=to_checksum_address(task.asset), abi=_AUTHORIZATION_STATE
            )
            try:
                return bool(token.functions.authorizationState(vault, task_id).call())
            except Exception:  # not an EIP-3009 token: only execute could have used it
                return False
        return False


def from_environment() -> ChainUsageCheck:
    url = os.environ.get(ENV)
    if not url:
        raise ConfigurationError(f"set {ENV} to the node URL the usage check reads")
    return ChainUsageCheck(url)
