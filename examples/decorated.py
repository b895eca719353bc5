"""Decorated agent functions, both forms (``python examples/decorated.py``).

A local Base chain (anvil) and a reference authorization network (gateway + 3 operators) run
in-process. The policy lets the agent send emails and pay the shop up to 5 USDC at a time:

* ``send_email`` is an offchain tool: the call itself is the action (``name(string)`` with the
  arguments as JSON is what the operators see); an unlisted tool is refused before it runs;
* ``pay`` returns a transaction: the guard authorizes, signs and sends it through the wallet.

Refusals come back as ``explain(exc)``: text an LLM can read and act on.
"""

from __future__ import annotations

from web3 import Web3

from agentguard import (
    AgentGuardError,
    Guard,
    Ledger,
    Limits,
    RateCap,
    Signer,
    Token,
    TransactionIntent,
    explain,
)
from agentguard.chain import DEV_ACCOUNTS, Anvil, deploy, transact
from agentguard.network.launcher import ReferenceNetwork

OWNER, AGENT, SHOP = DEV_ACCOUNTS[0], DEV_ACCOUNTS[1], DEV_ACCOUNTS[3]
CLIENT = "0x00000000000000000000000000000000000DEC0D"


def main() -> None:
    with Anvil() as anvil, ReferenceNetwork(operators=3) as net:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        contract = deploy(w3, "UsdCoin", sender=OWNER.address)
        usdc = Token("USDC", contract.address, 6, 8453)  # the local stand-in for USDC
        mint = contract.functions.mint(AGENT.address, usdc.atomic("100"))
        transact(w3, mint, sender=OWNER.address)
        params = {
            "allowed_functions": ["transfer(address,uint256)"],
            # offchain tools, by name: they move nothing, so the recipient allowlist ignores them
            "offchain_calls": ["send_email"],
            "allowed_recipients": [SHOP.address],
            "max_per_tx": {usdc.address: str(usdc.atomic("5"))},
        }
        policy_id = net.register_policy_client(CLIENT, "agent_spend", params)
        guard = Guard.connect(
            net.url, policy_client=CLIENT, operators=net.operator_addresses,
            api_key=net.api_key, policy_id=policy_id,
        )  # fmt: skip
        ledger, limits = Ledger(), Limits(rate=[RateCap(60, 10)])  # the local budget: 10 a minute
        wallet = guard.wallet(
            signer=Signer.from_key(AGENT.private_key), web3=w3, ledger=ledger, limits=limits
        )

        @guard.action(agent=AGENT.address, ledger=ledger, limits=limits)
        def send_email(to: str, subject: str) -> str:
            return f"sent {subject!r} to {to}"

        @guard.action(agent=AGENT.address, ledger=ledger, limits=limits)
        def delete_account(user: str) -> str:
            return f"deleted {user}"

        @guard.action(wallet=wallet)
        def pay(amount: str) -> TransactionIntent:
            return TransactionIntent.erc20_transfer(
                sender=AGENT.address, token=usdc.address, recipient=SHOP.address,
                amount=usdc.atomic(amount), chain_id=8453,
            )  # fmt: skip

        steps = [
            ("send_email", lambda: send_email("ann@example.com", subject="hello")),
            ("delete_account", lambda: delete_account("ann")),
            ("pay 2 USDC", lambda: f"paid, tx {pay('2').tx_hash}"),
            ("pay 50 USDC", lambda: f"paid, tx {pay('50').tx_hash}"),
        ]
        for title, step in steps:
            try:
                print(f"✓ {title}: {step()}")
            except AgentGuardError as exc:
                print(f"✗ {title}: {explain(exc)}")


if __name__ == "__main__":
    main()
