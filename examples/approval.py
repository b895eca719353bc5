"""A human approves a transfer above the policy's threshold; the waiting agent then sends it.

A local Base chain (anvil, chain id 8453) with a USD Coin token, and a reference authorization
network whose policy (``agent_spend``) lets the agent send up to 5 USDC on its own and asks a
person above that. The agent asks to send 10 USDC and waits (``approval_timeout=``); the
request is parked at the gateway; a person lists it (amount in USDC, recipient, reason,
expiry) and approves it, signing with the approver key (here the network's owner key, outside
the gateway); the agent's same intent is authorized again and lands.

    python examples/approval.py
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from web3 import Web3

from agentguard import Guard, Ledger, Limits, Signer, Token, WindowCap
from agentguard._approvals_cli import approve, format_view, list_approvals
from agentguard.chain import DEV_ACCOUNTS, Anvil, deploy, transact
from agentguard.network.launcher import ReferenceNetwork
from agentguard.wallet import GuardedWallet, Receipt

OWNER, AGENT, SHOP = DEV_ACCOUNTS[0], DEV_ACCOUNTS[1], DEV_ACCOUNTS[3]
POLICY_CLIENT = "0x000000000000000000000000000000000000A99E"
USDC = 10**6


def main() -> None:
    print(__doc__)
    state = Path(tempfile.mkdtemp(prefix="agentguard-approval-"))
    with Anvil() as anvil, ReferenceNetwork(operators=3, state_dir=state / "network") as net:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        token = deploy(w3, "UsdCoin", sender=OWNER.address)
        transact(w3, token.functions.mint(AGENT.address, 100 * USDC), sender=OWNER.address)
        usdc = Token("USDC", token.address, 6, 8453)
        params = {
            "max_per_tx": {token.address.lower(): str(50 * USDC)},
            "allowed_recipients": [SHOP.address],
            "approval_above": {token.address.lower(): str(5 * USDC)},
        }
        policy_id = net.register_policy_client(POLICY_CLIENT, "agent_spend", params)
        guard = Guard.connect(
            net.url,
            policy_client=POLICY_CLIENT,
            operators=net.operator_addresses,
            api_key=net.api_key,
            policy_id=policy_id,
        )
        wallet = GuardedWallet(
            signer=Signer.from_key(AGENT.private_key),
            guard=guard,
            web3=w3,
            ledger=Ledger(),
            limits=Limits(windows=[WindowCap(token.address, 86400, 100 * USDC)]),
        )
        done: dict[str, Receipt | BaseException] = {}

        def agent() -> None:
            try:
                done["receipt"] = wallet.transfer(
                    SHOP.address, 10 * USDC, asset=token.address, approval_timeout=120
                )
            except BaseException as exc:  # shown below
                done["error"] = exc

        print("agent    asks to send 10 USDC to the shop and waits for a person")
        waiting = threading.Thread(target=agent)
        waiting.start()

        views = []
        while not views and waiting.is_alive():  # what `agentguard approvals list` shows
            views = list_approvals(net.url, net.admin_key, tokens=usdc)
            time.sleep(0.2)
        for view in views:
            print("person   sees\n" + format_view(view))
            result = approve(  # what `agentguard approvals approve` does
                net.url,
                net.admin_key,
                view.policy_client,
                view.intent_hash,
                approver_key_file=str(net.approver_key_file),
            )
            print(f"person   approved it, signed by {result['approver']}")

        waiting.join(180)
        outcome = done.get("receipt") or done.get("error")
        if not isinstance(outcome, Receipt):
            raise SystemExit(f"the transfer did not land: {outcome!r}")
        balance = token.functions.balanceOf(SHOP.address).call()
        print(f"agent    transfer landed in block {outcome.block_number}: {outcome.tx_hash}")
        print(f"shop     holds {usdc.human(balance)}")
        guard.close()


if __name__ == "__main__":
    main()
