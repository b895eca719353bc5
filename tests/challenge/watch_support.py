"""Real parts for the watch, history and guardian tests: anvil (chain id 8453) with USDC and
the vault factory, a reference network whose gateway can be made to lie about history, and
vaults registered with that network.

Run as ``python -m tests.challenge.watch_support --config F [--lie zero]``, it is the
reference gateway with ``data.wasm`` built from totals it under-reports (``zero``: it hands
the operators empty windows, so no cumulative cap ever binds).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from agentguard import Attestation, TransactionIntent
from agentguard.chain import DEV_ACCOUNTS, Anvil, deploy, load_artifact, transact
from agentguard.chain.owner import grant_guardian
from agentguard.chain.vault import execute_calldata
from agentguard.network.launcher import ReferenceNetwork
from tests.network.conftest import NETCHECK, RPC, UNIT, params

OWNER, AGENT, GUARDIAN = DEV_ACCOUNTS[0], DEV_ACCOUNTS[1], DEV_ACCOUNTS[5]
SHOP = "0x3333333333333333333333333333333333333333"
LIE_ENV = "AGENTGUARD_TEST_LIE"


class LyingNetwork(ReferenceNetwork):
    """The reference network, its gateway started from this module with ``lie`` set: the
    operators are the real ones and sign honestly on whatever totals they are handed."""

    def __init__(self, *args: Any, lie: str = "zero", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lie = lie

    def _spawn(self, name: str, args: list[str]) -> Any:
        if name == "gateway":
            os.environ[LIE_ENV] = self.lie  # inherited by the child only for this spawn
            try:
                return super()._spawn(name, ["tests.challenge.watch_support", *args[1:]])
            finally:
                del os.environ[LIE_ENV]
        return super()._spawn(name, args)


@dataclass
class Chain:
    anvil: Anvil
    w3: Web3
    token: Contract
    factory: Contract


@contextmanager
def chain() -> Iterator[Chain]:
    with Anvil() as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        token = deploy(w3, "UsdCoin", sender=OWNER.address)
        factory = deploy(w3, "AgentVaultFactory", sender=OWNER.address)
        yield Chain(anvil, w3, token, factory)


def vault_params(token: str, *, per_tx: int = 5, daily: int = 12) -> dict[str, Any]:
    config = params(max_per_tx=per_tx * UNIT, daily_cap=daily * UNIT)
    config["window_caps"][0]["asset"] = token
    return config


def create_vault(
    c: Chain,
    net: ReferenceNetwork,
    salt: bytes,
    *,
    expire_after: int = 300,
    guardian: bool = True,
    funds: int = 100 * UNIT,
) -> Contract:
    """A vault for AGENT with a 5 USDC per-transfer and 12 USDC daily cap, registered with
    ``net`` by its owner, funded, and (``guardian``) with GUARDIAN granted the pause."""
    receipt = transact(
        c.w3,
        c.factory.functions.createVault(
            OWNER.address, AGENT.address, net.operator_addresses, 2, b"\x01" * 32, salt
        ),
        sender=OWNER.address,
    )
    (event,) = c.factory.events.VaultCreated().process_receipt(receipt, errors=DISCARD)
    vault = c.w3.eth.contract(address=event["args"]["vault"], abi=load_artifact("AgentVault").abi)
    pid = net.register_policy_client(
        vault.address,
        NETCHECK,
        vault_params(c.token.address),
        expire_after=expire_after,
        owner_key=OWNER.private_key,
    )
    transact(c.w3, vault.functions.setPolicyId(bytes.fromhex(pid[2:])), sender=OWNER.address)
    transact(c.w3, c.token.functions.mint(vault.address, funds), sender=OWNER.address)
    if guardian:
        grant_guardian(c.w3, vault, GUARDIAN.address, sender=OWNER.address)
    return vault


def spend(c: Chain, rpc: RPC, vault: Contract, amount: int = 5 * UNIT) -> dict[str, Any]:
    """The agent asks for a transfer from the vault and, if allowed, executes it onchain."""
    intent = TransactionIntent.erc20_transfer(
        sender=vault.address, token=c.token.address, recipient=SHOP, amount=amount, chain_id=8453
    )
    result: dict[str, Any] = rpc.create(vault.address, intent)
    if result["status"] == "success" and result["attestation"]["decision"] == "allow":
        execute(c, intent, result["attestation"], vault)
    return result


def execute(c: Chain, intent: TransactionIntent, attestation: Mapping[str, Any], vault: Any) -> Any:
    att = Attestation.from_json(attestation)
    tx = c.w3.eth.send_transaction(
        {
            "from": AGENT.address,
            "to": vault.address,
            "data": "0x" + execute_calldata(intent, att).hex(),
        }
    )
    return c.w3.eth.wait_for_transaction_receipt(tx)


def decisions(results: list[dict[str, Any]]) -> list[str]:
    return [str(r["attestation"]["decision"]) for r in results]


def _lying_main() -> int:
    """The reference gateway, with ``data.wasm`` built from under-reported totals."""
    from agentguard.network.gateway import _app, _core
    from agentguard.network.state import WindowTotals

    real = _core.wasm_data
    lie = os.environ.get(LIE_ENV, "zero")

    def wasm_data(task: Any, history: Mapping[int, Any], *args: Any, **kwargs: Any) -> Any:
        if lie == "zero":
            history = {w: WindowTotals(count=0, spent={}) for w in history}
        return real(task, history, *args, **kwargs)

    _core.wasm_data = wasm_data  # type: ignore[assignment]
    return _app.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(_lying_main())
