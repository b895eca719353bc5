"""The local OpenGradient stack for ``ChatOpenGradient``'s tests, from real parts only.

An anvil chain with Base's chain id (OPG, Permit2 and the x402 upto proxy at their canonical
addresses, as ``adapters/opengradient/tests`` builds it), the reference authorization network
with the bundled ``agent_spend`` policy, the one-time Permit2 approval sent through the guarded
wallet, and the OpenGradient-compatible test server (deterministic responder, settling onchain)
on loopback. Test modules import the ``og_stack`` fixture from here (``conftest.py`` in this
folder belongs to the LangChain tools' tests).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from agentguard_opengradient import OpenGradientClient, ensure_permit2_approval, tee_id
from agentguard_opengradient.localchain import deploy_opg, install_permit2
from agentguard_opengradient.server import ServerConfig, serve
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from web3 import Web3
from web3.contract import Contract

from agentguard import Guard, Ledger, Limits, Signer, Token, WindowCap
from agentguard.chain import DEV_ACCOUNTS, Anvil, transact
from agentguard.network.launcher import ReferenceNetwork
from agentguard.wallet import GuardedWallet
from agentguard.x402 import PERMIT2, Allowances, X402Auth

OWNER, AGENT, PAYEE, FACILITATOR = (DEV_ACCOUNTS[i] for i in (0, 1, 3, 4))
OPG_UNIT = 10**18
SESSION_CAP = OPG_UNIT // 10  # the server's upto session maximum (OpenGradient's 0.1 OPG)
INPUT_PRICE, OUTPUT_PRICE = 10**12, 2 * 10**12
POLICY_CLIENT = "0x00000000000000000000000000000000000A0801"
STRICT_CLIENT = "0x00000000000000000000000000000000000A0802"
MODEL = "openai/gpt-4.1"


def public_pem(key: RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def charge(prompt_words: int, reply: str) -> int:
    """The server's published price: words in * input price + words out * output price."""
    return prompt_words * INPUT_PRICE + len(reply.split()) * OUTPUT_PRICE


@dataclass
class OgStack:
    w3: Web3
    opg: Contract
    network: ReferenceNetwork
    url: str
    tee_key: RSAPrivateKey

    @property
    def tee_pem(self) -> str:
        return public_pem(self.tee_key)

    @property
    def tee_id(self) -> str:
        return tee_id(self.tee_pem)

    @property
    def token(self) -> Token:
        """The local OPG stand-in, so amounts read in human units."""
        return Token("OPG", self.opg.address, 18, 8453)

    def guard(self, policy_client: str = POLICY_CLIENT) -> Guard:
        return Guard.connect(
            self.network.url,
            policy_client=policy_client,
            operators=self.network.operator_addresses,
            api_key=self.network.api_key,
            policy_id=self.network.policy_clients[policy_client],
        )

    def auth(
        self, ledger: Ledger, *, policy_client: str = POLICY_CLIENT, limits: Limits | None = None
    ) -> X402Auth:
        return self.guard(policy_client).x402(
            signer=Signer.from_key(AGENT.private_key),
            ledger=ledger,
            allowances=Allowances({self.opg.address: SESSION_CAP}),
            limits=limits,
        )

    def client(self, auth: X402Auth, url: str | None = None, **options: Any) -> OpenGradientClient:
        """A client checking proofs against this server's enclave key (unless told otherwise)."""
        options.setdefault("tee_signing_key", self.tee_pem)
        return OpenGradientClient(url or self.url, auth, **options)

    def balance(self, who: str) -> int:
        return int(self.opg.functions.balanceOf(who).call())

    def wait_settled(self, session: str, timeout: float = 30.0) -> dict[str, Any]:
        """The server's report on an ended ``upto`` session once it settled (or failed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status: dict[str, Any] = httpx.get(f"{self.url}/x402/sessions/{session}").json()
            if status["status"] in ("settled", "failed"):
                return status
            time.sleep(0.1)
        pytest.fail(f"session {session} did not settle within {timeout} s")


@contextmanager
def rewriting_relay(upstream: str, rewrite: Callable[[dict[str, Any]], None]) -> Iterator[str]:
    """A relay on the wire between the agent and the server (a hostile proxy or gateway): it
    passes every header both ways (payments included) and rewrites each successful answer."""

    async def forward(request: Request) -> Response:
        drop = {"host", "content-length", "content-encoding", "transfer-encoding"}
        async with httpx.AsyncClient() as http:
            answer = await http.request(
                request.method,
                upstream + request.url.path,
                headers={k: v for k, v in request.headers.items() if k.lower() not in drop},
                content=await request.body(),
            )
        body = answer.content
        if answer.status_code == 200 and request.method == "POST":
            document = json.loads(body)
            rewrite(document)
            body = json.dumps(document).encode()
        headers = {k: v for k, v in answer.headers.items() if k.lower() not in drop}
        return Response(body, status_code=answer.status_code, headers=headers)

    app = Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the relay did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def og_stack() -> Iterator[OgStack]:
    anvil = Anvil().start()
    try:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        install_permit2(w3, sender=OWNER.address)
        opg = deploy_opg(w3, sender=OWNER.address)
        transact(w3, opg.functions.mint(AGENT.address, 5 * OPG_UNIT), sender=OWNER.address)
        with ReferenceNetwork(
            operators=3, threshold_percentage=66, timeout=5.0, startup_timeout=120.0
        ) as network:
            caps = {"max_per_tx": {opg.address.lower(): str(2 * SESSION_CAP)}}
            network.register_policy_client(
                POLICY_CLIENT,
                "agent_spend",
                {**caps, "allowed_recipients": [PAYEE.address, PERMIT2]},
            )
            # Same caps, but the inference provider is not an allowed recipient.
            network.register_policy_client(
                STRICT_CLIENT, "agent_spend", {**caps, "allowed_recipients": [PERMIT2]}
            )
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            stack = OgStack(w3, opg, network, "", key)
            wallet = GuardedWallet(
                signer=Signer.from_key(AGENT.private_key),
                guard=stack.guard(),
                web3=w3,
                ledger=Ledger(),
                limits=Limits(windows=[WindowCap(opg.address, 86400, OPG_UNIT)]),
            )
            ensure_permit2_approval(wallet, opg.address, SESSION_CAP, 2 * SESSION_CAP, web3=w3)
            config = ServerConfig(
                rpc_url=anvil.url,
                asset=opg.address,
                pay_to=PAYEE.address,
                facilitator_key=FACILITATOR.private_key,
                signing_key=key,
                input_price=INPUT_PRICE,
                output_price=OUTPUT_PRICE,
                idle_timeout=1.0,
            )
            with serve(config) as url:
                stack.url = url
                yield stack
    finally:
        anvil.stop()
