"""The adapter against a server that behaves as OpenGradient's gateway, point by point (issue
13: bearer header, session end, charges, data-settlement hash, unknown models), on a real
anvil chain with the reference authorization network. Each test says how today's adapter
(before this change) failed it. Servers with special settings run in-process (``serve``)
with their own facilitator account."""

# ruff: noqa: F811 - pytest fixtures imported from test_og_inference are parameters here

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from agentguard_opengradient import (
    PLACEHOLDER_API_KEY,
    OpenGradientClient,
    ensure_permit2_approval,
)
from agentguard_opengradient.server import ServerConfig, serve
from conftest import AGENT, Chain
from eth_utils.crypto import keccak
from test_og_inference import (  # noqa: F401 - fixtures
    APPROVAL,
    INPUT_PRICE,
    MODEL,
    OUTPUT_PRICE,
    SESSION_CAP,
    Server,
    chain,
    charge,
    make_auth,
    network,
    pem,
    policies,
    server,
    wallet,
)

from agentguard import PaidRequestRefused, PaymentRequiredError, UnknownModel
from agentguard.chain import DEV_ACCOUNTS
from agentguard.ledger import Ledger
from agentguard.network.launcher import ReferenceNetwork
from agentguard.testing import SigningSpy
from agentguard.x402 import resolver

OWN_FACILITATOR = DEV_ACCOUNTS[6]
PAYEE = DEV_ACCOUNTS[3]
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def approved(chain: Chain, network: ReferenceNetwork, policies: None) -> None:
    """Permit2's allowance topped up (settlements use it up), through the guarded wallet."""
    ensure_permit2_approval(
        wallet(chain, network), chain.opg.address, APPROVAL, APPROVAL, web3=chain.w3
    )


@contextmanager
def local(chain: Chain, server: Server, **options: Any) -> Iterator[str]:
    """An in-process server with ``options`` (same enclave key as the module's server)."""
    options = {"input_price": INPUT_PRICE, "output_price": OUTPUT_PRICE, **options}
    config = ServerConfig(
        rpc_url=chain.anvil.url,
        asset=chain.opg.address,
        pay_to=PAYEE.address,
        facilitator_key=OWN_FACILITATOR.private_key,
        signing_key=server.key,
        **options,
    )
    with serve(config) as url:
        yield url


def status(url: str, session: str) -> dict[str, Any]:
    return httpx.get(f"{url}/x402/sessions/{session}", timeout=5).json()  # type: ignore[no-any-return]


def wait_for(
    url: str, session: str, states: tuple[str, ...], timeout: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = status(url, session)
        if found["status"] in states:
            return found
        time.sleep(0.05)
    pytest.fail(f"session {session} never reached {states}")


def typed(spy: SigningSpy) -> int:
    """The agent's Permit2 signatures (an in-process server's facilitator signs transactions)."""
    return spy.calls.count("sign_typed_data")


# -- 1. the bearer header -----------------------------------------------------------------------


def test_every_request_carries_the_bearer_token(
    approved: None, chain: Chain, network: ReferenceNetwork, server: Server
) -> None:
    """Today's adapter sent no ``Authorization``: the gateway took the payment, then answered
    401 to every call."""
    seen: list[httpx.Headers] = []
    transport = httpx.HTTPTransport()

    class Spy(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(request.headers)
            return transport.handle_request(request)

    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        with OpenGradientClient(
            server.url, auth, tee_signing_key=pem(server.key), transport=Spy()
        ) as og:
            result = og.chat(MODEL, HELLO)
        auth.close()
    assert result.proof is not None
    assert {h["authorization"] for h in seen} == {f"Bearer {PLACEHOLDER_API_KEY}"}
    assert len(seen) == 2  # the 402, then the paid request


def test_a_refusal_after_payment_stays_counted(
    approved: None, chain: Chain, network: ReferenceNetwork, server: Server, signing_spy: SigningSpy
) -> None:
    """A 401 to a paid request (here: a gateway that wants another token) is an unknown payment
    outcome: ``PaidRequestRefused``, the signed maximum counted, nothing signed again. Today's
    adapter raised a plain ``ExecutionError`` and callers could take the payment as lost."""
    with local(chain, server, bearer_token="the-right-one") as url, Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        with OpenGradientClient(url, auth, api_key="a-wrong-one") as og:
            with pytest.raises(PaidRequestRefused) as info:
                og.chat(MODEL, HELLO)
            assert info.value.status == 401 and "signed payment" in info.value.message
            with pytest.raises(PaidRequestRefused):  # it rides nothing: another payment, refused
                og.chat(MODEL, HELLO)
        assert typed(signing_spy) == 2  # one per paid request, no retries
        usage = ledger.usage(AGENT.address, 3600)
        assert usage.spent == {chain.opg.address.lower(): 2 * SESSION_CAP}
        report = ledger.recover(resolver(chain.w3))  # unsettled, deadline ahead: still counted
        assert not report.committed and not report.released
        auth.close()


def test_the_server_checks_payment_before_the_bearer(
    approved: None, chain: Chain, network: ReferenceNetwork, server: Server
) -> None:
    """As the gateway: without the header, an unpaid request is a 402 and a paid one a 401 that
    still opened a session (the payment middleware wraps the application)."""
    unpaid = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "gpt-4.1"})
    assert unpaid.status_code == 402 and "PAYMENT-REQUIRED" in unpaid.headers
    with Ledger() as ledger, make_auth(network, chain, ledger).client() as http:
        paid = http.post(f"{server.url}/v1/chat/completions", json={"model": "gpt-4.1"})
    assert paid.status_code == 401 and paid.request.headers.get("PAYMENT-SIGNATURE")
    assert status(server.url, paid.headers["X-Upto-Session"])["charged"] == "0"


# -- 2. session end -----------------------------------------------------------------------------


def test_a_used_up_session_is_dropped_and_paid_afresh_once(
    approved: None, chain: Chain, network: ReferenceNetwork, server: Server, signing_spy: SigningSpy
) -> None:
    """The gateway answers a request riding a used-up session with a bare 402 (no
    ``PAYMENT-REQUIRED``); the client drops the session and sends again without it, once.
    Today's adapter raised ``PaymentRequiredError``."""
    expensive = SESSION_CAP  # one answer uses the whole cap
    with local(chain, server, input_price=expensive, idle_timeout=3600) as url, Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        with OpenGradientClient(url, auth, tee_signing_key=pem(server.key)) as og:
            first = og.chat(MODEL, HELLO)
            assert first.cost is not None and first.cost.cost_opg > SESSION_CAP
            second = og.chat(MODEL, HELLO)
        assert first.receipt and second.receipt
        assert first.receipt.session != second.receipt.session
        assert first.receipt.reservation_id != second.receipt.reservation_id
        assert typed(signing_spy) == 2
        assert status(url, first.receipt.session or "")["charged"] == str(SESSION_CAP)  # saturated
        auth.close()


async def test_racing_calls_on_an_ended_session_open_one_new_session(
    approved: None, chain: Chain, network: ReferenceNetwork, server: Server, signing_spy: SigningSpy
) -> None:
    """Race: three calls ride a used-up session at once; each gets the bare 402 and re-sends,
    and ``X402Auth`` lets one of them pay the new session while the others wait and ride it:
    two signatures in all, not four."""
    import asyncio

    price = SESSION_CAP // 40  # a 40-word question uses the session up; two words do not
    with local(chain, server, input_price=price, idle_timeout=3600) as url, Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        async with OpenGradientClient(url, auth, tee_signing_key=pem(server.key)) as og:
            first = await og.achat(MODEL, [{"role": "user", "content": "word " * 40}])
            racing = await asyncio.gather(*(og.achat(MODEL, HELLO) for _ in range(3)))
        await auth.aclose()
    sessions = {r.receipt.session for r in racing if r.receipt}
    assert first.receipt and first.receipt.session not in sessions and len(sessions) == 1
    assert typed(signing_spy) == 2


def test_an_idle_session_ends_and_the_next_call_pays_afresh(
    approved: None, chain: Chain, network: ReferenceNetwork, server: Server
) -> None:
    """After the idle timeout the gateway settles the session; the next call rode it into a
    bare 402. Today's adapter raised ``PaymentRequiredError``."""
    with local(chain, server, idle_timeout=0.5) as url, Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        with OpenGradientClient(url, auth, tee_signing_key=pem(server.key)) as og:
            first = og.chat(MODEL, HELLO)
            assert first.receipt and first.receipt.session
            wait_for(url, first.receipt.session, ("settled",))
            second = og.chat(MODEL, HELLO)
        assert second.receipt and second.receipt.session != first.receipt.session
        auth.close()


def test_sessions_are_bound_to_their_route(
    approved: None, chain: Chain, network: ReferenceNetwork, server: Server
) -> None:
    """A chat session id presented on the completions route is a bare 402 (og-x402 binds a
    session to method and path)."""
    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        with OpenGradientClient(server.url, auth) as og:
            result = og.chat(MODEL, HELLO)
        auth.close()
    assert result.receipt and result.receipt.session
    answer = httpx.post(
        f"{server.url}/v1/completions",
        json={"model": "gpt-4.1", "prompt": "hi"},
        headers={"X-Upto-Session": result.receipt.session, "Authorization": "Bearer x"},
    )
    assert answer.status_code == 402 and answer.json() == {"error": "Session expired or exhausted"}
    assert "PAYMENT-REQUIRED" not in answer.headers


def test_a_server_ending_every_session_costs_at_most_one_new_signature(
    approved: None, chain: Chain, network: ReferenceNetwork, server: Server, signing_spy: SigningSpy
) -> None:
    """A hostile gateway that answers a bare 402 to the session and to the fresh payment: the
    client re-sends once, pays once, and stops (``PaymentRejected``-style refusal, counted);
    no loop of signatures."""
    from agentguard import PaymentRejected

    calls = {"n": 0}

    class Hostile(httpx.BaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.HTTPTransport()

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            calls["n"] += 1
            riding = "X-Upto-Session" in request.headers
            paying = "PAYMENT-SIGNATURE" in request.headers
            if (riding or paying) and calls["n"] > 2:
                return httpx.Response(402, json={"error": "Session expired or exhausted"})
            return self.inner.handle_request(request)

    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        with OpenGradientClient(server.url, auth, transport=Hostile()) as og:
            og.chat(MODEL, HELLO)  # 402, paid: a session
            with pytest.raises(PaymentRejected):
                og.chat(MODEL, HELLO)  # rides: bare 402; fresh 402; paid: bare 402 → stop
        assert signing_spy.calls == ["sign_typed_data"] * 2
        assert calls["n"] == 5
        assert ledger.usage(AGENT.address, 3600).spent == {
            chain.opg.address.lower(): 2 * SESSION_CAP
        }
        auth.close()


# -- 3. charges ---------------------------------------------------------------------------------


def test_the_charge_is_the_body_cost_block_and_the_maximum_counts_until_settled(
    approved: None, chain: Chain, network: ReferenceNetwork, server: Server
) -> None:
    """No charge header and no ``PAYMENT-RESPONSE`` on session answers: the report is the body's
    ``opengradient`` block; the ledger counts the signed maximum until the facilitator's job
    settled onchain, then commits what the chain shows. Today's adapter reported no charge
    (it read ``X-Upto-Charge``)."""
    with Ledger() as ledger:
        with local(chain, server, idle_timeout=3600) as url:
            auth = make_auth(network, chain, ledger)
            with OpenGradientClient(url, auth, tee_signing_key=pem(server.key)) as og:
                results = [
                    og.chat(MODEL, [{"role": "user", "content": f"q {i}"}]) for i in range(2)
                ]
            auth.close()
            for r in results:
                assert r.cost is not None and r.receipt is not None
                assert (
                    r.receipt.reported_charge == r.cost.cost_opg == charge("q 0", "You said: q 0")
                )
                assert r.receipt.authorized == SESSION_CAP
                assert r.cost.opg_price_usd > 0 and r.cost.cost_usd > 0
            reservation = results[0].receipt.reservation_id  # type: ignore[union-attr]
            report = ledger.recover(resolver(chain.w3))  # not settled yet: stays counted
            assert not report.committed and ledger.get(reservation).state == "signed"
        # the server stopped: it settled the session through the facilitator's job
        report = ledger.recover(resolver(chain.w3))
        (closed,) = report.committed
        assert closed.id == reservation
        charged = sum(r.cost.cost_opg for r in results if r.cost)
        assert (closed.amount, closed.reserved) == (charged, SESSION_CAP)


def test_session_answers_carry_no_charge_header_and_proof_hashes_have_no_0x(
    approved: None, chain: Chain, network: ReferenceNetwork, server: Server
) -> None:
    with (
        Ledger() as ledger,
        make_auth(network, chain, ledger).client(headers={"Authorization": "Bearer x"}) as http,
    ):
        body = {"model": "gpt-4.1", "prompt": "one two three", "max_tokens": 2}
        answers = [http.post(f"{server.url}/v1/completions", json=body) for _ in range(2)]
    for answer in answers:
        assert answer.status_code == 200
        assert "X-Upto-Charge" not in answer.headers and "PAYMENT-RESPONSE" not in answer.headers
        document = answer.json()
        assert re.fullmatch(r"[0-9a-f]{64}", document["tee_request_hash"])
        assert re.fullmatch(r"[0-9a-f]{64}", document["tee_output_hash"])
        assert document["choices"][0]["finish_reason"] == "stop"  # cut short: still "stop"
        assert set(document["opengradient"]) == {"cost_opg", "cost_usd", "opg_price_usd"}
        assert all(isinstance(v, str) for v in document["opengradient"].values())
    job = status(server.url, answers[0].headers["X-Upto-Session"])
    assert job["status"] == "open" and job["charged"] == str(
        2 * charge("one two three", "Echo: one")
    )


def test_the_server_hashes_the_gateway_canonical_form(
    approved: None, chain: Chain, network: ReferenceNetwork, server: Server
) -> None:
    """The request hash is keccak of the gateway's canonical form, written out here by hand:
    list-form user content reduced to text plus attachment stubs, the ``function`` role kept,
    ``web_search`` included; a ``developer`` message is refused as by the gateway."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "terse"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "read this"},
                {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:…"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {"role": "function", "content": "42", "name": "answer"},
    ]
    body = {"model": "gpt-4.1", "messages": messages, "temperature": 0, "web_search": True}
    expected = {
        "model": "gpt-4.1",
        "temperature": 0.0,
        "messages": [
            {"role": "system", "content": "terse"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "read this"},
                    {"type": "file", "filename": "a.pdf"},
                    {"type": "image_url"},
                ],
            },
            {"role": "function", "content": "42", "name": "answer"},
        ],
        "web_search": True,
    }
    with (
        Ledger() as ledger,
        make_auth(network, chain, ledger).client(headers={"Authorization": "Bearer x"}) as http,
    ):
        answer = http.post(f"{server.url}/v1/chat/completions", json=body)
        developer = http.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "gpt-4.1", "messages": [{"role": "developer", "content": "x"}]},
        )
    assert answer.status_code == 200, answer.text
    digest = keccak(json.dumps(expected, sort_keys=True).encode()).hex()
    assert answer.json()["tee_request_hash"] == digest
    assert developer.status_code == 500


# -- 5. the data-settlement hash ----------------------------------------------------------------


def test_x_settlement_tx_hash_is_the_data_settlement_not_the_payment(
    approved: None, chain: Chain, network: ReferenceNetwork, server: Server
) -> None:
    """``x-settlement-tx-hash`` is surfaced as ``data_settlement_tx_hash`` and nothing about the
    payment is read from it. Today's adapter called it ``settlement_tx_hash``."""
    data_tx = "0x" + "ab" * 32

    class Tagging(httpx.BaseTransport):
        inner = httpx.HTTPTransport()

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            answer = self.inner.handle_request(request)
            if answer.status_code == 200:
                answer.headers["x-settlement-tx-hash"] = data_tx
            return answer

    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        with OpenGradientClient(server.url, auth, transport=Tagging()) as og:
            result = og.chat(MODEL, HELLO)
        auth.close()
    assert result.data_settlement_tx_hash == data_tx
    assert result.receipt is not None and result.receipt.transaction == ""
    assert not hasattr(result, "settlement_tx_hash")


# -- 6. unknown models --------------------------------------------------------------------------


def test_an_unknown_model_is_refused_before_anything_is_signed(
    approved: None, chain: Chain, network: ReferenceNetwork, server: Server, signing_spy: SigningSpy
) -> None:
    """The gateway refuses an unknown model only after the payment (400 inside the paid
    session). Today's adapter paid first; now nothing is sent or signed."""
    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        with OpenGradientClient(server.url, auth) as og:
            with pytest.raises(UnknownModel, match="gpt-9"):
                og.chat("openai/gpt-9", HELLO)
            with pytest.raises(UnknownModel):
                og.completion("GPT-9 ", "hi")
        assert signing_spy.calls == [] and ledger.usage(AGENT.address, 3600).count == 0
        # what the check saves: past it, the gateway takes the payment, then refuses the model
        og = OpenGradientClient(server.url, auth, extra_models=["gpt-9"])
        with og, pytest.raises(PaidRequestRefused) as info:
            og.chat("openai/gpt-9", HELLO)
        assert info.value.status == 400 and signing_spy.calls == ["sign_typed_data"]
        auth.close()


def test_the_model_list_can_be_extended_or_replaced(
    approved: None, chain: Chain, network: ReferenceNetwork, server: Server
) -> None:
    models = frozenset({"house-model"})
    with local(chain, server, models=models) as url, Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        with OpenGradientClient(url, auth, models=["house-model"]) as og:
            assert og.chat("house/house-model", HELLO).text == "You said: hello there"
            with pytest.raises(UnknownModel):
                og.chat(MODEL, HELLO)  # replaced: gpt-4.1 is no longer on the list
        auth.close()


def test_payment_required_errors_other_than_a_session_end_are_not_retried(
    approved: None, chain: Chain, network: ReferenceNetwork, server: Server
) -> None:
    """A bare 402 to a request that rode no session is refused at once (no re-send)."""
    sent: list[httpx.Request] = []

    def bare(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(402, json={"error": "nope"})

    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        og = OpenGradientClient(server.url, auth, transport=httpx.MockTransport(bare))
        with og, pytest.raises(PaymentRequiredError):
            og.chat(MODEL, HELLO)
    assert len(sent) == 1


def test_list_content_and_the_function_role_verify_as_the_gateway_hashes_them(
    approved: None, chain: Chain, network: ReferenceNetwork, server: Server
) -> None:
    """The gateway hashes list-form user content as text plus attachment stubs and accepts the
    ``function`` role; an honest answer to such a request must verify."""
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": "hello there"}]},
        {"role": "function", "content": "42", "name": "answer"},
        {"role": "user", "content": "and now?"},
    ]
    with Ledger() as ledger:
        auth = make_auth(network, chain, ledger)
        with OpenGradientClient(server.url, auth, tee_signing_key=pem(server.key)) as og:
            try:
                assert og.chat(MODEL, messages).proof is not None
            finally:
                auth.close()
