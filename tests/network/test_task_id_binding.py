"""A payment's x402 details are bound into what the operators sign, through the task id.

A real ``Gateway`` and real ``Operator`` objects (``tests/redteam/_s9_net``: only the HTTP hops
are function calls) behind the real sync and async clients. A hostile gateway shows the
operators other x402 details than the client sent: keeping the task id, the operators refuse
(the id does not derive from what they evaluate); re-deriving it, the client refuses (the id
is not the one it asked for). Before the binding the client accepted such an attestation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentguard import PaymentIntent, TransactionIntent, Verifier
from agentguard._attestation import operator_address
from agentguard._exceptions import (
    AuthorizationError,
    GatewayProtocolError,
    IntentError,
    VerificationError,
)
from agentguard._gateway import AsyncNewtonGateway, NewtonGateway
from agentguard._intent import wasm_args_hex
from agentguard._task_id import NO_DETAILS, canonical_x402, details_hash, task_id
from agentguard.network._rpc import RPCError
from agentguard.network.gateway import _core
from tests.network.test_gateway_memory import CLIENT, SHOP, USDC
from tests.redteam._s9_net import KEY, OPERATOR_KEYS, Net, agent
from tests.task_ids import bind

URL = "http://gateway.test/rpc"
OPERATORS = [operator_address(k) for k in OPERATOR_KEYS]


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    n = Net(tmp_path)
    yield n
    n.close()


def payment(index: int = 1, scheme: str = "upto") -> PaymentIntent:
    return PaymentIntent(
        payer=agent(index),
        scheme=scheme,
        network="eip155:8453",
        asset=USDC,
        amount=1_000_000,
        pay_to=SHOP,
        resource="https://shop.test/paid",
    )


def _answer(net: Net, request: httpx.Request, data: bytes) -> httpx.Response:
    return httpx.Response(200, content=data, headers={"content-type": "application/json"})


async def _dispatch(net: Net, request: httpx.Request) -> bytes:
    doc = json.loads(request.content)
    try:
        answer = await net.gateway.dispatch(KEY, doc["id"], doc["method"], doc["params"])
    except RPCError as exc:
        error = {"code": exc.code, "message": exc.message}
        return json.dumps({"jsonrpc": "2.0", "id": doc["id"], "error": error}).encode()
    result = answer.data if hasattr(answer, "data") else json.dumps(answer).encode()
    return (
        b'{"jsonrpc":"2.0","id":' + json.dumps(doc["id"]).encode() + b',"result":' + result + b"}"
    )


class _Sync(httpx.BaseTransport):
    def __init__(self, net: Net) -> None:
        self.net = net

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        return _answer(self.net, request, self.net.run(_dispatch(self.net, request)))


class _Async(httpx.AsyncBaseTransport):
    def __init__(self, net: Net) -> None:
        self.net = net

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        return _answer(self.net, request, await _dispatch(self.net, request))


def verifier() -> Verifier:
    return Verifier(OPERATORS, policy_client=CLIENT, threshold=2)


def authorize(net: Net, intent: PaymentIntent | TransactionIntent, asyncio_client: bool) -> Any:
    """The attestation the real client accepts (sync or async runner), verified."""
    if asyncio_client:

        async def go() -> Any:
            client = AsyncNewtonGateway(URL, transport=_Async(net), policy_client=CLIENT)
            try:
                return await client.authorize(intent)
            finally:
                await client.aclose()

        attestation = net.run(go())
    else:
        with NewtonGateway(URL, transport=_Sync(net), policy_client=CLIENT) as client:
            attestation = client.authorize(intent)
    verifier().verify(attestation, intent)
    return attestation


def _swap_details(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with the payment's scheme shown as ``exact`` (same transfer, same hash)."""
    args = json.loads(bytes.fromhex(params["wasm_args"][2:]))
    args["x402"] = dict(args["x402"], scheme="exact", resource="https://allowlisted.test/")
    return dict(params, wasm_args=wasm_args_hex(args))


@pytest.mark.parametrize("asyncio_client", [False, True], ids=["sync", "async"])
def test_a_gateway_that_re_derives_the_id_for_other_details_is_refused_by_the_client(
    net: Net, monkeypatch: pytest.MonkeyPatch, asyncio_client: bool
) -> None:
    honest = authorize(net, payment(1), asyncio_client)  # the honest gateway's is accepted
    assert honest.decision == "allow"
    real = _core.Gateway._create_task

    async def hostile(self: Any, key: Any, rpc_id: str, params: Any) -> Any:
        return await real(self, key, rpc_id, _swap_details(dict(params)))

    monkeypatch.setattr(_core.Gateway, "_create_task", hostile)
    with pytest.raises(GatewayProtocolError, match="not the one asked for"):
        authorize(net, payment(2), asyncio_client)


@pytest.mark.parametrize("asyncio_client", [False, True], ids=["sync", "async"])
def test_a_gateway_that_keeps_the_id_for_other_details_is_refused_by_the_operators(
    net: Net, monkeypatch: pytest.MonkeyPatch, asyncio_client: bool
) -> None:
    fanout = net.gateway.operators
    real = fanout.ask

    async def hostile(task: Any, task_id: bytes, request_id: str, wasm: bytes, *rest: Any) -> Any:
        shown = json.loads(wasm)
        shown["x402"] = dict(shown["x402"], scheme="exact")
        return await real(task, task_id, request_id, json.dumps(shown).encode(), *rest)

    monkeypatch.setattr(fanout, "ask", hostile)
    with pytest.raises(AuthorizationError) as refused:
        authorize(net, payment(3), asyncio_client)
    assert not isinstance(refused.value, GatewayProtocolError)  # no quorum: nobody signed
    messages = [e.get("message", "") for e in refused.value.operator_errors]  # type: ignore[attr-defined]
    assert messages and all("task_id is not keccak" in m for m in messages)


def test_a_gateway_answer_in_newtons_shape_does_not_skip_the_check(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hostile gateway that drops the ECDSA attestation (Newton's BLS shape) gets nothing an
    ECDSA ``Verifier`` accepts: the trust model is the verifier's, not the answer's shape."""
    real = _core.Gateway._create_task

    async def newtonish(self: Any, key: Any, rpc_id: str, params: Any) -> Any:
        result = dict(await real(self, key, rpc_id, _swap_details(dict(params))))
        result["attestation"] = None
        return result

    monkeypatch.setattr(_core.Gateway, "_create_task", newtonish)
    with pytest.raises(VerificationError, match="newton-bls attestations cannot be verified"):
        authorize(net, payment(4), False)


def test_a_retry_is_the_same_task_and_another_request_another(net: Net) -> None:
    pay = payment(5)
    params = {
        "policy_client": CLIENT,
        "intent": pay.wire(),
        "wasm_args": wasm_args_hex(pay.wasm_args()),
        "timeout": 10,
    }
    first = json.loads(net.create("retry-1", params))
    again = json.loads(net.create("retry-1", params))
    other = json.loads(net.create("retry-2", params))
    assert first["task_id"] == again["task_id"] != other["task_id"]
    details = canonical_x402(pay.wasm_args()["x402"], pay.newton_intent())
    for result, rid in ((first, "retry-1"), (other, "retry-2")):
        assert result["attestation"]["decision"] == "allow"
        assert result["task"]["requestId"] == rid
        assert result["task_id"] == "0x" + task_id(CLIENT, pay.intent_hash, details, rid).hex()


@pytest.mark.parametrize("asyncio_client", [False, True], ids=["sync", "async"])
def test_a_task_without_x402_details_works_end_to_end(net: Net, asyncio_client: bool) -> None:
    intent = TransactionIntent.erc20_transfer(
        sender=agent(6), token=USDC, recipient=SHOP, amount=1_000_000, chain_id=8453
    )
    attestation = authorize(net, intent, asyncio_client)
    assert attestation.decision == "allow"


def test_the_derivation_has_fixed_widths_and_distinguishes_every_part() -> None:
    pay = payment(7)
    details = canonical_x402(pay.wasm_args()["x402"], pay.newton_intent())
    base = task_id(CLIENT, pay.intent_hash, details, "r")
    other = payment(7, scheme="exact")
    changed = [
        task_id(USDC, pay.intent_hash, details, "r"),
        task_id(CLIENT, b"\x01" * 32, details, "r"),
        task_id(
            CLIENT,
            pay.intent_hash,
            canonical_x402(other.wasm_args()["x402"], other.newton_intent()),
            "r",
        ),
        task_id(CLIENT, pay.intent_hash, None, "r"),
        task_id(CLIENT, pay.intent_hash, details, "r2"),
    ]
    assert base not in changed and len(set(changed)) == len(changed)
    assert details_hash(None) == NO_DETAILS != details_hash({})
    # what would be hashed: 32 + 32 + 32 bytes, then the request id, so nothing can shift
    # between members (only the last is variable, and it is the only one)
    for bad in ("", "x" * 201, 7, None, "\ud800"):
        with pytest.raises(IntentError, match="request id"):
            task_id(CLIENT, pay.intent_hash, details, bad)
    for client in ("0x" + "12 " * 13 + "1", CLIENT[2:], CLIENT + "00", 7):
        with pytest.raises(IntentError, match="policy client"):
            task_id(client, pay.intent_hash, details, "r")  # type: ignore[arg-type]


def _x402_request(**override: Any) -> dict[str, Any]:
    """An operator request for a payment (``data.wasm.x402`` set), its task id derived."""
    from tests.network.conftest import PAYEE, TOKEN
    from tests.network.test_operator import request

    body = request(**override)
    pay = PaymentIntent(
        payer=TransactionIntent.from_wire(body["intent"]).from_,
        scheme="upto",
        network="eip155:8453",
        asset=TOKEN,
        amount=int(body["wasm"]["spend"]["amount"]),
        pay_to=PAYEE,
        resource="https://shop.test/paid",
    )
    body["wasm"]["x402"] = canonical_x402(pay.wasm_args()["x402"], pay.newton_intent())
    return bind(body)


def _rebound(body: dict[str, Any], **parts: Any) -> dict[str, Any]:
    """``body``'s task id derived as if from ``parts`` (client, intent hash, x402, request
    id) instead of its own: each a lying gateway's choice."""
    intent = TransactionIntent.from_wire(body["intent"])
    wasm = body["wasm"]
    derived = task_id(
        parts.get("client", body["policy_client"]),
        parts.get("intent_hash", intent.intent_hash),
        parts["x402"] if "x402" in parts else wasm.get("x402"),
        parts.get("request_id", body["request_id"]),
    )
    return dict(body, task_id="0x" + derived.hex())


def _lies(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    other_details = dict(body["wasm"]["x402"], scheme="exact")
    missing = dict(body)
    del missing["request_id"]
    return {
        "client": _rebound(body, client=USDC),
        "intent": _rebound(body, intent_hash=b"\x07" * 32),
        "details": _rebound(body, x402=other_details),
        "no details": _rebound(body, x402=None),
        "request id": _rebound(body, request_id="another"),
        "request id sent": dict(body, request_id="another"),
        "missing request id": missing,
    }


def test_operators_refuse_a_task_id_not_derived_from_its_parts() -> None:
    from tests.network.test_operator import new_operator

    operator = new_operator()
    body = _x402_request()
    lies = _lies(body)
    assert len(lies) == 7
    for name, lie in lies.items():
        with pytest.raises(RPCError) as refused:
            operator.evaluate_and_sign(lie)
        assert refused.value.code == -32602, name
        expected = "request_id: " if name == "missing request id" else "task_id is not keccak"
        assert expected in refused.value.message, name
    assert operator.evaluate_and_sign(body)["decision"] == "allow"  # the honest one signs


def test_operators_refuse_them_inside_a_batch_each_alone() -> None:
    from tests.network.test_operator import new_operator

    for for_keys in (False, True):
        operator = new_operator()
        names = list(_lies(_x402_request()))
        # each lie from a body of its own: a batch names a task id once
        tasks = [_x402_request(), *(_lies(_x402_request())[name] for name in names)]
        if for_keys:
            tasks = [dict(t, operators=[operator.address]) for t in tasks]
        answers = operator.evaluate_batch({"tasks": tasks}, for_keys=for_keys)["answers"]
        assert [a["task_id"] for a in answers] == [t["task_id"] for t in tasks]
        first = answers[0]["result"]
        assert (first["answers"][0] if for_keys else first)["decision"] == "allow"
        for answer in answers[1:]:
            assert answer["error"]["code"] == -32602
