"""OpenGradient's TEE registry and registry-pinned TLS, against a real chain and real TLS.

A registry contract of our own with OpenGradient's read ABI (``contracts/TeeRegistry.sol``)
runs on anvil; a loopback HTTPS server plays the enclave, with certificates the tests swap.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from agentguard_opengradient._proof import canonical_chat_request, sign_proof
from agentguard_opengradient._tee_registry import TEE_REGISTRY_ABI, TeeRegistry, origin
from agentguard_opengradient._tls import AsyncPinnedTransport, PinnedTransport
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.x509.oid import NameOID
from eth_utils.crypto import keccak
from web3 import Web3
from web3.contract import Contract

from agentguard import ConfigurationError, NodeUnavailable, TeeNotActive, TlsPinMismatch
from agentguard.chain import DEV_ACCOUNTS, Anvil, transact

ROOT = Path(__file__).resolve().parents[3]
CONTRACT = ROOT / "adapters" / "opengradient" / "contracts" / "TeeRegistry.sol"
ADMIN = DEV_ACCOUNTS[0].address
PAY_TO = DEV_ACCOUNTS[5].address
PCR = b"\x01" * 32
LOOPBACK = "127.0.0.1"
BODY = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}

_COMPILE = """
import solc from "solc";
import { readFileSync } from "node:fs";
const input = { language: "Solidity",
  sources: { "TeeRegistry.sol": { content: readFileSync(process.argv[1], "utf8") } },
  settings: { evmVersion: "cancun", optimizer: { enabled: true, runs: 200 },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } } } };
const out = JSON.parse(solc.compile(JSON.stringify(input)));
const bad = (out.errors ?? []).filter((e) => e.severity !== "info");
if (bad.length) { console.error(bad.map((e) => e.formattedMessage).join("\\n")); process.exit(1); }
const c = out.contracts["TeeRegistry.sol"].TeeRegistry;
console.log(JSON.stringify({ abi: c.abi, bytecode: c.evm.bytecode.object }));
"""


# -- keys and certificates --------------------------------------------------------------------


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None = None,
    ca: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


@dataclass
class TlsIdentity:
    """A TLS certificate (and its chain) the loopback server can present."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    chain: list[x509.Certificate] = field(default_factory=list)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def context(self, folder: Path) -> ssl.SSLContext:
        path = folder / f"{self.cert.serial_number}.pem"
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [self.cert, *self.chain])
        key = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.write_bytes(key + pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(path)
        return context


def self_signed(ca: bool = False) -> TlsIdentity:
    key = ec.generate_private_key(ec.SECP256R1())
    return TlsIdentity(key, _certificate("registered-ca" if ca else "enclave", key, ca=ca))


def issued_by(parent: TlsIdentity) -> TlsIdentity:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = parent.cert.subject.rfc4514_string().removeprefix("CN=")
    cert = _certificate("impostor", key, issuer=(subject, parent.key))
    return TlsIdentity(key, cert, [parent.cert])


def rsa_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def der(key: RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# -- the loopback enclave ---------------------------------------------------------------------


class Enclave(http.server.ThreadingHTTPServer):
    """A loopback HTTPS server whose certificate can be swapped; counts requests it read."""

    daemon_threads = True

    def __init__(self, folder: Path, identity: TlsIdentity) -> None:
        super().__init__((LOOPBACK, 0), _Handler)
        self.folder = folder
        self.requests: list[str] = []
        self.present(identity)

    def present(self, identity: TlsIdentity) -> None:
        self.context = identity.context(self.folder)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), (
            address
        )

    @property
    def url(self) -> str:
        return f"https://{LOOPBACK}:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Enclave
    protocol_version = "HTTP/1.1"  # keep-alive, as a real gateway

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.server.requests.append(self.rfile.read(length).decode())
        payload = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_: object) -> None:
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (ssl.SSLError, OSError):  # a client that refused our certificate hangs up
            pass


# -- chain, registry, clock -------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    w3: Web3
    registry: Contract
    enclave: Enclave
    clock: Clock
    folder: Path

    def register(self, key: RSAPrivateKey, tls: TlsIdentity, endpoint: str | None = None) -> str:
        call = self.registry.functions.registerTEE(
            der(key), tls.der, PAY_TO, endpoint or self.enclave.url, PCR, 0
        )
        transact(self.w3, call, sender=ADMIN)
        return "0x" + keccak(der(key)).hex()

    def act(self, name: str, *args: Any) -> None:
        transact(self.w3, getattr(self.registry.functions, name)(*args), sender=ADMIN)

    def resolver(self, **options: Any) -> TeeRegistry:
        return TeeRegistry(self.w3, self.registry.address, clock=self.clock, **options)


@pytest.fixture(scope="module")
def artifact() -> dict[str, Any]:
    done = subprocess.run(
        ["node", "--input-type=module", "-e", _COMPILE, str(CONTRACT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    compiled: dict[str, Any] = json.loads(done.stdout)
    return compiled


@pytest.fixture(scope="module")
def chain() -> Iterator[Web3]:
    with Anvil() as anvil:
        yield Web3(Web3.HTTPProvider(anvil.url))


@pytest.fixture
def world(chain: Web3, artifact: dict[str, Any], tmp_path: Path) -> Iterator[World]:
    factory = chain.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    receipt = transact(chain, factory.constructor(), sender=ADMIN)
    address = receipt["contractAddress"]
    assert address is not None
    registry = chain.eth.contract(address=address, abi=artifact["abi"])
    transact(chain, registry.functions.approvePCR(PCR), sender=ADMIN)
    enclave = Enclave(tmp_path, self_signed())
    thread = threading.Thread(target=enclave.serve_forever, daemon=True)
    thread.start()
    try:
        yield World(chain, registry, enclave, Clock(), tmp_path)
    finally:
        enclave.shutdown()
        enclave.server_close()


def post(transport: httpx.BaseTransport, url: str) -> httpx.Response:
    with httpx.Client(transport=transport, trust_env=False, timeout=10) as client:
        return client.post(url + "/v1/chat/completions", json=BODY)


# -- the resolver -----------------------------------------------------------------------------


def test_active_tees_come_with_their_der_key_certificate_pcr_and_endpoint(world: World) -> None:
    key, tls = rsa_key(), self_signed()
    tee_id = world.register(key, tls)
    (tee,) = world.resolver().active()
    assert tee.tee_id == tee_id == "0x" + keccak(der(key)).hex()
    # the contract's own teeId for this key is the same id (getTEE finds it under it)
    assert world.registry.functions.getTEE(bytes.fromhex(tee_id[2:])).call()[3] == der(key)
    assert tee.public_key_der == der(key)
    assert tee.tls_certificate_der == tls.der
    assert tee.pcr_hash == "0x" + PCR.hex()
    assert tee.endpoint == world.enclave.url
    assert tee.payment_address == PAY_TO
    assert world.resolver().tee(tee_id.upper().replace("0X", "0x")) == tee


def test_a_proof_verifies_only_under_the_key_the_registry_holds(world: World) -> None:
    key = rsa_key()
    tee_id = world.register(key, self_signed())
    registry = world.resolver()
    canonical = canonical_chat_request(BODY)
    proof = registry.verify(
        sign_proof(key, canonical, "out", 1_764_000_000),
        canonical_request=canonical,
        output="out",
        endpoint=world.enclave.url,
    )
    assert proof.tee_id == tee_id


def test_a_proof_from_an_unregistered_enclave_is_refused(world: World) -> None:
    """Attack: a server signs with its own key and names its own tee_id (the client used to
    trust whatever key it was configured with): the registry does not list that TEE."""
    world.register(rsa_key(), self_signed())
    canonical = canonical_chat_request(BODY)
    forged = sign_proof(rsa_key(), canonical, "out", 1_764_000_000)
    with pytest.raises(TeeNotActive, match="not active"):
        world.resolver().verify(forged, canonical_request=canonical, output="out")


def test_a_proof_from_another_active_tee_is_refused_for_this_endpoint(world: World) -> None:
    """Attack: the pinned enclave relays an answer another (active) enclave signed."""
    world.register(rsa_key(), self_signed())
    other = rsa_key()
    world.register(other, self_signed(), endpoint="https://127.0.0.2:9")
    canonical = canonical_chat_request(BODY)
    fields = sign_proof(other, canonical, "out", 1_764_000_000)
    registry = world.resolver()
    registry.verify(fields, canonical_request=canonical, output="out")  # genuine, elsewhere
    with pytest.raises(TeeNotActive, match="not the one registered at this endpoint"):
        registry.verify(
            fields, canonical_request=canonical, output="out", endpoint=world.enclave.url
        )


def test_a_deactivated_tee_is_refused_once_the_registry_is_read_again(world: World) -> None:
    key = rsa_key()
    tee_id = world.register(key, self_signed())
    registry = world.resolver(refresh_interval=300)
    canonical = canonical_chat_request(BODY)
    fields = sign_proof(key, canonical, "out", 1_764_000_000)
    registry.verify(fields, canonical_request=canonical, output="out")
    world.act("disableTEE", bytes.fromhex(tee_id[2:]))
    world.clock.now += 300  # the next use reads the registry again
    with pytest.raises(TeeNotActive):
        registry.verify(fields, canonical_request=canonical, output="out")
    with pytest.raises(TeeNotActive):
        registry.tee(tee_id)


@pytest.mark.parametrize("how", ["revoked build", "stale heartbeat"])
def test_a_revoked_build_or_a_silent_enclave_is_not_active(world: World, how: str) -> None:
    tee_id = world.register(rsa_key(), self_signed())
    if how == "revoked build":
        world.act("revokePCR", PCR)
    else:
        world.act("setHeartbeatMaxAge", 60)
        world.w3.provider.make_request("evm_increaseTime", [61])  # type: ignore[arg-type]
        world.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    with pytest.raises(TeeNotActive):
        world.resolver().tee(tee_id)


def test_only_the_builds_asked_for_are_trusted(world: World) -> None:
    tee_id = world.register(rsa_key(), self_signed())
    assert world.resolver(pcr_hashes=["0x" + PCR.hex()]).tee(tee_id).tee_id == tee_id
    with pytest.raises(TeeNotActive):
        world.resolver(pcr_hashes=["0x" + "02" * 32]).tee(tee_id)


def test_a_new_tee_is_found_early_but_not_by_a_flood_of_unknown_ids(world: World) -> None:
    registry = world.resolver(refresh_interval=300, min_refresh_interval=10)
    assert registry.active() == ()
    tee_id = world.register(rsa_key(), self_signed())
    world.clock.now += 10
    assert registry.tee(tee_id).tee_id == tee_id  # unknown id: one early read
    calls = 0
    original = registry._read

    def counting() -> Any:
        nonlocal calls
        calls += 1
        return original()

    registry._read = counting  # type: ignore[method-assign]
    for n in range(20):  # a hostile server naming random ids cannot make us hammer the RPC
        with pytest.raises(TeeNotActive):
            registry.tee("0x" + f"{n:064x}")
    assert calls == 0


def test_the_registry_answer_is_checked_entry_by_entry(world: World) -> None:
    """Attack: a lying RPC node lists entries that would make us trust the wrong thing: a
    non-RSA key, a non-canonical key encoding (its tee_id would differ from the enclave's), a
    plain-http endpoint, a certificate that is not one. Each is skipped, the good one kept."""
    good = rsa_key()
    world.register(good, self_signed())
    bad_ec = ec.generate_private_key(ec.SECP256R1()).public_key()
    ec_der = bad_ec.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tls = self_signed().der
    for key_der, cert, endpoint in [
        (ec_der, tls, world.enclave.url),
        (der(rsa_key()) + b"\x00", tls, world.enclave.url),
        (der(rsa_key()), tls, "http://127.0.0.1:1"),
        (der(rsa_key()), b"not a certificate", world.enclave.url),
    ]:
        call = world.registry.functions.registerTEE(key_der, cert, PAY_TO, endpoint, PCR, 0)
        transact(world.w3, call, sender=ADMIN)
    (tee,) = world.resolver().active()
    assert tee.public_key_der == der(good)


def test_a_failing_rpc_node_is_node_unavailable_without_its_url(tmp_path: Path) -> None:
    w3 = Web3(Web3.HTTPProvider("http://127.0.0.1:1/?apikey=SECRET", request_kwargs={"timeout": 2}))
    registry = TeeRegistry(w3, "0x" + "11" * 20)
    with pytest.raises(NodeUnavailable) as caught:
        registry.tee("0x" + "00" * 32)
    assert "SECRET" not in str(caught.value)
    with pytest.raises(ConfigurationError):
        TeeRegistry(w3, "not an address")


# -- pinned TLS ---------------------------------------------------------------------------------


def test_the_pinned_connection_reaches_the_registered_enclave(world: World) -> None:
    world.register(rsa_key(), self_signed_for(world))
    transport = PinnedTransport(world.resolver())
    assert post(transport, world.enclave.url).json() == {"ok": True}
    assert len(world.enclave.requests) == 1


def self_signed_for(world: World) -> TlsIdentity:
    identity = self_signed()
    world.enclave.present(identity)
    return identity


@pytest.mark.parametrize("impostor", ["self-signed", "issued by the registered certificate"])
def test_another_certificate_is_refused_before_anything_is_sent(
    world: World, impostor: str
) -> None:
    """Attack: a server on the registered endpoint with another certificate. The second case
    is a certificate signed with the registered one's key (a CA-valid chain, right IP): the
    ``cadata`` pinning OpenGradient's SDK uses (build_ssl_context_from_der) accepts it, as the
    first assertion shows; exact pinning refuses it, and the request body never leaves."""
    registered = self_signed(ca=True)
    world.register(rsa_key(), registered)
    other = self_signed() if impostor == "self-signed" else issued_by(registered)
    world.enclave.present(other)
    if impostor != "self-signed":
        chain_only = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        chain_only.load_verify_locations(cadata=ssl.DER_cert_to_PEM_cert(registered.der))
        chain_only.check_hostname = False
        with httpx.Client(verify=chain_only, trust_env=False) as naive:
            assert naive.post(world.enclave.url + "/x", json={}).status_code == 200
        world.enclave.requests.clear()
    with pytest.raises(TlsPinMismatch, match="before anything was sent"):
        post(PinnedTransport(world.resolver()), world.enclave.url)
    assert world.enclave.requests == []


def test_an_endpoint_no_active_tee_is_registered_at_is_refused(world: World) -> None:
    key = rsa_key()
    tee_id = world.register(key, self_signed_for(world))
    transport = PinnedTransport(world.resolver())
    assert post(transport, world.enclave.url).status_code == 200
    world.act("disableTEE", bytes.fromhex(tee_id[2:]))
    world.clock.now += 300
    with pytest.raises(TeeNotActive):
        post(transport, world.enclave.url)
    with pytest.raises(ConfigurationError, match="https"):
        post(transport, world.enclave.url.replace("https", "http"))
    assert len(world.enclave.requests) == 1


def test_a_rotated_registry_entry_is_picked_up(world: World) -> None:
    """The enclave restarts with a new key and certificate: the old entry is disabled and a new
    one registered at the same endpoint. Once the registry is read again, a kept-alive
    connection to the old certificate is not reused (attack: the retired enclave keeps
    serving on it), and the new certificate is the one accepted."""
    old_key, old_tls = rsa_key(), self_signed_for(world)
    old_id = world.register(old_key, old_tls)
    registry = world.resolver(refresh_interval=300)
    with httpx.Client(transport=PinnedTransport(registry), trust_env=False) as client:
        assert client.post(world.enclave.url + "/a", json={}).status_code == 200
        new_key, new_tls = rsa_key(), self_signed()
        world.act("disableTEE", bytes.fromhex(old_id[2:]))
        new_id = world.register(new_key, new_tls)
        world.clock.now += 299  # not read again yet: the kept-alive connection serves
        assert client.post(world.enclave.url + "/b", json={}).status_code == 200
        world.clock.now += 1  # read again: new pins, new connections only
        with pytest.raises(TlsPinMismatch):
            client.post(world.enclave.url + "/c", json={})
        world.enclave.present(new_tls)
        assert client.post(world.enclave.url + "/d", json={}).status_code == 200
    canonical = canonical_chat_request(BODY)
    assert registry.tee(new_id).tls_certificate_der == new_tls.der
    registry.verify(sign_proof(new_key, canonical, "o", 1), canonical_request=canonical, output="o")
    with pytest.raises(TeeNotActive):
        registry.verify(
            sign_proof(old_key, canonical, "o", 1), canonical_request=canonical, output="o"
        )
    assert [r for r in world.enclave.requests] == ["{}", "{}", "{}"]


def test_the_async_transport_pins_too(world: World) -> None:
    world.register(rsa_key(), self_signed_for(world))
    registry = world.resolver()

    async def run() -> None:
        transport = AsyncPinnedTransport(registry)
        async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
            assert (await client.post(world.enclave.url + "/a", json={})).status_code == 200
        world.enclave.present(self_signed())
        async with httpx.AsyncClient(
            transport=AsyncPinnedTransport(registry), trust_env=False
        ) as client:
            with pytest.raises(TlsPinMismatch):
                await client.post(world.enclave.url + "/b", json={})

    anyio.run(run)
    assert len(world.enclave.requests) == 1


def _shape(entry: dict[str, Any]) -> Any:
    """A function's output shape: names and types, struct names aside."""
    return [(c["name"], c["type"], _shape(c) if "components" in c else None)
            for c in entry.get("components", entry.get("outputs", []))]  # fmt: skip


def test_the_resolver_reads_the_registry_with_opengradients_abi(artifact: dict[str, Any]) -> None:
    """The stand-in contract must answer exactly the ABI the resolver (and OpenGradient's SDK)
    decodes, or the tests would prove nothing about the real registry."""
    ours = next(e for e in artifact["abi"] if e.get("name") == "getActiveTEEs")
    assert _shape(ours) == _shape(TEE_REGISTRY_ABI[0])
    assert ours["inputs"][0]["type"] == "uint8"


class _Answer:
    """A registry whose node answers ``value`` (or raises it): a stub for error paths only."""

    def __init__(self, value: object) -> None:
        self.value = value

    def getActiveTEEs(self, tee_type: int) -> _Answer:
        return self

    def call(self) -> object:
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


def _stubbed(value: object) -> TeeRegistry:
    registry = TeeRegistry(Web3(), "0x" + "11" * 20)
    registry._contract = type("C", (), {"functions": _Answer(value)})()
    return registry


def test_a_garbage_registry_answer_is_node_unavailable_or_skipped() -> None:
    with pytest.raises(NodeUnavailable, match="no list"):
        _stubbed("garbage").active()
    with pytest.raises(NodeUnavailable, match="ValueError") as caught:
        _stubbed(ValueError("https://rpc.example/?key=SECRET refused")).active()
    assert "SECRET" not in str(caught.value)
    key, cert = der(rsa_key()), self_signed().der
    ohttp = (0, 0, 0, 0, b"", b"", 0)

    def entry(tee_type: int, enabled: bool) -> tuple[Any, ...]:
        return (ADMIN, PAY_TO, "https://127.0.0.1:1", key, cert, PCR, tee_type, enabled, 1, 1,
                ohttp)  # fmt: skip

    # listed as active, but of another type or not enabled (a lying node): skipped
    assert _stubbed([entry(1, True), entry(0, False), ("short",)]).active() == ()
    (tee,) = _stubbed([entry(0, True), entry(0, True)]).active()  # a duplicate counts once
    assert tee.public_key_der == key


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://Enclave.Example:8443/v1/chat", ("enclave.example", 8443)),
        ("https://127.0.0.1", ("127.0.0.1", 443)),
        ("https://[::1]:9/", ("::1", 9)),
        ("https://bücher.example/", ("xn--bcher-kva.example", 443)),  # as the socket sees it
    ],
)
def test_an_endpoint_is_keyed_by_the_host_and_port_the_connection_uses(
    url: str, expected: tuple[str, int]
) -> None:
    assert origin(url) == expected


@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "https://", "not a url", "https://[::1"])
def test_a_non_https_endpoint_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="https URL"):
        origin(url)


def test_an_answer_naming_no_tee_is_refused(world: World) -> None:
    world.register(rsa_key(), self_signed())
    canonical = canonical_chat_request(BODY)
    for body in ({}, {"tee_id": 7}, {"tee_id": "0xnothex"}):
        with pytest.raises(TeeNotActive):
            world.resolver().verify(body, canonical_request=canonical, output="o")


def test_racing_requests_share_one_pinned_transport(world: World) -> None:
    """Eight threads, one client, one registry: every request is pinned and answered."""
    world.register(rsa_key(), self_signed_for(world))
    results: list[int] = []
    with httpx.Client(
        transport=PinnedTransport(world.resolver()), trust_env=False, timeout=10
    ) as client:

        def one() -> None:
            results.append(client.post(world.enclave.url + "/r", json={}).status_code)

        threads = [threading.Thread(target=one) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == [200] * 8
    assert len(world.enclave.requests) == 8
