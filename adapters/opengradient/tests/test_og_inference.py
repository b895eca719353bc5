"""OpenGradient inference end to end: a real anvil chain (OPG, Permit2, upto proxy), the real
reference authorization network with the bundled ``agent_spend`` policy, and the local
OpenGradient-compatible server as a separate process on loopback, settling onchain."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentguard_opengradient import (
    OpenGradientClient,
    Permit2Approval,
    ensure_permit2_approval,
    tee_id,
    verify_proof,
)
from agentguard_opengradient._proof import canonical_completion_request
from conftest import AGENT, AGENT_OPG, FACILITATOR, OPG, PAYEE, Chain, start_chain
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from agentguard import ConfigurationError, Guard, PolicyDenied, ProofError, Signer
from agentguard.ledger import Ledger, Limits, WindowCap
from agentguard.network.launcher import ReferenceNetwork
from agentguard.testing import SigningSpy
from agentguard.wallet import GuardedWallet
from agentguard.x402 import PERMIT2, Allowances, X402Auth, resolver

SRC = Path(__file__).resolve().parents[1] / "src"
POLICY_CLIENT = "0x00000000000000000000000000000000000A0601"
STRICT_CLIENT = "0x00000000000000000000000000000000000A0602"
SESSION_CAP = OPG // 10
POLICY_CAP = 2 * SESSION_CAP
APPROVAL = POLICY_CAP
INPUT_PRICE, OUTPUT_PRICE = 10**12, 2 * 10**12
IDLE = 1.5
MODEL = "openai/gpt-4.1"


def pem(key: RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@dataclass
class Server:
    url: str
    key: RSAPrivateKey
    sessions: list[str] = field(default_factory=list)

    def session(self, session_id: str) -> httpx.Response:
        return httpx.get(f"{self.url}/x402/sessions/{session_id}", timeout=5)

    def wait_settled(self, session_id: str, timeout: float = 20.0) -> httpx.Response:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self.session(session_id)
            if answer.json()["status"] in ("settled", "failed"):
                return answer
            time.sleep(0.1)
        pytest.fail(f"session {session_id} did not settle within {timeout} s")


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    anvil, chain = start_chain()
    try:
        yield chain
    finally:
        anvil.stop()


@pytest.fixture(scope="module")
def network() -> Iterator[ReferenceNetwork]:
    with ReferenceNetwork(
        operators=3, threshold_percentage=66, timeout=5.0, startup_timeout=120.0
    ) as net:
        yield net


@pytest.fixture(scope="module")
def policies(network: ReferenceNetwork, chain: Chain) -> None:
    caps = {"max_per_tx": {chain.opg.address.lower(): str(POLICY_CAP)}}
    network.register_policy_client(
        POLICY_CLIENT, "agent_spend", {**caps, "allowed_recipients": [PAYEE.address, PERMIT2]}
    )
    # Same caps, but the inference provider is not an allowed recipient.
    network.register_policy_client(
        STRICT_CLIENT, "agent_spend", {**caps, "allowed_recipients": [PERMIT2]}
    )


@pytest.fixture(scope="module")
def server(chain: Chain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path_factory.mktemp("og") / "tee.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    env = {
        **os.environ,
        "AGENTGUARD_OG_FACILITATOR_KEY": FACILITATOR.private_key,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "agentguard_opengradient.server",
            "--rpc-url", chain.anvil.url, "--asset", chain.opg.address, "--pay-to", PAYEE.address,
            "--signing-key", str(key_file), "--idle-timeout", str(IDLE),
            "--input-price", str(INPUT_PRICE), "--output-price", str(OUTPUT_PRICE),
        ],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline().decode() if ready else ""
        assert "listening on http://127.0.0.1:" in line, line or "server did not start in 60 s"
        assert f"tee_id={tee_id(pem(key))}" in line
        url = line.split("listening on ")[1].split()[0]
        yield Server(url, key)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def guard(network: ReferenceNetwork, policy_client: str = POLICY_CLIENT) -> Guard:
    return Guard.connect(
        network.url,
        policy_client=policy_client,
        operators=network.operator_addresses,
        api_key=network.api_key,
        policy_id=network.policy_clients[policy_client],
    )


@dataclass
class AuditList:
    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def append(self, kind: str, record: Any) -> None:
        self.records.append((kind, dict(record)))


def wallet(
    chain: Chain, network: ReferenceNetwork, audit: AuditList | None = None
) -> GuardedWallet:
    return GuardedWallet(
        signer=Signer.from_key(AGENT.private_key), guard=guard(network), web3=chain.w3,
        ledger=Ledger(),
        limits=Limits(windows=[WindowCap(chain.opg.address, 86400, 10 * OPG)]), audit=audit,
    )  # fmt: skip


@pytest.fixture(scope="module")
def approved(
    chain: Chain, network: ReferenceNetwork, policies: None
) -> tuple[Permit2Approval, Permit2Approval, AuditList]:
    """The one-time Permit2 approval, through the guarded wallet, then asked for again."""
    audit = AuditList()
    agent_wallet = wallet(chain, network, audit)
    first = ensure_permit2_approval(
        agent_wallet, chain.opg.address, SESSION_CAP, APPROVAL, web3=chain.w3
    )
    second = ensure_permit2_approval(
        agent_wallet, chain.opg.address, SESSION_CAP, APPROVAL, web3=chain.w3
    )
    return first, second, audit


def make_auth(
    network: ReferenceNetwork, chain: Chain, ledger: Ledger, policy_client: str = POLICY_CLIENT
) -> X402Auth:
    return X402Auth(
        signer=Signer.from_key(AGENT.private_key), guard=guard(network, policy_client),
        ledger=ledger,
        allowances=Allowances({chain.opg.address: SESSION_CAP}),
    )  # fmt: skip


def charge(prompt: str, reply: str) -> int:
    """The server's published price: words in * input price + words out * output price."""
    return len(prompt.split()) * INPUT_PRICE + len(reply.split()) * OUTPUT_PRICE


def test_approval_goes_through_the_guarded_wallet_once(approved: Any, chain: Chain) -> None:
    first, second, audit = approved
    assert (first.allowance_before, first.allowance_after) == (0, APPROVAL)
    assert (
        first.receipt is not None
        and first.receipt.intent.function_signature == "approve(address,uint256)"
    )
    assert (
        first.receipt.intent.spend.recipient == PERMIT2
        and first.receipt.intent.spend.amount == APPROVAL
    )
    assert [kind for kind, _ in audit.records] == [
        "authorized",
        "signed",
        "sent",
        "committed",
    ]  # once
    assert second.receipt is None and second.allowance_before == APPROVAL
    assert chain.opg.functions.allowance(AGENT.address, PERMIT2).call() == APPROVAL


def test_one_signature_pays_a_session_of_chats_and_settles_exactly(
    approved: Any, chain: Chain, network: ReferenceNetwork, server: Server, signing_spy: SigningSpy
) -> None:
    payer_before, payee_before = chain.balance(AGENT.address), chain.balance(PAYEE.address)
    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        with OpenGradientClient(
            server.url, auth, tee_signing_key=pem(server.key), settlement_mode="individual"
        ) as og:
            prompts = [f"question {i} about permits" for i in range(3)]
            results = [
                og.chat(MODEL, [{"role": "user", "content": p}], max_tokens=20) for p in prompts
            ]
        assert signing_spy.calls == ["sign_typed_data"]  # one Permit2 signature for the session
        expected = [charge(p, "You said: " + p) for p in prompts]
        sessions = {r.receipt.session for r in results if r.receipt}
        assert len(sessions) == 1 and None not in sessions
        session_id = sessions.pop()
        assert session_id is not None
        for result, prompt, amount in zip(results, prompts, expected, strict=True):
            assert result.text == "You said: " + prompt
            assert result.usage == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
            assert result.receipt is not None and result.receipt.reported_charge == amount
            assert result.receipt.authorized == SESSION_CAP  # the server's charge is its report
            assert result.receipt.scheme == "upto" and result.receipt.pay_to == PAYEE.address
            assert result.proof is not None and result.proof.tee_id == tee_id(pem(server.key))
            assert result.model == "gpt-4.1"
        reservation_id = results[0].receipt.reservation_id  # type: ignore[union-attr]
        open_reservation = ledger.get(reservation_id)
        assert open_reservation.state == "signed" and open_reservation.amount == SESSION_CAP
        auth.close()  # ends the session; what the payee reported is not proof of what it takes
        assert ledger.get(reservation_id).state == "signed"
        assert ledger.get(reservation_id).amount == SESSION_CAP

        answer = server.wait_settled(session_id)
        status = answer.json()
        assert status["status"] == "settled" and int(status["charged"]) == sum(expected)
        assert status["settlement_job"].startswith("payment-")  # through the facilitator's queue
        receipt = chain.w3.eth.get_transaction_receipt(status["payment_transaction"])
        assert receipt["status"] == 1 and receipt["from"] == FACILITATOR.address
        assert chain.balance(AGENT.address) == payer_before - sum(expected)
        assert chain.balance(PAYEE.address) == payee_before + sum(expected)
        # the chain shows the settlement: commit what was charged, give the rest back
        report = ledger.recover(resolver(chain.w3))
        (closed,) = report.committed
        assert closed.id == reservation_id and closed.state == "committed"
        assert (closed.amount, closed.reserved) == (sum(expected), SESSION_CAP)


async def test_async_chat_and_completion_verify_and_tampering_fails(
    approved: Any, chain: Chain, network: ReferenceNetwork, server: Server
) -> None:
    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        async with OpenGradientClient(
            server.url, auth, tee_signing_key=pem(server.key), settlement_mode="private"
        ) as og:
            chat = await og.achat(
                MODEL, [{"role": "system", "content": "terse"}, {"role": "user", "content": "ping"}]
            )
            again = await og.achat(MODEL, [{"role": "user", "content": "ping again"}])
            done = await og.acompletion(MODEL, "one two three", max_tokens=3)
        assert chat.text == "You said: ping" and chat.proof is not None
        assert chat.receipt is not None and again.receipt is not None
        assert again.receipt.session == chat.receipt.session
        assert again.receipt.reservation_id == chat.receipt.reservation_id  # no new payment
        assert (
            done.text == "Echo: one two"
            and done.finish_reason == "stop"  # the gateway never says "length"
            and done.proof is not None
        )
        assert done.receipt is not None and done.receipt.reported_charge == charge(
            "one two three", "Echo: one two"
        )
        assert done.receipt.authorized == SESSION_CAP  # what stays counted

        # The same answer, altered on the way: its proof no longer holds.
        body = {"model": "gpt-4.1", "prompt": "one two three", "max_tokens": 3, "temperature": 0.0}
        with pytest.raises(ProofError, match="not the output"):
            verify_proof(
                done.raw,
                canonical_request=canonical_completion_request(body),
                output="Echo: one TWO",
                signing_key=pem(server.key),
            )
        with pytest.raises(ProofError, match="different request"):
            verify_proof(
                done.raw,
                canonical_request={**canonical_completion_request(body), "prompt": "x"},
                output=done.text,
                signing_key=pem(server.key),
            )
        await auth.aclose()
        for session in {chat.receipt.session, done.receipt.session}:
            assert session is not None
            assert server.wait_settled(session).json()["status"] == "settled"


def test_a_proof_from_another_key_raises_proof_error(
    approved: Any, chain: Chain, network: ReferenceNetwork, server: Server
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        og = OpenGradientClient(server.url, auth, tee_signing_key=pem(stranger))
        with pytest.raises(ProofError, match="claims TEE"):
            og.chat(MODEL, [{"role": "user", "content": "hello"}])
        og.close()
        ((session_id, _),) = auth.sessions.values()  # it was paid for, and is counted
        spent = ledger.usage(AGENT.address, 3600).spent
        assert spent == {chain.opg.address.lower(): SESSION_CAP}  # the signed maximum stays counted
        auth.close()
        status = server.wait_settled(session_id).json()
        assert status["charged"] == str(charge("hello", "You said: hello"))


def test_a_policy_refusing_the_provider_means_nothing_is_signed(
    approved: Any, chain: Chain, network: ReferenceNetwork, server: Server, signing_spy: SigningSpy
) -> None:
    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger, STRICT_CLIENT)
        with OpenGradientClient(server.url, auth) as og, pytest.raises(PolicyDenied) as info:
            og.chat(MODEL, [{"role": "user", "content": "hello"}])
        assert any(PAYEE.address.lower() in reason.lower() for reason in info.value.reasons)
        assert signing_spy.calls == []
        assert auth.sessions == {}
        assert ledger.usage(AGENT.address, 3600).count == 0


def test_an_approval_above_the_policy_cap_is_refused_unsigned(
    approved: Any, chain: Chain, network: ReferenceNetwork, signing_spy: SigningSpy
) -> None:
    before = chain.opg.functions.allowance(AGENT.address, PERMIT2).call()
    with pytest.raises(PolicyDenied):
        ensure_permit2_approval(
            wallet(chain, network), chain.opg.address, AGENT_OPG, AGENT_OPG, web3=chain.w3
        )
    assert signing_spy.calls == []
    assert chain.opg.functions.allowance(AGENT.address, PERMIT2).call() == before


def test_client_configuration_is_checked_before_any_request(
    chain: Chain, network: ReferenceNetwork
) -> None:
    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        with pytest.raises(ConfigurationError, match="settlement_mode"):
            OpenGradientClient("http://127.0.0.1:1", auth, settlement_mode="later")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="not a PEM public key"):
            OpenGradientClient("http://127.0.0.1:1", auth, tee_signing_key="not a key")
        with pytest.raises(ConfigurationError, match="needs the TEE"):
            OpenGradientClient("http://127.0.0.1:1", auth, expected_tee_id="0x" + "00" * 32)
