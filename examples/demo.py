"""``make demo``: the main job on embedded defaults, on this machine, in about a minute.

A local Base chain (anvil, chain id 8453), a reference authorization network (gateway + three
operators, 2-of-3), a USD Coin token and an ``AgentVault`` holding the agent's funds. The agent
then tries what agents try: a purchase within policy, one above the per-transaction cap, one
to a stranger, purchases until the daily cap, and finally a direct call to its vault with a
made-up attestation. Only what the policy allows moves money, and the chain itself enforces it.

The same vault and guard then serve a LangChain agent (``create_agent`` with the
``AgentGuardToolkit`` tools; a scripted model stands in for the LLM, so no LLM is called): it
pays the shop 2 USDC, which lands; its 8 USDC transfer is refused before anything is signed
(the per-purchase cap, mirrored locally as ``Budget("5 USDC per call")``), and the model's next
turn reads the refusal, cap in USDC, as the tool's result and answers with it. Next, a
transfer above a policy's approval threshold waits for a person (``approval_timeout=``): the
person sees the amount in USDC, the recipient, the reason and the expiry, approves it with the
approver key, and the very same transfer lands.

Then it pays for its own inference: an OpenGradient-compatible server (local test double with a
deterministic responder, settling on the same chain) asks for x402 ``upto`` payment in OPG; the
agent approves Permit2 through its guarded wallet, signs one authorized session cap, runs two
chats whose TEE proofs it verifies, and the ledger commits exactly what was charged.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError
from web3.logs import DISCARD

from agentguard import (
    AgentGuardError,
    Attestation,
    Budget,
    Guard,
    GuardedWallet,
    Ledger,
    Limits,
    Receipt,
    Signer,
    Token,
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
    with (
        Anvil() as anvil,
        ReferenceNetwork(
            operators=3, state_dir=state / "network", usage_check_rpc=anvil.url
        ) as net,
    ):
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
        # signed by the vault's owner; the gateway checks owner() onchain
        policy_id = net.register_policy_client(
            vault.address, "agent_spend", params, owner_key=OWNER.private_key
        )
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
        expected = [True, False, False, True, False]
        if results != expected or drained or shop != 9 * USDC:
            raise SystemExit("demo: an outcome differed from the policy — see above")
        usdc = Token("USDC", token.address, 6, 8453)  # this chain's USD Coin, by symbol
        agent_ok = langchain_agent(guard, w3, token, usdc, vault.address, state)
        approval_ok = approval_granted(w3, net, token, usdc, state)
        inference_ok = pay_for_inference(w3, net, state)
        report = AuditLog(state / "audit.jsonl").verify()
        print(f"\naudit    {state / 'audit.jsonl'}: {report}")
        print(f"         check it any time with: agentguard audit verify {state / 'audit.jsonl'}")
        if not (agent_ok and approval_ok and inference_ok and report.ok):
            raise SystemExit(
                "demo: the LangChain agent, the approval, the paid inference or the audit trail "
                "is not as expected — see above"
            )
        print("every outcome matched the policy.")


def langchain_agent(
    guard: Guard, w3: Web3, token: Contract, usdc: Token, vault: str, state: Path
) -> bool:
    """LangChain's agent loop with the guarded toolkit on the demo's vault and guard."""
    from langchain.agents import create_agent
    from langchain_agentguard import AgentGuardToolkit
    from langchain_agentguard.testing import ScriptedChatModel
    from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

    print("\na LangChain agent with the guarded toolkit, on the same vault and guard")
    print("(create_agent; a scripted model stands in for the LLM, so no LLM is called):")
    budget = Budget("5 USDC per call", tokens=usdc)  # the policy's per-purchase cap, locally
    print(f"  tools    wallet on the vault, local budget: {', '.join(budget.describe())}")
    wallet = guard.wallet(
        signer=Signer.from_key(AGENT.private_key),
        web3=w3,
        ledger=Ledger(state / "ledger.sqlite3"),
        limits=budget.limits(),
        vault=vault,
        audit=AuditLog(state / "audit.jsonl"),
    )
    tools = AgentGuardToolkit(guard=guard, wallet=wallet, web3=w3, tokens=usdc).get_tools()

    def transfer(amount: str) -> AIMessage:
        args = {"to": SHOP.address, "amount": amount}
        return AIMessage("", tool_calls=[{"name": "transfer", "args": args, "id": amount}])

    def answer(messages: list[BaseMessage]) -> AIMessage:  # the model reads the tool's result
        return AIMessage(f"I paid the shop 2 USDC. The 8 USDC payment: {messages[-1].content}")

    model = ScriptedChatModel(turns=[transfer("2 USDC"), transfer("8 USDC"), answer])
    agent = create_agent(model, tools, system_prompt="You pay the shop for the user.")
    before = int(token.functions.balanceOf(SHOP.address).call())
    request = HumanMessage("Pay the shop 2 USDC now, then 8 USDC more.")
    messages = agent.invoke({"messages": [request]})["messages"]
    for message in messages:
        if isinstance(message, HumanMessage):
            print(f"  user   {message.content}")
        elif isinstance(message, ToolMessage):
            mark = "✓" if message.status == "success" else "✗"
            print(f"  {mark} tool   {message.name} → the model reads: {message.content}")
        elif isinstance(message, AIMessage) and message.tool_calls:
            for call in message.tool_calls:
                print(f"  model  calls {call['name']}({call['args']})")
        else:
            print(f"  model  answers: {message.content}")
    results = [m for m in messages if isinstance(m, ToolMessage)]
    paid = int(token.functions.balanceOf(SHOP.address).call()) - before
    print(f"  the shop received {usdc.human(paid)} from the agent's tools")
    return (
        [m.status for m in results] == ["success", "error"]
        and "Cap per call: 5 USDC" in str(results[1].content)
        and str(results[1].content) in str(messages[-1].content)
        and paid == usdc.atomic("2")
    )


def approval_granted(
    w3: Web3, net: ReferenceNetwork, token: Contract, usdc: Token, state: Path
) -> bool:
    """A transfer above an approval threshold waits for a person, who approves it; it lands."""
    print("\na transfer above an approval threshold waits for a person:")
    client = "0x000000000000000000000000000000000000A99E"  # a second policy client (EOA mode)
    transact(w3, token.functions.mint(AGENT.address, usdc.atomic("20")), sender=OWNER.address)
    client_policy_id = net.register_policy_client(
        client,
        "agent_spend",
        {
            "max_per_tx": {usdc.address: str(usdc.atomic("15"))},
            "allowed_recipients": [SHOP.address],
            "approval_above": {usdc.address: str(usdc.atomic("5"))},
        },
    )
    print("  policy   agent_spend: ≤ 15 USDC per transfer, only to the shop, a person above 5 USDC")
    guard = Guard.connect(
        net.url,
        policy_client=client,
        operators=net.operator_addresses,
        api_key=net.api_key,
        policy_id=client_policy_id,
        signer=Signer.from_key(AGENT.private_key),
        web3=w3,
        ledger=Ledger(state / "ledger.sqlite3"),
        budget=Budget("20 USDC per day", tokens=usdc),
        audit=AuditLog(state / "audit.jsonl"),
    )
    wallet = guard.wallet()
    before = int(token.functions.balanceOf(SHOP.address).call())
    done: dict[str, object] = {}

    def agent() -> None:
        try:
            done["receipt"] = wallet.transfer(
                SHOP.address, usdc.atomic("8"), asset=usdc.address, approval_timeout=120
            )
        except AgentGuardError as exc:
            done["error"] = exc

    print("  agent    sends 8 USDC to the shop and waits for a person (approval_timeout=120)")
    waiting = threading.Thread(target=agent)
    waiting.start()
    try:
        # a person's view, as `agentguard approvals list` shows it (amounts from the intent)
        with contextlib.closing(net.approvals()) as approvals:
            views = approvals.list(tokens=usdc, policy_client=client)
            while not views and waiting.is_alive():
                time.sleep(0.1)
                views = approvals.list(tokens=usdc, policy_client=client)
        for view in views:
            expires = datetime.fromtimestamp(view.expires_at, UTC).strftime("%H:%M:%S UTC")
            minutes = max(0, view.expires_at - int(time.time())) // 60
            print(f"  person   sees a pending request {view.intent_hash[:18]}…")
            print(f"             amount     {view.amount}")
            print(f"             recipient  {view.recipient}")
            for reason in view.reasons:
                print(f"             reason     {reason}")
            print(f"             expires    {expires} (in {minutes} min)")
            if view.problem is not None:  # the listing does not add up: never sign it
                print(f"  person   rejects it: {view.problem}")
                net.reject(view.policy_client, view.intent_hash)
                continue
            approved = net.approve(view.policy_client, view.intent_hash)  # with the approver key
            print(f"  person   approved it, signed by {approved['approver']}")
    finally:
        waiting.join(180)
        guard.close()
    sent = done.get("receipt")
    if not isinstance(sent, Receipt):
        print(f"  ✗ the approved transfer did not land: {done.get('error')!r}")
        return False
    paid = int(token.functions.balanceOf(SHOP.address).call()) - before
    print(f"  ✓ the approved transfer landed: tx {sent.tx_hash} in block {sent.block_number}")
    print(f"      the shop received {usdc.human(paid)}")
    return paid == usdc.atomic("8")


def pay_for_inference(w3: Web3, net: ReferenceNetwork, state: Path) -> bool:
    """An agent (EOA mode) paying per inference over x402 upto, under the same guard."""
    import uvicorn
    from agentguard_opengradient import OpenGradientClient, ensure_permit2_approval
    from agentguard_opengradient.localchain import deploy_opg, install_permit2
    from agentguard_opengradient.server import ServerConfig, create_app
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from agentguard.x402 import Allowances, resolver

    opg_unit = 10**18
    print("\npaying for inference (OpenGradient-compatible local server, OPG over x402 upto):")
    install_permit2(w3, sender=OWNER.address)
    opg = deploy_opg(w3, sender=OWNER.address)
    transact(w3, opg.functions.mint(AGENT.address, 5 * opg_unit), sender=OWNER.address)
    permit2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
    client = "0x00000000000000000000000000000000000DE306"
    client_policy_id = net.register_policy_client(
        client,
        "agent_spend",
        {
            "max_per_tx": {opg.address.lower(): str(opg_unit)},
            "allowed_recipients": [SHOP.address, permit2],
        },
    )
    tee_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tee_pem = (
        tee_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    config = ServerConfig(
        rpc_url=str(w3.provider.endpoint_uri),  # type: ignore[attr-defined]
        asset=opg.address,
        pay_to=SHOP.address,
        facilitator_key=DEV_ACCOUNTS[4].private_key,
        signing_key=tee_key,
        idle_timeout=1.0,
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=0, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    guard = Guard.connect(
        net.url,
        policy_client=client,
        operators=net.operator_addresses,
        api_key=net.api_key,
        policy_id=client_policy_id,
    )
    ledger = Ledger(state / "ledger.sqlite3")
    wallet = GuardedWallet(
        signer=Signer.from_key(AGENT.private_key),
        guard=guard,
        web3=w3,
        ledger=ledger,
        limits=Limits(windows=[WindowCap(opg.address, 86400, 10 * opg_unit)]),
        audit=AuditLog(state / "audit.jsonl"),
    )
    approval = ensure_permit2_approval(wallet, opg.address, opg_unit // 10, opg_unit, web3=w3)
    allowance = approval.allowance_after / opg_unit
    print(f"  ✓ approve(Permit2) authorized and sent: allowance {allowance} OPG")
    before = opg.functions.balanceOf(SHOP.address).call()
    auth = guard.x402(
        signer=Signer.from_key(AGENT.private_key),
        ledger=ledger,
        allowances=Allowances({opg.address: opg_unit // 10}),
        audit=AuditLog(state / "audit.jsonl"),
    )
    charged = 0
    try:
        with OpenGradientClient(f"http://127.0.0.1:{port}", auth, tee_signing_key=tee_pem) as og:
            for question in ("what is an attestation?", "why a quorum of operators?"):
                result = og.chat("openai/gpt-4.1", [{"role": "user", "content": question}])
                paid = result.receipt
                amount = paid.reported_charge if paid and paid.reported_charge else 0
                charged += amount
                if result.proof is None:
                    print(f"  ✗ {question!r}: the answer carried no TEE proof")
                    return False
                print(f"  ✓ {question!r} → {result.text!r}")
                print(
                    f"      the server reports a charge of {amount / opg_unit:.6f} OPG, "
                    f"TEE proof verified (tee_id {result.proof.tee_id[:14]}…)"
                )
        auth.close()  # the session ends; its signed maximum counts until the chain settles
        deadline = time.monotonic() + 20
        while (
            opg.functions.balanceOf(SHOP.address).call() == before and time.monotonic() < deadline
        ):
            time.sleep(0.2)
    finally:
        server.should_exit = True
        thread.join(10)
    received = opg.functions.balanceOf(SHOP.address).call() - before
    print(
        f"  settled onchain: the provider received {received / opg_unit:.6f} OPG "
        f"(charged {charged / opg_unit:.6f})"
    )
    # The budget follows the chain, not the payee: commit what the settlement moved.
    committed = sum(r.amount for r in ledger.recover(resolver(w3)).committed)
    print(f"  ledger reconciled from the chain: {committed / opg_unit:.6f} OPG counted")
    return bool(received == charged == committed > 0)


if __name__ == "__main__":
    main()
