"""The setting of the red-team value tests: a funded ``AgentVault`` on anvil (chain id 8453)
whose policy lives on the reference network, with the agent's guarded wallet in front of it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD
from web3.types import Wei

from agentguard import Guard, Signer
from agentguard.chain import DEV_ACCOUNTS, Anvil, deploy, load_artifact, transact
from agentguard.ledger import Ledger, Limits
from agentguard.network.launcher import ReferenceNetwork
from agentguard.wallet import GuardedWallet

OWNER = DEV_ACCOUNTS[0]
AGENT = DEV_ACCOUNTS[1]
THIEF = DEV_ACCOUNTS[6].address
PAYEE = DEV_ACCOUNTS[3].address
NATIVE = "0x0000000000000000000000000000000000000000"


@dataclass
class VaultBench:
    w3: Web3
    network: ReferenceNetwork
    usdc: Contract
    vault: Contract
    guard: Guard = field(init=False)
    wallet: GuardedWallet = field(init=False)

    def set_policy(self, params: dict[str, Any]) -> None:
        """Register ``agent_spend`` with ``params`` for the vault (signed by its owner), pin the
        vault and a fresh guard and wallet to it."""
        policy_id = self.network.register_policy_client(
            self.vault.address, "agent_spend", params, owner_key=OWNER.private_key
        )
        transact(
            self.w3,
            self.vault.functions.setPolicyId(bytes.fromhex(policy_id[2:])),
            sender=OWNER.address,
        )
        self.guard = Guard.connect(
            self.network.url,
            policy_client=self.vault.address,
            operators=self.network.operator_addresses,
            api_key=self.network.api_key,
            policy_id=policy_id,
        )
        self.wallet = GuardedWallet(
            signer=Signer.from_key(AGENT.private_key),
            guard=self.guard,
            web3=self.w3,
            ledger=Ledger(),
            limits=Limits(),  # no local caps: the network's policy is what is under attack
            vault=self.vault.address,
        )

    def usdc_of(self, who: str) -> int:
        return int(self.usdc.functions.balanceOf(who).call())

    def eth_of(self, who: str) -> int:
        return int(self.w3.eth.get_balance(Web3.to_checksum_address(who)))


@contextmanager
def vault_bench(
    params: Callable[[str], dict[str, Any]], *, usdc: int = 100_000_000, eth: int = 0
) -> Iterator[VaultBench]:
    """A vault holding ``usdc`` (6 decimals) and ``eth`` wei under ``agent_spend``, with the
    params ``params(usdc_address_lowercase)``."""
    with Anvil() as anvil, ReferenceNetwork(operators=3, threshold_percentage=66) as network:
        assert anvil.chain_id == 8453
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        token = deploy(w3, "UsdCoin", sender=OWNER.address)
        factory = deploy(w3, "AgentVaultFactory", sender=OWNER.address)
        receipt = transact(
            w3,
            factory.functions.createVault(
                OWNER.address,
                AGENT.address,
                network.operator_addresses,
                2,
                b"\x01" * 32,
                b"\x0b" * 32,
            ),
            sender=OWNER.address,
        )
        (event,) = factory.events.VaultCreated().process_receipt(receipt, errors=DISCARD)
        vault = w3.eth.contract(address=event["args"]["vault"], abi=load_artifact("AgentVault").abi)
        transact(w3, token.functions.mint(vault.address, usdc), sender=OWNER.address)
        if eth:
            w3.eth.wait_for_transaction_receipt(
                w3.eth.send_transaction(
                    {"from": OWNER.address, "to": vault.address, "value": Wei(eth)}
                )
            )
        bench = VaultBench(w3, network, token, vault)
        bench.set_policy(params(token.address.lower()))
        yield bench
