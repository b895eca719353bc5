"""``OpenGradientClient(..., tee=TeeRegistry)`` end to end, with every piece real: OPG, Permit2
and the upto proxy on anvil, our registry contract (OpenGradient's read ABI) on the same chain,
the reference authorization network, and the local gateway serving HTTPS on loopback with the
certificate and signing key registered for it. An enclave's key comes from the registry, the
connection is pinned to the registered certificate, and a proof must come from an active TEE
registered at the endpoint that answered."""

# ruff: noqa: F811 - pytest fixtures imported from test_og_inference are parameters here

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from agentguard_opengradient import OpenGradientClient, ensure_permit2_approval
from agentguard_opengradient.server import ServerConfig, serve
from agentguard_opengradient.tee import PinnedTransport, TeeRegistry
from conftest import AGENT, FACILITATOR, PAYEE, Chain
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from eth_utils.crypto import keccak
from test_og_inference import (  # noqa: F401 - fixtures
    APPROVAL,
    MODEL,
    SESSION_CAP,
    chain,
    make_auth,
    network,
    policies,
    wallet,
)
from test_og_tee_registry import (  # noqa: F401 - fixture
    ADMIN,
    PAY_TO,
    PCR,
    Clock,
    Enclave,
    TlsIdentity,
    artifact,
    der,
    rsa_key,
    self_signed,
)
from web3.contract import Contract

from agentguard import (
    ConfigurationError,
    StreamUnverified,
    TeeNotActive,
    TlsPinMismatch,
)
from agentguard.chain import transact
from agentguard.ledger import Ledger
from agentguard.network.launcher import ReferenceNetwork
from agentguard.testing import SigningSpy

HELLO = [{"role": "user", "content": "hello through the registry"}]
REFRESH = 300.0


@dataclass
class Gateway:
    """The local gateway over HTTPS: its URL, enclave key and TLS identity."""

    url: str
    key: RSAPrivateKey
    tls: TlsIdentity


@dataclass
class Registry:
    contract: Contract
    chain: Chain
    clock: Clock

    def register(self, key: RSAPrivateKey, tls: TlsIdentity, endpoint: str) -> str:
        call = self.contract.functions.registerTEE(der(key), tls.der, PAY_TO, endpoint, PCR, 0)
        transact(self.chain.w3, call, sender=ADMIN)
        return "0x" + keccak(der(key)).hex()

    def disable(self, tee_id: str) -> None:
        call = self.contract.functions.disableTEE(bytes.fromhex(tee_id[2:]))
        transact(self.chain.w3, call, sender=ADMIN)

    def resolver(self, cls: type[TeeRegistry] = TeeRegistry) -> TeeRegistry:
        return cls(self.chain.w3, self.contract.address, clock=self.clock, refresh_interval=REFRESH)

    def later(self) -> None:
        """Past the resolver's refresh interval: its next use reads the chain again."""
        self.clock.now += REFRESH


@contextmanager
def gateway(chain: Chain, folder: Path) -> Iterator[Gateway]:
    key, tls = rsa_key(), self_signed()
    tls.context(folder)  # writes the key and certificate PEM the server loads
    config = ServerConfig(
        rpc_url=chain.anvil.url,
        asset=chain.opg.address,
        pay_to=PAYEE.address,
        facilitator_key=FACILITATOR.private_key,
        signing_key=key,
    )
    with serve(config, tls_cert=folder / f"{tls.cert.serial_number}.pem") as url:
        yield Gateway(url, key, tls)


@pytest.fixture(scope="module")
def server(chain: Chain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with gateway(chain, tmp_path_factory.mktemp("og-tls")) as running:
        yield running


@pytest.fixture
def registry(chain: Chain, artifact: dict[str, Any]) -> Registry:
    factory = chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    address = transact(chain.w3, factory.constructor(), sender=ADMIN)["contractAddress"]
    assert address is not None
    contract = chain.w3.eth.contract(address=address, abi=artifact["abi"])
    transact(chain.w3, contract.functions.approvePCR(PCR), sender=ADMIN)
    return Registry(contract, chain, Clock())


@pytest.fixture
def approved(chain: Chain, network: ReferenceNetwork, policies: None) -> None:
    ensure_permit2_approval(
        wallet(chain, network), chain.opg.address, APPROVAL, APPROVAL, web3=chain.w3
    )


def counted(ledger: Ledger) -> tuple[int, int]:
    """What the ledger counts for the agent today: (reservations, OPG atomic units)."""
    usage = ledger.usage(AGENT.address, 86400)
    return usage.count, sum(usage.spent.values())


# -- configuration ------------------------------------------------------------------------------


def test_the_registry_and_a_signing_key_are_one_or_the_other(
    chain: Chain, network: ReferenceNetwork, policies: None, registry: Registry
) -> None:
    tees = registry.resolver()
    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        with pytest.raises(ConfigurationError, match="not both"):
            OpenGradientClient(None, auth, tee=tees, tee_signing_key="pem")
        with pytest.raises(ConfigurationError, match="https"):
            OpenGradientClient("http://127.0.0.1:1", auth, tee=tees)
        with pytest.raises(ConfigurationError, match="base_url is needed"):
            OpenGradientClient(None, auth)
        # a transport that is not pinned to this registry would bypass its certificates
        with pytest.raises(ConfigurationError, match="PinnedTransport"):
            OpenGradientClient(None, auth, tee=tees, transport=httpx.HTTPTransport())
        with pytest.raises(ConfigurationError, match="PinnedTransport"):
            OpenGradientClient(None, auth, tee=tees, transport=PinnedTransport(registry.resolver()))
        with pytest.raises(ConfigurationError, match="AsyncPinnedTransport"):
            OpenGradientClient(None, auth, tee=tees, async_transport=httpx.AsyncHTTPTransport())
        own = PinnedTransport(tees, retries=1)  # the user's own configuration is kept
        with OpenGradientClient(None, auth, tee=tees, transport=own) as og:
            assert og.verifies_proofs
            # an environment proxy would carry the request around the pinned transport
            assert og._client().trust_env is False


# -- paid inference through the registry --------------------------------------------------------


def test_a_paid_chat_through_the_registry(
    approved: None,
    chain: Chain,
    network: ReferenceNetwork,
    registry: Registry,
    server: Gateway,
    signing_spy: SigningSpy,
) -> None:
    tee_id = registry.register(server.key, server.tls, server.url)
    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        with OpenGradientClient(None, auth, tee=registry.resolver()) as og:
            assert og._endpoint() == server.url  # the active TEE the registry lists
            first = og.chat(MODEL, HELLO, max_tokens=20)
            second = og.completion(MODEL, "and a completion", max_tokens=20)
        for result in (first, second):
            assert result.proof is not None and result.proof.tee_id == tee_id
            assert result.receipt is not None and result.receipt.authorized == SESSION_CAP
        assert first.text == "You said: hello through the registry"
        # one signature per route's session (sessions are bound to method and path)
        assert signing_spy.calls == ["sign_typed_data"] * 2
        assert counted(ledger) == (2, 2 * SESSION_CAP)
        auth.close()


def test_an_async_chat_and_a_stream_verify_under_the_registry(
    approved: None, chain: Chain, network: ReferenceNetwork, registry: Registry, server: Gateway
) -> None:
    tee_id = registry.register(server.key, server.tls, server.url)
    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        og = OpenGradientClient(server.url, auth, tee=registry.resolver())

        async def run() -> str | None:
            async with og:
                answer = await og.achat(MODEL, HELLO, max_tokens=20)
            return answer.proof.tee_id if answer.proof else None

        assert anyio.run(run) == tee_id
        with og, og.stream_chat(MODEL, HELLO, max_tokens=20) as stream:
            text = "".join(stream)
        assert stream.verified and stream.result.proof is not None
        assert stream.result.proof.tee_id == tee_id  # the final frame, checked via the registry
        assert text == "You said: hello through the registry"
        auth.close()


# -- impostors and relays -----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["registered endpoint, other certificate", "unregistered"])
def test_an_impostor_endpoint_never_receives_a_payment_header(
    approved: None,
    chain: Chain,
    network: ReferenceNetwork,
    registry: Registry,
    server: Gateway,
    tmp_path: Path,
    signing_spy: SigningSpy,
    where: str,
) -> None:
    """Attack: a host at the TEE's address (or one the agent is pointed at) answers as the
    gateway would and takes the payment. Nothing reaches it: the pinned handshake fails, or
    the endpoint is not registered, before any request byte; nothing is signed or counted."""
    impostor = Enclave(tmp_path, self_signed())
    threading.Thread(target=impostor.serve_forever, daemon=True).start()
    base: str | None
    error: type[Exception]
    try:
        if where == "unregistered":
            registry.register(server.key, server.tls, server.url)
            base, error = impostor.url, TeeNotActive
        else:  # the registry holds another certificate for the impostor's address
            registry.register(server.key, self_signed(), impostor.url)
            base, error = None, TlsPinMismatch
        with Ledger() as ledger:
            auth = make_auth(network, chain, ledger)
            with OpenGradientClient(base, auth, tee=registry.resolver()) as og:
                with pytest.raises(error):
                    og.chat(MODEL, HELLO)
                with pytest.raises(error), og.stream_chat(MODEL, HELLO) as stream:
                    list(stream)
            assert impostor.requests == []
            assert signing_spy.calls == []
            assert counted(ledger) == (0, 0)  # refused before anything was sent: nothing held
    finally:
        impostor.shutdown()
        impostor.server_close()


def test_a_proof_from_another_active_tee_relayed_through_this_endpoint_is_refused(
    approved: None, chain: Chain, network: ReferenceNetwork, registry: Registry, server: Gateway
) -> None:
    """Attack: the enclave registered at this endpoint relays answers another active enclave
    signed (whose key is genuine, but registered elsewhere). The answer is refused; its payment
    was sent and answered, so it stays counted."""
    registry.register(rsa_key(), server.tls, server.url)  # this endpoint's TEE: another key
    registry.register(server.key, self_signed(), "https://127.0.0.2:9")  # the signer, elsewhere
    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        with OpenGradientClient(server.url, auth, tee=registry.resolver()) as og:
            with pytest.raises(TeeNotActive, match="not the one registered at this endpoint"):
                og.chat(MODEL, HELLO)
            with (
                og.stream_chat(MODEL, HELLO) as stream,
                pytest.raises(StreamUnverified, match="not the one registered"),
            ):
                list(stream)
        assert counted(ledger) == (1, SESSION_CAP)
        auth.close()


# -- re-resolution and accounting ---------------------------------------------------------------


def test_a_rotated_tee_is_picked_up_and_the_old_one_refused(
    approved: None,
    chain: Chain,
    network: ReferenceNetwork,
    registry: Registry,
    server: Gateway,
    tmp_path: Path,
) -> None:
    """OpenGradient rotates an enclave: a new key, certificate and endpoint are registered and
    the old TEE disabled. The client follows the registry at its next read."""
    old = registry.register(server.key, server.tls, server.url)
    tees = registry.resolver()
    with Ledger() as ledger, gateway(chain, tmp_path) as rotated:
        auth = make_auth(network, chain, ledger)
        with OpenGradientClient(None, auth, tee=tees) as og:
            assert og.chat(MODEL, HELLO).proof.tee_id == old  # type: ignore[union-attr]
            new = registry.register(rotated.key, rotated.tls, rotated.url)
            registry.disable(old)
            registry.later()
            answer = og.chat(MODEL, HELLO)
            assert og._endpoint() == rotated.url
            assert answer.proof is not None and answer.proof.tee_id == new
        pinned = OpenGradientClient(server.url, auth, tee=tees)
        with pytest.raises(TeeNotActive, match="no active registered TEE"):
            pinned.chat(MODEL, HELLO)  # the old endpoint: no longer vouched for
        assert counted(ledger) == (2, 2 * SESSION_CAP)  # a session at each endpoint
        auth.close()


def test_a_tee_deactivated_mid_session_is_refused_and_its_session_stays_counted(
    approved: None, chain: Chain, network: ReferenceNetwork, registry: Registry, server: Gateway
) -> None:
    tee_id = registry.register(server.key, server.tls, server.url)
    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        with OpenGradientClient(server.url, auth, tee=registry.resolver()) as og:
            first = og.chat(MODEL, HELLO)
            registry.disable(tee_id)
            registry.later()
            with pytest.raises(TeeNotActive):
                og.chat(MODEL, HELLO)
        # The session's maximum was signed and sent with the first chat: it stays counted
        # until the chain shows the settlement, whatever happens to the TEE.
        assert first.receipt is not None
        assert ledger.get(first.receipt.reservation_id).state == "signed"
        assert counted(ledger) == (1, SESSION_CAP)
        auth.close()


class _TurnsAfterThe402(TeeRegistry):
    """The registry changes between the gateway's 402 and the paid retry (the second request
    the pinned transport looks up): ``turn`` runs a real registry transaction there."""

    turn: Callable[[], None]
    lookups = 0

    def pins(self, url: str | httpx.URL) -> frozenset[bytes]:
        self.lookups += 1
        if self.lookups == 2:
            self.turn()
            self.refresh()
        return super().pins(url)


@pytest.mark.parametrize("turn", ["deactivated", "certificate rotated"])
def test_a_paid_retry_refused_before_sending_releases_its_reservation(
    approved: None,
    chain: Chain,
    network: ReferenceNetwork,
    registry: Registry,
    server: Gateway,
    turn: str,
) -> None:
    """The registry turns between the 402 and the paid retry: the pinned transport refuses
    the retry before sending, so its reservation is released (before the fix it stayed
    counted as an unanswered payment)."""
    tee_id = registry.register(server.key, server.tls, server.url)
    tees = registry.resolver(_TurnsAfterThe402)
    assert isinstance(tees, _TurnsAfterThe402)

    def deactivate() -> None:
        registry.disable(tee_id)

    def rotate() -> None:  # a new certificate registered for the endpoint, the old TEE gone
        registry.register(rsa_key(), self_signed(), server.url)
        registry.disable(tee_id)

    tees.turn = deactivate if turn == "deactivated" else rotate
    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        with (
            OpenGradientClient(server.url, auth, tee=tees) as og,
            pytest.raises(TeeNotActive if turn == "deactivated" else TlsPinMismatch),
        ):
            og.chat(MODEL, HELLO)
        assert tees.lookups == 2  # the paid retry was looked up, and refused there
        assert auth.unanswered == ()  # nothing was sent: no outcome is unknown
        assert counted(ledger) == (0, 0)  # the reservation is released


def test_racing_first_calls_through_the_registry_open_one_session(
    approved: None,
    chain: Chain,
    network: ReferenceNetwork,
    registry: Registry,
    server: Gateway,
    signing_spy: SigningSpy,
) -> None:
    """Racing first calls each pick the endpoint and check the pins: they still ride one
    session under one signature (the picked endpoint is one string for all of them)."""
    tee_id = registry.register(server.key, server.tls, server.url)
    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        with (
            OpenGradientClient(None, auth, tee=registry.resolver()) as og,
            ThreadPoolExecutor(3) as pool,
        ):
            answers = list(pool.map(lambda n: og.chat(MODEL, HELLO, max_tokens=n), [5, 6, 7]))
        assert {a.proof.tee_id for a in answers if a.proof} == {tee_id}
        assert len({a.receipt.session for a in answers if a.receipt}) == 1
        assert signing_spy.calls == ["sign_typed_data"]
        assert counted(ledger) == (1, SESSION_CAP)
        auth.close()
