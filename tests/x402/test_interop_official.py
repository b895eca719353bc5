"""agentguard's client against x402's own server and facilitator, settling on a real chain.

One anvil (chain id 8453) with the shipped ``UsdCoin`` (EIP-3009, domain "USD Coin"/"2");
the official FastAPI middleware + ``x402Facilitator`` + ``FacilitatorWeb3Signer`` broadcast
real ``transferWithAuthorization`` transactions; balances are read back from the chain.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from web3 import Web3
from web3.contract import Contract

from agentguard import Guard, Signer
from agentguard.chain import DEV_ACCOUNTS, Anvil, deploy, transact
from agentguard.ledger import Ledger
from agentguard.network.launcher import ReferenceNetwork
from agentguard.x402 import Allowances, X402Auth, receipt
from agentguard.x402._wire import parse_v2_header

from . import peer
from .conftest import AGENT_KEY, chain_time_ahead, connect, connect_async

pytestmark = pytest.mark.integration

OWNER = DEV_ACCOUNTS[0]
FACILITATOR = DEV_ACCOUNTS[4]
PAYEE = DEV_ACCOUNTS[3].address
POLICY_CLIENT = "0x00000000000000000000000000000000000A4021"
FUNDS = 1_000_000_000


@dataclass
class Peer:
    w3: Web3
    token: Contract
    url: str
    agent: str

    def balance(self, who: str) -> int:
        return int(self.token.functions.balanceOf(who).call())


@pytest.fixture(scope="module")
def chain_peer(network: ReferenceNetwork) -> Iterator[Peer]:
    agent = Signer.from_key(AGENT_KEY).address
    with Anvil() as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        token = deploy(w3, "UsdCoin", sender=OWNER.address)
        transact(w3, token.functions.mint(agent, FUNDS), sender=OWNER.address)
        network.register_policy_client(
            POLICY_CLIENT,
            "agent_spend",
            {"max_per_tx": {token.address.lower(): "1000000"}, "allowed_recipients": [PAYEE]},
        )
        fac = peer.facilitator(FACILITATOR.private_key, anvil.url)
        with peer.serve(peer.app(fac, token.address, PAYEE)) as url:
            yield Peer(w3, token, url, agent)


@pytest.fixture
def guard(network: ReferenceNetwork) -> Iterator[Guard]:
    with connect(network, POLICY_CLIENT) as g:
        yield g


@pytest.fixture
def auth(chain_peer: Peer, guard: Guard, ledger: Ledger) -> X402Auth:
    return X402Auth(
        signer=Signer.from_key(AGENT_KEY),
        guard=guard,
        ledger=ledger,
        allowances=Allowances({chain_peer.token.address: 1_000_000}),
    )


SIMULATION_FAILED = "invalid_exact_evm_transaction_simulation_failed"


def nonce_used(p: Peer, header: str) -> bool:
    """The EIP-3009 nonce of a payment header is spent onchain (so it can never pay again)."""
    auth = json.loads(base64.b64decode(header))["payload"]["authorization"]
    nonce = bytes.fromhex(auth["nonce"][2:])
    return bool(p.token.functions.authorizationState(auth["from"], nonce).call())


def assert_settled_onchain(p: Peer, response: httpx.Response, before: tuple[int, int]) -> str:
    r = receipt(response)
    assert r is not None and not r.pending and r.amount == peer.PRICE
    tx = p.w3.eth.get_transaction_receipt(r.transaction)  # type: ignore[arg-type]
    assert tx["status"] == 1 and tx["to"] == p.token.address
    assert (p.balance(p.agent), p.balance(PAYEE)) == (
        before[0] - peer.PRICE,
        before[1] + peer.PRICE,
    )
    return r.reservation_id


def test_v2_payment_settles_onchain(chain_peer: Peer, auth: X402Auth, ledger: Ledger) -> None:
    before = (chain_peer.balance(chain_peer.agent), chain_peer.balance(PAYEE))
    sent: list[str | None] = []
    hook = {"request": [lambda r: sent.append(r.headers.get("PAYMENT-SIGNATURE"))]}
    with auth.client(event_hooks=hook) as http:
        response = http.get(chain_peer.url + "/paid")
    assert response.status_code == 200 and response.json() == {"data": "paid content"}
    assert sent[0] is None and sent[1] is not None and len(sent) == 2
    reservation = ledger.get(assert_settled_onchain(chain_peer, response, before))
    assert (reservation.state, reservation.amount) == ("committed", peer.PRICE)

    # The exact header the client sent, replayed by anyone: the peer refuses it, nothing moves.
    after = (chain_peer.balance(chain_peer.agent), chain_peer.balance(PAYEE))
    replay = httpx.get(
        chain_peer.url + "/paid",
        headers={"PAYMENT-SIGNATURE": sent[1]},
    )
    assert replay.status_code == 402
    # x402 maps only USDC's revert *string* to `…_nonce_already_used`; the local token reverts
    # with the custom error AuthorizationAlreadyUsed, which x402 reports as a failed simulation.
    assert parse_v2_header(replay.headers["PAYMENT-REQUIRED"]).error == SIMULATION_FAILED
    assert nonce_used(chain_peer, sent[1])
    assert (chain_peer.balance(chain_peer.agent), chain_peer.balance(PAYEE)) == after


def test_v1_payment_settles_onchain(chain_peer: Peer, auth: X402Auth) -> None:
    before = (chain_peer.balance(chain_peer.agent), chain_peer.balance(PAYEE))
    sent: list[str | None] = []
    hook = {"request": [lambda r: sent.append(r.headers.get("X-PAYMENT"))]}
    with auth.client(event_hooks=hook) as http:
        response = http.get(chain_peer.url + "/v1/paid")
    assert response.status_code == 200
    assert sent[0] is None and sent[1] is not None and len(sent) == 2
    assert_settled_onchain(chain_peer, response, before)
    r = receipt(response)
    assert r is not None and r.x402_version == 1 and r.network == "base"
    after = (chain_peer.balance(chain_peer.agent), chain_peer.balance(PAYEE))
    replay = httpx.get(chain_peer.url + "/v1/paid", headers={"X-PAYMENT": sent[1]})
    assert replay.status_code == 402
    assert replay.json()["error"] == SIMULATION_FAILED and nonce_used(chain_peer, sent[1])
    assert (chain_peer.balance(chain_peer.agent), chain_peer.balance(PAYEE)) == after


async def test_async_v2_payment_with_payment_identifier(
    chain_peer: Peer, network: ReferenceNetwork, ledger: Ledger
) -> None:
    before = (chain_peer.balance(chain_peer.agent), chain_peer.balance(PAYEE))
    async with connect_async(network, POLICY_CLIENT) as guard:
        auth = X402Auth(
            signer=Signer.from_key(AGENT_KEY), guard=guard, ledger=ledger,
            allowances=Allowances({chain_peer.token.address: 1_000_000}),
        )  # fmt: skip
        async with auth.async_client() as http:
            response = await http.get(chain_peer.url + "/paid-idempotent")
    assert response.status_code == 200
    assert_settled_onchain(chain_peer, response, before)
    r = receipt(response)
    assert r is not None and r.payment_id is not None and r.payment_id.startswith("pay_")


def test_policy_denial_against_the_real_peer_moves_nothing(
    chain_peer: Peer, network: ReferenceNetwork, ledger: Ledger
) -> None:
    from agentguard import PolicyDenied

    strict = "0x00000000000000000000000000000000000A4022"
    network.register_policy_client(
        strict, "agent_spend", {"max_per_tx": {chain_peer.token.address.lower(): "9999"}}
    )
    before = (chain_peer.balance(chain_peer.agent), chain_peer.balance(PAYEE))
    with connect(network, strict) as guard:
        auth = X402Auth(
            signer=Signer.from_key(AGENT_KEY), guard=guard, ledger=ledger,
            allowances=Allowances({chain_peer.token.address: 1_000_000}),
        )  # fmt: skip
        with auth.client() as http, pytest.raises(PolicyDenied):
            http.get(chain_peer.url + "/paid")
    assert (chain_peer.balance(chain_peer.agent), chain_peer.balance(PAYEE)) == before


# -- the optional hook for users of x402's own client -----------------------------------------


def official_client(token: str, hook: Any) -> Any:
    from eth_account import Account
    from x402 import x402Client
    from x402.mechanisms.evm import EthAccountSigner
    from x402.mechanisms.evm.exact import register_exact_evm_client

    client = x402Client()
    register_exact_evm_client(client, EthAccountSigner(Account.from_key(AGENT_KEY)))
    client.set_spend_controls(
        {
            "allowed_assets": [
                {"network": "eip155:8453", "asset": token, "max_amount_per_payment": "1000000"}
            ]
        }
    )
    client.on_before_payment_creation(hook)
    return client


async def test_official_client_with_the_hook_pays_when_allowed(
    chain_peer: Peer, network: ReferenceNetwork
) -> None:
    from x402.http.clients.httpx import x402HttpxClient

    from agentguard.x402.official_hook import authorization_hook

    before = (chain_peer.balance(chain_peer.agent), chain_peer.balance(PAYEE))
    async with connect_async(network, POLICY_CLIENT) as guard:
        hook = authorization_hook(guard, payer=chain_peer.agent)
        async with x402HttpxClient(official_client(chain_peer.token.address, hook)) as http:
            response = await http.get(chain_peer.url + "/paid")
    assert response.status_code == 200
    assert (chain_peer.balance(chain_peer.agent), chain_peer.balance(PAYEE)) == (
        before[0] - peer.PRICE, before[1] + peer.PRICE,
    )  # fmt: skip
    assert len(hook.attestations) == 1  # type: ignore[attr-defined]


async def test_official_client_with_the_hook_aborts_when_denied(
    chain_peer: Peer, network: ReferenceNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eth_account.signers.local import LocalAccount
    from x402.http.clients.httpx import PaymentError, x402HttpxClient

    from agentguard.x402.official_hook import authorization_hook

    signatures: list[str] = []
    original = LocalAccount.sign_typed_data
    monkeypatch.setattr(
        LocalAccount, "sign_typed_data",
        lambda self, *a, **k: signatures.append("sig") or original(self, *a, **k),
    )  # fmt: skip
    strict = "0x00000000000000000000000000000000000A4023"
    network.register_policy_client(strict, "agent_spend", {"allowed_recipients": [OWNER.address]})
    before = (chain_peer.balance(chain_peer.agent), chain_peer.balance(PAYEE))
    async with connect_async(network, strict) as guard:
        hook = authorization_hook(guard, payer=chain_peer.agent)
        async with x402HttpxClient(official_client(chain_peer.token.address, hook)) as http:
            with pytest.raises(PaymentError, match=r"(?i)aborted.*polic"):
                await http.get(chain_peer.url + "/paid")
    assert signatures == []
    assert (chain_peer.balance(chain_peer.agent), chain_peer.balance(PAYEE)) == before


# -- reconciling what stayed counted ----------------------------------------------------------


def test_rejected_payment_stays_counted_until_the_chain_says_it_cannot_land(
    chain_peer: Peer, guard: Guard, ledger: Ledger, signing_spy: Any
) -> None:
    from agentguard._exceptions import PaymentRejected
    from agentguard.x402 import resolver

    broke = Signer.from_key("0x" + "a8" * 32)  # holds no tokens: the peer refuses the payment
    auth = X402Auth(
        signer=broke, guard=guard, ledger=ledger,
        allowances=Allowances({chain_peer.token.address: 1_000_000}),
    )  # fmt: skip
    with auth.client() as http, pytest.raises(PaymentRejected) as info:
        http.get(chain_peer.url + "/paid")
    assert info.value.reason == SIMULATION_FAILED
    assert signing_spy.calls == ["sign_typed_data"]  # one signature, no second attempt
    reservation_id = info.value.reservation_id or ""
    assert ledger.get(reservation_id).state == "signed"

    assert ledger.recover(resolver(chain_peer.w3)).unknown  # still valid: could still land
    assert ledger.get(reservation_id).state == "signed"
    later = resolver(chain_peer.w3, clock=lambda: 4_000_000_000.0)  # past validBefore
    assert ledger.recover(later).unknown  # on our clock only: the chain may still settle it
    with chain_time_ahead(chain_peer.w3):
        report = ledger.recover(later)
    assert [r.id for r in report.released] == [reservation_id]
    assert ledger.get(reservation_id).amount == 0


def test_resolver_sees_a_settled_payment_as_committed(
    chain_peer: Peer, auth: X402Auth, ledger: Ledger
) -> None:
    from dataclasses import replace

    from agentguard.x402 import resolver

    with auth.client() as http:
        response = http.get(chain_peer.url + "/paid")
    r = receipt(response)
    assert r is not None
    settled = ledger.get(r.reservation_id)
    assert resolver(chain_peer.w3)(replace(settled, state="signed")) == "committed"
    unspent = r.reference.replace(r.reference.split(":")[4], "0x" + "00" * 32)
    assert resolver(chain_peer.w3)(replace(settled, reference=unspent)) == "unknown"
    assert resolver(chain_peer.w3)(replace(settled, reference="0xabc:7")) == "unknown"
