"""A LangChain chat model that pays for each answer through the guard: ``ChatOpenGradient``.

Everything runs on this machine: a local Base chain (anvil, chain id 8453) with an OPG
stand-in, Permit2 and the x402 upto proxy; a reference authorization network (gateway + three
operators); and an OpenGradient-compatible inference server. **That server is a test double
with a deterministic responder** ("You said: <your message>"), but its payments (x402 upto
in OPG, settled onchain) and its enclave proofs (RSA-PSS over the request and the answer) are
real. The agent approves Permit2 once through its guarded wallet, chats through LangChain (one
authorized session maximum pays for every answer), is refused a chat its budget cannot cover,
and the ledger finally counts exactly what the chain settled.

    uv run --no-sync python examples/chat_opengradient.py
"""

from __future__ import annotations

import time

from agentguard_opengradient import OpenGradientClient, ensure_permit2_approval
from agentguard_opengradient.localchain import deploy_opg, install_permit2
from agentguard_opengradient.server import ServerConfig, serve
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from langchain_agentguard import ChatOpenGradient
from langchain_core.messages import HumanMessage, SystemMessage
from web3 import Web3

from agentguard import (
    AgentGuardError,
    Guard,
    GuardedWallet,
    Ledger,
    Limits,
    Signer,
    Token,
    WindowCap,
    format_amount,
)
from agentguard.chain import DEV_ACCOUNTS, Anvil, transact
from agentguard.network.launcher import ReferenceNetwork
from agentguard.x402 import PERMIT2, Allowances, X402Auth, resolver

OWNER, AGENT, PROVIDER, FACILITATOR = (DEV_ACCOUNTS[i] for i in (0, 1, 3, 4))
POLICY_CLIENT = "0x00000000000000000000000000000000000C4A70"
OPG_UNIT = 10**18
SESSION_CAP = OPG_UNIT // 10  # OpenGradient's upto session maximum: 0.1 OPG


def main() -> None:
    print(__doc__)
    with Anvil() as anvil, ReferenceNetwork(operators=3) as net:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        install_permit2(w3, sender=OWNER.address)
        opg = deploy_opg(w3, sender=OWNER.address)
        transact(w3, opg.functions.mint(AGENT.address, 5 * OPG_UNIT), sender=OWNER.address)
        token = Token("OPG", opg.address, 18, 8453)  # the local OPG, for human amounts
        policy_id = net.register_policy_client(
            POLICY_CLIENT,
            "agent_spend",
            {
                "max_per_tx": {opg.address.lower(): str(OPG_UNIT)},
                "allowed_recipients": [PROVIDER.address, PERMIT2],
            },
        )
        guard = Guard.connect(
            net.url,
            policy_client=POLICY_CLIENT,
            operators=net.operator_addresses,
            api_key=net.api_key,
            policy_id=policy_id,
        )
        signer = Signer.from_key(AGENT.private_key)
        ledger = Ledger()
        wallet = GuardedWallet(
            signer=signer,
            guard=guard,
            web3=w3,
            ledger=ledger,
            limits=Limits(windows=[WindowCap(opg.address, 86400, 10 * OPG_UNIT)]),
        )
        ensure_permit2_approval(wallet, opg.address, SESSION_CAP, OPG_UNIT, web3=w3)
        print("✓ approve(Permit2, 1 OPG) authorized by the network and sent, once")

        tee_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        tee_pem = tee_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        config = ServerConfig(
            rpc_url=anvil.url,
            asset=opg.address,
            pay_to=PROVIDER.address,
            facilitator_key=FACILITATOR.private_key,
            signing_key=tee_key,
            idle_timeout=1.0,
        )
        with serve(config) as url:
            auth = guard.x402(
                signer=signer, ledger=ledger, allowances=Allowances({opg.address: SESSION_CAP})
            )
            charged = chat(url, auth, tee_pem, ledger, token)
            refused = over_budget(url, guard, signer, tee_pem, opg.address)
            auth.close()  # the session ends; the server settles it onchain
            committed = reconcile(ledger, w3)

        def human(atomic: int) -> str:
            return format_amount(atomic, opg.address, 8453, token)

        print(f"settled onchain: the ledger counts {human(committed)} (charged {human(charged)})")
        if not (refused and committed == charged > 0):
            raise SystemExit("chat_opengradient: the payments are not as expected")
        print("every answer was paid under attestation and proven by the enclave.")


def reconcile(ledger: Ledger, w3: Web3, timeout: float = 30.0) -> int:
    """What the chain shows was settled, committed in the ledger (the session's unused
    maximum is given back); until the settlement lands the whole maximum stays counted."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        committed = sum(r.amount for r in ledger.recover(resolver(w3)).committed)
        if committed:
            return committed
        time.sleep(0.2)
    return 0


def chat(url: str, auth: X402Auth, tee_pem: bytes, ledger: Ledger, token: Token) -> int:
    """Two questions through LangChain; returns what they cost (atomic OPG)."""
    charged = 0
    with OpenGradientClient(url, auth, tee_signing_key=tee_pem) as og:
        model = ChatOpenGradient(client=og, model="openai/gpt-4.1", ledger=ledger, tokens=token)
        for question in ("what is an attestation?", "why a quorum of operators?"):
            answer = model.invoke([SystemMessage("answer briefly"), HumanMessage(question)])
            paid, proof = answer.response_metadata["payment"], answer.response_metadata["tee_proof"]
            usage = answer.usage_metadata
            if usage is None:
                raise SystemExit("chat_opengradient: the answer reported no token usage")
            charged += paid["reported_charge_atomic"] or 0  # checked against the chain below
            print(f"✓ {question!r} → {answer.content!r}")
            print(
                f"    {usage['input_tokens']} tokens in, {usage['output_tokens']} out; "
                f"paid up to {paid['authorized']} in upto session {paid['session'][:8]}… (the "
                f"server reports a charge of {paid['reported_charge']}; "
                f"attestation task {paid['task_id'][:10]}…); "
                f"TEE proof verified={proof['verified']} tee_id={proof['tee_id'][:12]}…"
            )
    return charged


def over_budget(url: str, guard: Guard, signer: Signer, tee_pem: bytes, opg: str) -> bool:
    """A second agent whose hourly budget is below the session maximum: nothing is signed."""
    with Ledger() as small:
        tight = Limits(windows=[WindowCap(opg, 3600, SESSION_CAP // 2)])
        auth = guard.x402(
            signer=signer, ledger=small, allowances=Allowances({opg: SESSION_CAP}), limits=tight
        )
        with OpenGradientClient(url, auth, tee_signing_key=tee_pem) as og:
            try:
                ChatOpenGradient(client=og).invoke("spend it all")
            except AgentGuardError as exc:
                print(f"✓ a chat over a 0.05 OPG/hour budget refused: {type(exc).__name__}")
                print(f"    {exc.message}")
                return True
    print("✗ a chat over budget was paid")
    return False


if __name__ == "__main__":
    main()
