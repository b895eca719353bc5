"""``make demo``: the main job on embedded defaults, on this machine, in about a minute.

A local Base chain (anvil, chain id 8453), a reference authorization network (gateway + three
operators, 2-of-3), a USD Coin token and an ``AgentVault`` holding the agent's funds. The agent
then tries what agents try: a purchase within policy, one above the per-transaction cap, one
to a stranger, purchases until the daily cap, and finally a direct call to its vault with a
made-up attestation. Only what the policy allows moves money, and the chain itself enforces it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from web3 import Web3
from web3.exceptions import ContractCustomError
from web3.logs import DISCARD

from agentguard import (
    AgentGuardError,
    Attestation,
    Guard,
    GuardedWallet,
    Ledger,
    Limits,
    Signer,
    TransactionIntent,
    WindowCap,
)
from agentguard.audit import AuditLog
from agentguard.chain import DEV_ACCOUNTS, Anvil, deploy, load_artifact, transact
from agentguard.chain.vault import execute_calldata
from agentguard.network.launcher import ReferenceNetwork

OWNER, AGENT, SHOP, STRANGER = DEV_ACCOUNTS[0], DEV_ACCOUNTS[1], DEV_ACCOUNTS[3], DEV_ACCOUNTS[5]
USDC = 10**6


def _usd(amount: int) -> str:
    return f"{amount / USDC:,.2f} USDC"


def _step(title: str, action: Callable[[], str]) -> bool:
    started = time.perf_counter()
    try:
        outcome = action()
    except AgentGuardError as exc:
        print(f"  ✗ {title}\n      refused: {type(exc).__name__}: {exc.message}")
        return False
    print(f"  ✓ {title}\n      {outcome}  ({(time.perf_counter() - started) * 1000:.0f} ms)")
    return True


def main() -> None:
    print(__doc__)
    state = Path(tempfile.mkdtemp(prefix="agentguard-demo-"))
    with Anvil() as anvil, ReferenceNetwork(operators=3, state_dir=state / "network") as net:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        print(f"chain    anvil at {anvil.url}, chain id {w3.eth.chain_id}")
        print(f"network  gateway at {net.url}, operators {', '.join(net.operator_addresses)}")

        token = deploy(w3, "UsdCoin", sender=OWNER.address)
        factory = deploy(w3, "AgentVaultFactory", sender=OWNER.address)
        receipt = transact(
            w3,
            factory.functions.createVault(
                OWNER.address, AGENT.address, net.operator_addresses, 2, b"\x01" * 32, b"demo" * 8
            ),
            sender=OWNER.address,
        )
        (created,) = factory.events.VaultCreated().process_receipt(receipt, errors=DISCARD)
        vault = w3.eth.contract(
            address=created["args"]["vault"], abi=load_artifact("AgentVault").abi
        )
        params = {
            "max_per_tx": {token.address.lower(): str(5 * USDC)},
            "allowed_recipients": [SHOP.address],
            "window_caps": [
                {
                    "asset": token.address.lower(),
                    "window_seconds": 86400,
                    "max_amount": str(12 * USDC),
                }
            ],
        }
        policy_id = net.register_policy_client(vault.address, "agent_spend", params)
        transact(
            w3, vault.functions.setPolicyId(bytes.fromhex(policy_id[2:])), sender=OWNER.address
        )
        transact(w3, token.functions.mint(vault.address, 100 * USDC), sender=OWNER.address)
        held = token.functions.balanceOf(vault.address).call()
        print(f"vault    {vault.address} holds {_usd(held)}")
        print("policy   agent_spend: ≤ 5 USDC per purchase, only to the shop, ≤ 12 USDC per 24 h\n")

        guard = Guard.connect(
            net.url,
            policy_client=vault.address,
            operators=net.operator_addresses,
            api_key=net.api_key,
            policy_id=policy_id,
        )
        wallet = GuardedWallet(
            signer=Signer.from_key(AGENT.private_key),
            guard=guard,
            web3=w3,
            ledger=Ledger(state / "ledger.sqlite3"),
            limits=Limits(windows=[WindowCap(token.address, 86400, 50 * USDC)]),
            vault=vault.address,
            audit=AuditLog(state / "audit.jsonl"),
        )

        def pay(to: str, amount: int) -> Callable[[], str]:
            def run() -> str:
                r = wallet.transfer(to, amount, asset=token.address)
                return f"tx {r.tx_hash} in block {r.block_number}, attested task {r.task_id[:18]}…"

            return run

        results = [
            _step("buy from the shop for 4 USDC", pay(SHOP.address, 4 * USDC)),
            _step(
                "buy from the shop for 9 USDC (over the per-purchase cap)",
                pay(SHOP.address, 9 * USDC),
            ),
            _step("send 1 USDC to a stranger", pay(STRANGER.address, USDC)),
            _step("buy from the shop for 5 USDC", pay(SHOP.address, 5 * USDC)),
            _step(
                "buy from the shop for 4 USDC (past the 12 USDC daily cap)",
                pay(SHOP.address, 4 * USDC),
            ),
        ]

        print("\nthe agent key tries to drain its vault directly, with a made-up attestation:")
        drain = TransactionIntent.erc20_transfer(
            sender=vault.address,
            token=token.address,
            recipient=AGENT.address,
            amount=90 * USDC,
            chain_id=8453,
        )
        forged = Attestation(
            decision="allow",
            task_id=b"\x66" * 32,
            policy_id=bytes.fromhex(policy_id[2:]),
            policy_client=vault.address,
            intent_hash=drain.intent_hash,
            expires_at=int(time.time()) + 60,
        )
        try:
            w3.eth.call(
                {
                    "from": AGENT.address,
                    "to": vault.address,
                    "data": execute_calldata(drain, forged),
                }
            )
            print("  ✗ the vault executed it — this must never happen")
            drained = True
        except ContractCustomError as exc:
            from agentguard.wallet._revert import decode_revert, revert_data

            print(f"  ✓ the vault reverted: {decode_revert(revert_data(exc))}")
            drained = False

        shop = token.functions.balanceOf(SHOP.address).call()
        left = token.functions.balanceOf(vault.address).call()
        print(f"\nshop received {_usd(shop)}; the vault holds {_usd(left)}")
        report = AuditLog(state / "audit.jsonl").verify()
        print(f"audit    {state / 'audit.jsonl'}: {report}")
        print(f"         check it any time with: agentguard audit verify {state / 'audit.jsonl'}")
        expected = [True, False, False, True, False]
        if results != expected or drained or shop != 9 * USDC or not report.ok:
            raise SystemExit("demo: an outcome differed from the policy — see above")
        print("every outcome matched the policy.")


if __name__ == "__main__":
    main()
