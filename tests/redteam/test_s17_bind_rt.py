"""Red team of s17-bind: the x402 details bound into the reference network's task id.

A real ``Gateway`` with real ``Operator`` objects (``tests/redteam/_s9_net``) behind the real
sync and async clients; the hostile party is a hook on the gateway (what it shows the
operators, what it answers), a forged request to an operator, or a forged challenge record.
Held attacks assert the refusal; the two holes found (an operator taking ``x402_version:
true`` as canonical, a challenge record framing honest operators with other x402 details)
fail on s17-bind and pass with their fixes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentguard import PaymentIntent
from agentguard._attestation import Attestation, operator_address, sign_attestation
from agentguard._exceptions import (
    AuthorizationError,
    ChallengeError,
    GatewayProtocolError,
    VerificationError,
)
from agentguard._gateway import AsyncNewtonGateway, NewtonGateway
from agentguard._intent import wasm_args_hex
from agentguard._task_id import canonical_x402, task_id
from agentguard.challenge import TaskEvidence, build_record, reevaluate, verify_record
from agentguard.network._rpc import RPCError
from agentguard.network.gateway import _core
from agentguard.network.registration import Registration
from agentguard.policies import Policy
from tests.network.test_gateway_memory import CLIENT, SHOP
from tests.network.test_task_id_binding import URL, _Async, _Sync, authorize, payment, verifier
from tests.redteam._s9_net import KEY, OTHER_KEY, Net, agent
from tests.task_ids import bind


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    n = Net(tmp_path)
    yield n
    n.close()


def _params(pay: PaymentIntent) -> dict[str, Any]:
    return {
        "policy_client": CLIENT,
        "intent": pay.wire(),
        "wasm_args": wasm_args_hex(pay.wasm_args()),
        "timeout": 10,
    }


# -- a hostile gateway shows the operators other x402 details ---------------------------------

_LIES: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {
    "exact for upto": lambda x: dict(x, scheme="exact"),
    "other resource": lambda x: dict(x, resource="https://allowlisted.test/"),
    "x402 version 1": lambda x: dict(x, x402_version=1),
    "x402 version true": lambda x: dict(x, x402_version=True),
    "network spelled base": lambda x: dict(x, network="base"),
    "amount with zeros": lambda x: dict(x, amount="0001000000"),
    "extra key": lambda x: dict(x, trusted_merchant=True),
    "lower-case asset": lambda x: dict(x, asset=x["asset"].lower()),
    "no details": lambda x: None,
}


def _hostile_fanout(net: Net, monkeypatch: pytest.MonkeyPatch, lie: str, rederive: bool) -> None:
    """The gateway's fan-out shows the operators ``_LIES[lie]`` of the details; with
    ``rederive`` under the task id derived from what it shows (else the client's)."""
    fanout = net.gateway.operators
    real = fanout.ask

    async def hostile(
        task: Any, tid: bytes, request_id: str, wasm: bytes, expires: int, ih: bytes, *rest: Any
    ) -> Any:
        shown = json.loads(wasm)
        details = _LIES[lie](shown["x402"])
        if details is None:
            del shown["x402"]
        else:
            shown["x402"] = details
        if rederive:
            tid = task_id(task.client.address, ih, details, request_id)
        return await real(task, tid, request_id, json.dumps(shown).encode(), expires, ih, *rest)

    monkeypatch.setattr(fanout, "ask", hostile)


@pytest.mark.parametrize("rederive", [False, True], ids=["same id", "re-derived id"])
@pytest.mark.parametrize("lie", list(_LIES))
def test_no_details_shown_to_the_operators_but_the_clients_are_accepted(
    net: Net, monkeypatch: pytest.MonkeyPatch, lie: str, rederive: bool
) -> None:
    """Whatever the gateway shows instead, the client accepts no attestation: the operators
    refuse an id not derived from what they evaluate (or a non-canonical form); signatures
    under an id derived from other details do not verify under the id the client asked for
    (and that id, put in the answer, is not the one asked for)."""
    _hostile_fanout(net, monkeypatch, lie, rederive)
    for asyncio_client in (False, True):
        with pytest.raises((AuthorizationError, VerificationError)):
            authorize(net, payment(20 + asyncio_client, scheme="upto"), asyncio_client)


def test_an_operator_refuses_x402_version_true_as_not_canonical() -> None:
    """``True == 1`` in Python: the operator's canonical check compared with ``!=``, so it
    evaluated a policy on ``x402_version: true`` (which Rego tells from ``1``) and signed.
    The client refuses that id (the hash covers ``true``), but a challenger re-evaluating
    the record, and the docstring's promise, need the operator to refuse it."""
    from tests.network.test_operator import new_operator
    from tests.network.test_task_id_binding import _x402_request

    operator = new_operator()
    body = _x402_request()
    assert body["wasm"]["x402"]["x402_version"] == 2
    for spelled in (True, 1.0):
        lie = _x402_request()
        lie["wasm"]["x402"]["x402_version"] = spelled  # canonical: 1, which Python finds equal
        bind(lie)  # the id derives from what is shown: only the form can refuse it
        with pytest.raises(RPCError, match="canonical"):
            operator.evaluate_and_sign(lie)
    assert operator.evaluate_and_sign(body)["decision"] == "allow"


def test_a_gateway_that_changes_the_request_id_it_shows_is_refused(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    fanout = net.gateway.operators
    real = fanout.ask

    async def hostile(task: Any, tid: bytes, request_id: str, wasm: bytes, *rest: Any) -> Any:
        other = task_id(task.client.address, rest[1], task.x402, "chosen-by-the-gateway")
        return await real(task, other, "chosen-by-the-gateway", wasm, *rest)

    monkeypatch.setattr(fanout, "ask", hostile)
    with pytest.raises(VerificationError):  # signed under an id that is not the answer's
        authorize(net, payment(30), False)


# -- a hostile gateway answers with another task's attestation --------------------------------


@pytest.mark.parametrize("compact", [False, True], ids=["whole", "compact"])
@pytest.mark.parametrize("asyncio_client", [False, True], ids=["sync", "async"])
def test_another_requests_allow_for_the_same_payment_is_refused(
    net: Net, monkeypatch: pytest.MonkeyPatch, asyncio_client: bool, compact: bool
) -> None:
    """An allow signed for the same intent and details under another request id (an earlier
    task, or one the gateway made up) is not this request's: replaying it would let one
    allow pay twice in the books' eyes, or serve a stale decision."""
    pay = payment(31 + 2 * asyncio_client + compact)
    earlier = json.loads(net.create("an-earlier-request", _params(pay)))
    assert earlier["attestation"]["decision"] == "allow"

    async def replay(self: Any, key: Any, rpc_id: str, params: Any) -> Any:
        return earlier

    monkeypatch.setattr(_core.Gateway, "_create_task", replay)
    with pytest.raises(GatewayProtocolError, match="not the one asked for"):
        if asyncio_client:

            async def go() -> Any:
                client = AsyncNewtonGateway(
                    URL, transport=_Async(net), policy_client=CLIENT, compact=compact
                )
                try:
                    return await client.authorize(pay)
                finally:
                    await client.aclose()

            net.run(go())
        else:
            with NewtonGateway(
                URL, transport=_Sync(net), policy_client=CLIENT, compact=compact
            ) as client:
                client.authorize(pay)


def test_an_answer_whose_task_fields_disagree_is_refused_by_its_attestation(
    net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Renaming or dropping the result's own task id fields changes nothing: the client
    checks the id inside the signed attestation."""
    real = _core.Gateway._create_task

    pay = payment(40)
    details = canonical_x402(pay.wasm_args()["x402"], pay.newton_intent())

    async def renamed(self: Any, key: Any, rpc_id: str, params: Any) -> Any:
        result = dict(await real(self, key, "not-" + rpc_id, params))
        asked = "0x" + task_id(CLIENT, pay.intent_hash, details, rpc_id).hex()
        result["task_id"] = asked  # the id asked for, outside what is signed
        result["task"] = dict(result["task"], taskId=asked, requestId=rpc_id)
        return result

    monkeypatch.setattr(_core.Gateway, "_create_task", renamed)
    with pytest.raises(GatewayProtocolError, match="differs from the task's id"):
        authorize(net, pay, False)


# -- retries and the idempotency cache ---------------------------------------------------------


def test_the_same_rpc_id_with_other_details_gets_no_old_attestation(net: Net) -> None:
    """Same API key: refused as another request. Another key (another agent host of the
    same client): another task id, bound to its own details, never the first answer."""
    upto, exact = payment(41, scheme="upto"), payment(41, scheme="exact")
    assert upto.intent_hash == exact.intent_hash  # one transfer, two sets of details
    first = json.loads(net.create("shared-id", _params(upto)))
    with pytest.raises(RPCError, match="already used for a different request"):
        net.create("shared-id", _params(exact))
    other = json.loads(net.create("shared-id", _params(exact), key=OTHER_KEY))
    assert first["attestation"]["decision"] == other["attestation"]["decision"] == "allow"
    assert first["task_id"] != other["task_id"]
    details = canonical_x402(exact.wasm_args()["x402"], exact.newton_intent())
    assert other["task_id"] == "0x" + task_id(CLIENT, exact.intent_hash, details, "shared-id").hex()


# -- hostile request ids -----------------------------------------------------------------------

_BAD_IDS: list[Any] = [7, 7.5, True, None, [], {}, "", "x" * 201, "\ud800", "a\udfffb"]


def test_the_gateway_refuses_hostile_json_rpc_ids_with_a_typed_error(net: Net) -> None:
    pay = payment(42)
    for bad in _BAD_IDS:
        if bad is None:  # Newton's SDK sends none: the gateway picks one, and says which
            result = json.loads(
                net.run(net.gateway.dispatch(KEY, bad, "newt_createTask", _params(pay))).data
            )
            details = canonical_x402(pay.wasm_args()["x402"], pay.newton_intent())
            rid = result["task"]["requestId"]
            assert result["task_id"] == "0x" + task_id(CLIENT, pay.intent_hash, details, rid).hex()
            continue
        with pytest.raises(RPCError) as refused:
            net.run(net.gateway.dispatch(KEY, bad, "newt_createTask", _params(pay)))
        assert refused.value.code in (-32600, -32602), repr(bad)
    assert net.spent(agent(42)) == (1, 1_000_000)  # only the task without an id


def test_a_long_unicode_request_id_is_bound_byte_for_byte(net: Net) -> None:
    """200 characters of 4-byte UTF-8 (800 bytes hashed) is a valid id, bound exactly."""
    pay = payment(43)
    rid = "\U0001f600" * 200
    result = json.loads(net.create(rid, _params(pay)))
    details = canonical_x402(pay.wasm_args()["x402"], pay.newton_intent())
    assert result["task"]["requestId"] == rid
    assert result["task_id"] == "0x" + task_id(CLIENT, pay.intent_hash, details, rid).hex()
    assert result["attestation"]["decision"] == "allow"


@pytest.mark.parametrize("for_keys", [False, True], ids=["batch", "for keys"])
def test_an_operator_refuses_hostile_request_ids_typed_alone_and_in_batches(
    for_keys: bool,
) -> None:
    from tests.network.test_operator import new_operator
    from tests.network.test_task_id_binding import _x402_request

    operator = new_operator()
    for bad in _BAD_IDS:
        lie = _x402_request()
        lie["request_id"] = bad
        with pytest.raises(RPCError) as refused:
            operator.evaluate_and_sign(lie)
        assert refused.value.code == -32602 and "request_id" in refused.value.message
    tasks = []
    for bad in _BAD_IDS:
        lie = _x402_request()
        lie["request_id"] = bad
        tasks.append(dict(lie, operators=[operator.address]) if for_keys else lie)
    answers = operator.evaluate_batch({"tasks": tasks}, for_keys=for_keys)["answers"]
    assert len(answers) == len(_BAD_IDS)
    assert all(a["error"]["code"] == -32602 for a in answers)  # never an internal error


def test_a_request_id_that_spells_a_hash_collides_with_nothing() -> None:
    """The request id is last and the parts before it are 32 bytes each: an id made of the
    bytes of a details hash (or zeros) does not turn one task into another."""
    pay = payment(44)
    details = canonical_x402(pay.wasm_args()["x402"], pay.newton_intent())
    from agentguard._task_id import details_hash

    forged = details_hash(details).decode("latin-1")
    ids = {
        task_id(CLIENT, pay.intent_hash, details, "r"),
        task_id(CLIENT, pay.intent_hash, None, "r"),
        task_id(CLIENT, pay.intent_hash, None, forged + "r"),
        task_id(CLIENT, pay.intent_hash, None, "\x00" * 32 + "r"),
        task_id(CLIENT, pay.intent_hash, details, "\x00" * 32 + "r"),
    }
    assert len(ids) == 5


# -- a plain transfer whose caller passes x402 details in wasm_args ----------------------------


@pytest.mark.parametrize("asyncio_client", [False, True], ids=["sync", "async"])
def test_caller_x402_details_in_other_spellings_are_bound_as_the_gateway_reads_them(
    net: Net, monkeypatch: pytest.MonkeyPatch, asyncio_client: bool
) -> None:
    """A ``TransactionIntent`` with ``wasm_args={"x402": ...}`` spelled ``"0001000000"`` and
    ``base``: client and gateway canonicalize alike (accepted), and a gateway that shows
    another resource is refused."""
    pay = payment(45 + asyncio_client)
    transfer = pay.newton_intent()
    spelled = dict(pay.wasm_args()["x402"], amount="0001000000", network="base")

    def go() -> Any:
        if asyncio_client:

            async def run() -> Any:
                client = AsyncNewtonGateway(URL, transport=_Async(net), policy_client=CLIENT)
                try:
                    return await client.authorize(transfer, wasm_args={"x402": spelled})
                finally:
                    await client.aclose()

            return net.run(run())
        with NewtonGateway(URL, transport=_Sync(net), policy_client=CLIENT) as client:
            return client.authorize(transfer, wasm_args={"x402": spelled})

    assert verifier().verify(go(), transfer).attestation.decision == "allow"
    for lie in ("other resource", "exact for upto"):
        monkeypatch.undo()
        _hostile_fanout(net, monkeypatch, lie, rederive=False)
        with pytest.raises(AuthorizationError, match="quorum"):  # the operators refuse
            go()
        monkeypatch.undo()
        _hostile_fanout(net, monkeypatch, lie, rederive=True)  # signed under another id
        with pytest.raises(VerificationError):
            verifier().verify(go(), transfer)


# -- a challenge record that frames honest operators with other x402 details -----------------

_NOW = 1_764_000_000


def _x402_policy(folder: Path) -> Policy:
    """The network tests' spend-cap policy, also denying any payment for a resource outside
    ``https://shop.test/``: a policy that reads ``data.wasm.x402``."""
    target = folder / "x402_cap"
    shutil.copytree(Path(__file__).parent.parent / "network" / "policies" / "spend_cap", target)
    rego = target / "policy.rego"
    rego.write_text(
        rego.read_text()
        + '\ndenials contains "resource not allowed" if {\n'
        + '\tnot startswith(data.wasm.x402.resource, "https://shop.test/")\n}\n'
    )
    return Policy.from_dir(target)


def test_a_record_with_other_x402_details_does_not_prove_honest_operators_wrong(
    tmp_path: Path,
) -> None:
    """The attack: operators honestly signed allow for a payment to ``https://shop.test/``;
    a record of that attestation with the resource changed to one the policy denies
    "proved" them wrong. The details are now bound by the task id: the record must carry
    the request id, and a task id that does not derive from its details proves nothing."""
    from coincurve import PrivateKey

    from tests.network.conftest import UNIT, params

    owner = PrivateKey(b"\x01" * 32)
    keys = [PrivateKey(bytes([i + 2]) * 32) for i in range(3)]
    client = operator_address(owner)
    policy = _x402_policy(tmp_path)
    registration = Registration.sign(
        owner, policy_client=client, policy=policy, params=params(), expire_after=300,
        chain_id=8453, version=1,
    )  # fmt: skip
    pay = PaymentIntent(
        payer="0x" + "a1" * 20, scheme="exact", network="eip155:8453",
        asset="0x" + "7e" * 20, amount=5 * UNIT, pay_to=SHOP, resource="https://shop.test/item",
    )  # fmt: skip
    intent = pay.newton_intent()
    details = canonical_x402(pay.wasm_args()["x402"], intent)
    rid = "the-agents-request"
    tid = task_id(client, intent.intent_hash, details, rid)
    window = {"count": 0, "spent": {}, "projected": {intent.spend.asset.lower(): str(5 * UNIT)}}
    wasm = {
        "now": _NOW, "intent_hash": "0x" + intent.intent_hash.hex(), "approved": False,
        "spend": intent.spend.wasm(), "history": {w: window for w in ("60", "3600", "86400")},
        "x402": details,
    }  # fmt: skip
    unsigned = Attestation(
        decision="allow", task_id=tid, policy_id=registration.policy_id, policy_client=client,
        intent_hash=intent.intent_hash, expires_at=_NOW + 300,
    )  # fmt: skip
    digest = unsigned.digest_for(intent.intent_hash, 8453)
    signed = Attestation.model_validate({**unsigned.model_dump(), "signatures": [
        {"operator": operator_address(k), "signature": sign_attestation(k, digest)}
        for k in keys[:2]]})  # fmt: skip
    honest = TaskEvidence(
        task_id="0x" + tid.hex(), policy_client=client, intent=intent.wire(), wasm=wasm,
        attestation=signed.to_json(), created_at=_NOW, source="gateway", request_id=rid,
    )  # fmt: skip
    assert reevaluate(honest, registration, policy).decision == "allow"  # honest signers

    framed_details = dict(details, resource="https://elsewhere.test/item")
    no_details = {k: v for k, v in wasm.items() if k != "x402"}
    frames = {
        "other resource": {"wasm": {**wasm, "x402": framed_details}},
        "version true": {"wasm": {**wasm, "x402": {**details, "x402_version": True}}},
        "details dropped": {"wasm": no_details},
        "other resource, no request id": {
            "wasm": {**wasm, "x402": framed_details},
            "request_id": None,
        },
        "details and request id dropped": {"wasm": no_details, "request_id": None},
    }
    for name, change in frames.items():
        framed = TaskEvidence(**{**honest.__dict__, **change})
        try:
            recomputed = reevaluate(framed, registration, policy)
        except ChallengeError as exc:  # refused before evaluating: nothing to record
            assert "x402" in exc.message or "request id" in exc.message, name
            continue
        assert recomputed.decision == "deny", name  # the frame works on the policy
        record = build_record(
            framed, registration, policy, recomputed, kind="decision",
            wrong_signers=[operator_address(k) for k in keys[:2]],
        )  # fmt: skip
        check = verify_record(record)
        assert not check.proven, f"honest operators framed: {name}"
        assert "request id" in check.reason, name


def test_an_operator_refuses_an_unencodable_resource_typed_alone_and_in_a_batch() -> None:
    """A lone surrogate in the resource (no UTF-8, so nothing to hash into the task id) was
    an ``UnicodeEncodeError`` out of ``evaluate_and_sign`` and an "internal operator error"
    in a batch; the HTTP parser refuses such text, an in-process caller did not."""
    from tests.network.test_operator import new_operator
    from tests.network.test_task_id_binding import _x402_request

    operator = new_operator()
    lie = _x402_request()
    lie["wasm"]["x402"]["resource"] = "https://shop.test/\ud800"
    with pytest.raises(RPCError, match="UTF-8") as refused:
        operator.evaluate_and_sign(lie)
    assert refused.value.code == -32602
    [answer] = operator.evaluate_batch({"tasks": [lie]})["answers"]
    assert answer["error"]["code"] == -32602
