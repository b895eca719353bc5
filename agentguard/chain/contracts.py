"""The compiled contracts that ship inside the package, and deploying them.

``contracts/build.mjs`` compiles ``contracts/*.sol`` into ``artifacts/<Name>.json`` (ABI and
bytecode); a test recompiles and compares, so the shipped bytecode is always the sources'.
Users therefore deploy without a Solidity compiler.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, cast

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.types import TxParams, TxReceipt, Wei

from agentguard._exceptions import ConfigurationError

__all__ = ["Artifact", "deploy", "load_artifact", "transact"]


@dataclass(frozen=True, slots=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes
    deployed_bytecode: bytes


@cache
def load_artifact(name: str) -> Artifact:
    """``UsdCoin``, ``AgentVault`` or ``AgentVaultFactory``."""
    folder = resources.files("agentguard.chain") / "artifacts"
    resource = folder / f"{name}.json"
    if not resource.is_file():
        known = sorted(p.name.removesuffix(".json") for p in folder.iterdir())
        raise ConfigurationError(f"no contract artifact {name!r}; shipped: {', '.join(known)}")
    raw = json.loads(resource.read_text("utf-8"))
    return Artifact(
        name=raw["contractName"],
        abi=raw["abi"],
        bytecode=bytes.fromhex(raw["bytecode"][2:]),
        deployed_bytecode=bytes.fromhex(raw["deployedBytecode"][2:]),
    )


def transact(
    w3: Web3,
    call: ContractFunction | ContractConstructor,
    *,
    sender: str | LocalAccount,
    value: int = 0,
) -> TxReceipt:
    """Sends ``call`` and waits for it to be mined.

    ``sender`` is an address the node signs for (anvil's dev accounts) or a local account
    that signs here. A call that would revert raises web3's ``ContractLogicError`` (with
    the revert data) before anything is sent.
    """
    if isinstance(sender, str):
        tx_hash = call.transact({"from": to_checksum_address(sender), "value": Wei(value)})
    else:
        params: TxParams = {
            "from": sender.address,
            "value": Wei(value),
            "nonce": w3.eth.get_transaction_count(sender.address, "pending"),
        }
        tx = cast("dict[str, Any]", call.build_transaction(params))
        signed = sender.sign_transaction(tx)
        tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    if receipt["status"] != 1:
        raise ConfigurationError(f"transaction 0x{bytes(tx_hash).hex()} was mined but reverted")
    return receipt


def deploy(w3: Web3, name: str, *args: Any, sender: str | LocalAccount) -> Contract:
    """Deploys the shipped contract ``name`` with constructor ``args``; returns it bound."""
    artifact = load_artifact(name)
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    receipt = transact(w3, factory.constructor(*args), sender=sender)
    address = receipt["contractAddress"]
    if address is None:
        raise ConfigurationError(f"deploying {name} produced no contract address")
    return w3.eth.contract(address=address, abi=artifact.abi)
