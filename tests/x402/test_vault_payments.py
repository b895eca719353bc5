"""X402Auth paying from an ``AgentVault``: the chain, not just the SDK, enforces each payment.

Real parts throughout: anvil (chain id 8453) with ``UsdCoin`` and a vault from the shipped
factory, guarded by the reference network's operators with the bundled ``agent_spend`` policy
registered for the vault; x402's own FastAPI middleware and facilitator settle the payments.
Balances are read back from the chain.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD
from x402 import x402ResourceServer
from x402.http.middleware.fastapi import PaymentMiddlewareASGI
from x402.mechanisms.evm.exact import ExactEvmServerScheme

from agentguard import Guard, PolicyDenied, Signer
from agentguard._exceptions import IntentMismatch, PaymentRejected, PaymentRequiredError
from agentguard._intent import PaymentIntent
from agentguard.chain import (
    DEV_ACCOUNTS,
    Anvil,
    deploy,
    load_artifact,
    transact,
    transfer_authorization_digest,
)
from agentguard.ledger import Ledger
from agentguard.network.launcher import ReferenceNetwork
from agentguard.testing import SigningSpy
from agentguard.x402 import Allowances, X402Auth, receipt, resolver
from agentguard.x402._wire import Requirement, parse_v2_header
from agentguard.x402.exact import client as exact_client

from . import peer
from .conftest import chain_time_ahead, connect
from .fakes import FakeServer, upto_requirement

pytestmark = pytest.mark.integration

OWNER = DEV_ACCOUNTS[0]
AGENT = DEV_ACCOUNTS[1]
PAYEE = DEV_ACCOUNTS[3].address
FACILITATOR = DEV_ACCOUNTS[4]
STRANGER = DEV_ACCOUNTS[5].address
PRICE = peer.PRICE
DEARER = 2 * PRICE
VAULT_FUNDS = 100_000_000
# x402 simulates the token's transferWithAuthorization; the token asks the vault (ERC-1271)
# and reverts with InvalidSignature(vault), which x402 reports as a failed simulation.
SIMULATION_FAILED = "invalid_exact_evm_transaction_simulation_failed"
EXTRA = {"name": "USD Coin", "version": "2"}
MAGIC, INVALID = bytes.fromhex("1626ba7e"), bytes.fromhex("ffffffff")


@dataclass
class Shop:
    w3: Web3
    token: Contract
    vault: Contract
    url: str

    def vault_verdict(self, header: str, **override: int) -> bytes:
        """What the vault's ERC-1271 check says about a payment header when the token asks, as
        it does when settling (``override``: change authorization fields, as a tamperer would)."""
        document = json.loads(base64.b64decode(header))
        fields = {**document["payload"]["authorization"], **override}
        digest = transfer_authorization_digest(
            token=self.token.address, chain_id=8453, from_=fields["from"], to=fields["to"],
            value=int(fields["value"]), valid_after=int(fields["validAfter"]),
            valid_before=int(fields["validBefore"]), nonce=bytes.fromhex(fields["nonce"][2:]),
        )  # fmt: skip
        blob = bytes.fromhex(document["payload"]["signature"][2:])
        check = self.vault.functions.isValidSignature(digest, blob)
        return bytes(check.call({"from": self.token.address}))

    def balances(self) -> tuple[int, int, int]:
        """(vault, payee, stranger) USD Coin balances, read from the chain."""
        of = self.token.functions.balanceOf
        return (
            int(of(self.vault.address).call()),
            int(of(PAYEE).call()),
            int(of(STRANGER).call()),
        )


def shop_app(network: ReferenceNetwork, token: str, rpc_url: str) -> FastAPI:
    """x402's own middleware: ``/paid`` at PRICE, ``/dearer`` at twice that (both to PAYEE),
    ``/stranger`` at PRICE to a payee the vault's policy does not allow."""
    server = x402ResourceServer(peer.facilitator(FACILITATOR.private_key, rpc_url))
    server.register("eip155:8453", ExactEvmServerScheme())
    extra = EXTRA

    def option(amount: int, pay_to: str) -> dict[str, Any]:
        price = {"amount": str(amount), "asset": token, "extra": extra}
        return {"scheme": "exact", "payTo": pay_to, "price": price, "network": "eip155:8453"}

    routes = {
        "GET /paid": {"accepts": option(PRICE, PAYEE), "description": "paid content"},
        "GET /dearer": {"accepts": option(DEARER, PAYEE), "description": "paid content"},
        "GET /stranger": {"accepts": option(PRICE, STRANGER), "description": "paid content"},
    }
    application = FastAPI()
    application.add_middleware(PaymentMiddlewareASGI, routes=routes, server=server)

    @application.get("/{path}")
    async def paid(path: str) -> dict[str, str]:
        return {"data": f"paid {path}"}

    return application


@pytest.fixture(scope="module")
def shop(network: ReferenceNetwork) -> Iterator[Shop]:
    with Anvil() as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        token = deploy(w3, "UsdCoin", sender=OWNER.address)
        factory = deploy(w3, "AgentVaultFactory", sender=OWNER.address)
        created = transact(
            w3,
            factory.functions.createVault(
                OWNER.address, AGENT.address, network.operator_addresses, 2, b"\x01" * 32,
                b"x402-vault".ljust(32, b"\0"),
            ),
            sender=OWNER.address,
        )  # fmt: skip
        (event,) = factory.events.VaultCreated().process_receipt(created, errors=DISCARD)
        vault = w3.eth.contract(address=event["args"]["vault"], abi=load_artifact("AgentVault").abi)
        policy_id = network.register_policy_client(
            vault.address,
            "agent_spend",
            {"max_per_tx": {token.address.lower(): "1000000"}, "allowed_recipients": [PAYEE]},
        )
        transact(
            w3, vault.functions.setPolicyId(bytes.fromhex(policy_id[2:])), sender=OWNER.address
        )
        transact(w3, token.functions.mint(vault.address, VAULT_FUNDS), sender=OWNER.address)
        with peer.serve(shop_app(network, token.address, anvil.url)) as url:
            yield Shop(w3, token, vault, url)


@pytest.fixture
def guard(network: ReferenceNetwork, shop: Shop) -> Iterator[Guard]:
    with connect(network, shop.vault.address) as g:
        yield g


@pytest.fixture
def auth(shop: Shop, guard: Guard, ledger: Ledger) -> X402Auth:
    return X402Auth(
        signer=Signer.from_key(AGENT.private_key),
        guard=guard,
        ledger=ledger,
        allowances=Allowances({shop.token.address: 1_000_000}),
        vault=shop.vault.address,
    )


def sent_headers() -> tuple[list[str | None], dict[str, Any]]:
    sent: list[str | None] = []
    return sent, {"request": [lambda r: sent.append(r.headers.get("PAYMENT-SIGNATURE"))]}


def authorization(header: str) -> dict[str, Any]:
    return dict(json.loads(base64.b64decode(header))["payload"]["authorization"])


def test_vault_pays_and_the_replayed_header_moves_nothing(
    shop: Shop, auth: X402Auth, ledger: Ledger
) -> None:
    before = shop.balances()
    sent, hooks = sent_headers()
    with auth.client(event_hooks=hooks) as http:
        response = http.get(shop.url + "/paid")
    assert response.status_code == 200 and response.json() == {"data": "paid paid"}
    vault, payee, stranger = before
    assert shop.balances() == (vault - PRICE, payee + PRICE, stranger)

    r = receipt(response)
    assert r is not None and r.payer == shop.vault.address and r.amount == PRICE
    tx = shop.w3.eth.get_transaction_receipt(r.transaction)  # type: ignore[arg-type]
    assert tx["status"] == 1 and tx["to"] == shop.token.address
    reservation = ledger.get(r.reservation_id)
    assert (reservation.state, reservation.amount) == ("committed", PRICE)
    # What went on the wire: from the vault, nonce = the attested task id, an ERC-1271 blob.
    assert len(sent) == 2 and sent[0] is None and sent[1] is not None
    auth_fields = authorization(sent[1])
    assert auth_fields["from"] == shop.vault.address
    assert auth_fields["nonce"] == reservation.task_id
    nonce = bytes.fromhex(auth_fields["nonce"][2:])
    assert shop.vault.functions.taskUsed(nonce).call() is False  # paid, not executed
    assert shop.token.functions.authorizationState(shop.vault.address, nonce).call()
    assert resolver(shop.w3)(reservation) == "committed"

    after = shop.balances()
    replay = httpx.get(shop.url + "/paid", headers={"PAYMENT-SIGNATURE": sent[1]})
    assert replay.status_code == 402
    # the token refuses the spent nonce (AuthorizationAlreadyUsed) in x402's simulation
    assert parse_v2_header(replay.headers["PAYMENT-REQUIRED"]).error == SIMULATION_FAILED
    assert shop.balances() == after


def test_policy_denial_signs_nothing(
    shop: Shop, auth: X402Auth, ledger: Ledger, signing_spy: SigningSpy
) -> None:
    before = shop.balances()
    with auth.client() as http, pytest.raises(PolicyDenied):
        http.get(shop.url + "/stranger")
    assert signing_spy.calls == []
    assert shop.balances() == before


class Tamper(httpx.BaseTransport):
    """A man in the middle: raises the signed amount to the ``/dearer`` price and sends it
    there, so the amount matches what that route asks and only the signature can stop it."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.signed: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        header = request.headers.get("PAYMENT-SIGNATURE")
        if header is not None:
            self.signed.append(header)
            document = json.loads(base64.b64decode(header))
            document["payload"]["authorization"]["value"] = str(DEARER)
            document["accepted"]["amount"] = str(DEARER)
            request.headers["PAYMENT-SIGNATURE"] = base64.b64encode(
                json.dumps(document).encode()
            ).decode()
            request.url = request.url.copy_with(path="/dearer")
        return self._inner.handle_request(request)


def test_amount_tampered_after_signing_is_refused_by_the_vault(
    shop: Shop, auth: X402Auth, ledger: Ledger
) -> None:
    before = shop.balances()
    tamper = Tamper()
    with auth.client(transport=tamper) as http, pytest.raises(PaymentRejected) as info:
        http.get(shop.url + "/paid")
    assert info.value.reason == SIMULATION_FAILED
    assert shop.balances() == before
    # The refusal is the vault's: it rejects the tampered amount, not the payment as signed.
    (header,) = tamper.signed
    assert shop.vault_verdict(header, value=DEARER) == INVALID
    assert shop.vault_verdict(header) == MAGIC
    reservation_id = info.value.reservation_id or ""
    assert ledger.get(reservation_id).state == "signed"  # counted until the chain says otherwise


def test_paused_vault_refuses_and_the_payment_stays_counted(
    shop: Shop, auth: X402Auth, ledger: Ledger
) -> None:
    before = shop.balances()
    sent, hooks = sent_headers()
    transact(shop.w3, shop.vault.functions.pause(), sender=OWNER.address)
    try:
        with auth.client(event_hooks=hooks) as http, pytest.raises(PaymentRejected) as info:
            http.get(shop.url + "/paid")
        assert info.value.reason == SIMULATION_FAILED
        assert shop.balances() == before
        header = sent[-1]
        assert header is not None and shop.vault_verdict(header) == INVALID
    finally:
        transact(shop.w3, shop.vault.functions.unpause(), sender=OWNER.address)
    # As documented for any 402 after paying: nothing is signed again and the reservation stays
    # counted. Rightly so: once unpaused, the signed payment could still land until validBefore;
    # only then does the resolver release it.
    assert shop.vault_verdict(header) == MAGIC
    reservation_id = info.value.reservation_id or ""
    assert ledger.get(reservation_id).state == "signed"
    assert ledger.recover(resolver(shop.w3)).unknown
    later = resolver(shop.w3, clock=lambda: 4_000_000_000.0)
    with chain_time_ahead(shop.w3):
        assert [r.id for r in ledger.recover(later).released] == [reservation_id]


def test_upto_from_a_vault_is_refused_before_authorization(
    shop: Shop, guard: Guard, ledger: Ledger, signing_spy: SigningSpy
) -> None:
    server = FakeServer(accepts=[upto_requirement("100000")])
    auth = X402Auth(
        signer=Signer.from_key(AGENT.private_key), guard=guard, ledger=ledger,
        allowances=Allowances({upto_requirement()["asset"]: 1_000_000}),
        vault=shop.vault.address,
    )  # fmt: skip
    refused = pytest.raises(PaymentRequiredError, match=r"vault pays only 'exact'")
    with auth.client(transport=server.transport()) as http, refused:
        http.get("http://shop.test/paid")
    assert signing_spy.calls == [] and server.payments == [] and len(server.requests) == 1


def test_signer_refuses_a_vault_authorization_that_is_not_the_attested_one(
    shop: Shop, guard: Guard, signing_spy: SigningSpy
) -> None:
    intent = PaymentIntent(
        payer=shop.vault.address, scheme="exact", network="eip155:8453",
        asset=shop.token.address, amount=PRICE, pay_to=PAYEE,
    )  # fmt: skip
    verified = guard.authorize(intent)
    requirement = Requirement(
        x402_version=2, scheme="exact", network="eip155:8453", amount=PRICE,
        asset=shop.token.address, pay_to=PAYEE, max_timeout_seconds=60, extra=EXTRA,
        resource=shop.url + "/paid", raw={},
    )  # fmt: skip
    signer = Signer.from_key(AGENT.private_key)
    task = bytes.fromhex(verified.task_id[2:])

    def typed(**message: Any) -> dict[str, Any]:
        data = exact_client.typed_data(
            requirement, shop.vault.address, now=0, valid_before=verified.expires_at, nonce=task
        )
        data["message"].update(message)
        return data

    refusals = {
        "nonce": typed(nonce="0x" + "11" * 32),
        "amount": typed(value=PRICE + 1),
        "payee": typed(to=STRANGER),
        "payer": typed(**{"from": AGENT.address}),
    }
    for field_name, data in refusals.items():
        with pytest.raises(IntentMismatch, match=field_name):
            signer.sign_vault_payment(verified, data, vault=shop.vault.address)
    with pytest.raises(IntentMismatch, match="attested for the vault"):
        signer.sign_vault_payment(verified, typed(), vault=STRANGER)
    assert signing_spy.calls == []
    blob = signer.sign_vault_payment(verified, typed(), vault=shop.vault.address)
    assert signing_spy.calls == ["sign_typed_data"] and len(blob) > 65
