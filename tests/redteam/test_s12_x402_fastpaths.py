"""Red team for session 12's x402 fast paths (s12-h1).

1. ``Signer.sign_eip3009``: a hostile host passes field objects whose comparisons, ``lower``,
   ``__str__``, ``__int__`` and ``__index__`` lie, mixes two attestations, or alters the
   verified intent: nothing is signed but the attested payment, once.
2. The v2 payment header joined from JSON encoded per parsed answer: a requirement or answer
   rebuilt with ``dataclasses.replace`` sends its own ``accepted``/``resource`` (not the JSON
   of the object it was copied from), and hostile text in what the server sent cannot add or
   change a member of the document around it; the header's authorization recovers to the payer.
3. ``X402Auth``'s remembered choice answers only for the very answer object and that auth.
4. ``runner.now`` for gateway commit/release: queued once per step, a queue failure does not
   reach the flow, and a tracer set on the instance afterwards sees every gateway step.
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import replace
from typing import Any

import httpx
import pytest

from agentguard._exceptions import AttestationReplayed, IntentMismatch, PaymentRequiredError
from agentguard._intent import PaymentIntent
from agentguard.ledger import Ledger
from agentguard.pipeline import GatewayCommit, GatewayRelease, Runner
from agentguard.pipeline import _runner as runner_module
from agentguard.x402 import Allowances
from agentguard.x402._payment import PaymentPort
from agentguard.x402._select import select
from agentguard.x402._wire import encode_header, parse_v2_header
from tests.x402.fakes import PAYEE, STRANGER, TOKEN, recover_payer, requirement
from tests.x402.test_eip3009_fields import _fields, _verified
from tests.x402.test_eip3009_signing import SIGNERS, _case
from tests.x402.test_payment_encoding import SIGNER, _signed
from tests.x402.test_select_cache import _auth

# -- 1. the signer --------------------------------------------------------------------------


class _LyingStr(str):
    """Equal to everything, lower-cases to ``shown``, renders as ``shown``."""

    shown = ""

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = str.__hash__

    def lower(self) -> str:  # type: ignore[override]
        return self.shown.lower()

    def __str__(self) -> str:
        return self.shown


class _LyingInt(int):
    shown = 0

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = int.__hash__

    def __int__(self) -> int:
        return self.shown

    def __index__(self) -> int:
        return self.shown

    def __le__(self, other: object) -> bool:
        return True

    def __ge__(self, other: object) -> bool:
        return True

    def __str__(self) -> str:
        return str(self.shown)


def _liar(good: object, evil: object) -> object:
    """An object holding ``evil`` that claims to be ``good`` every way it is asked."""
    if isinstance(good, str):
        liar: Any = _LyingStr(evil)
    else:
        liar = _LyingInt(evil)  # type: ignore[call-overload]
    liar.shown = good
    return liar


EVIL = {"name": "Evil Coin", "version": "9", "chain_id": 1, "token": STRANGER,
        "payer": STRANGER, "to": STRANGER, "value": 10**30, "valid_after": 0,
        "valid_before": 2**255, "nonce": "0x" + "ee" * 32}  # fmt: skip


@pytest.mark.parametrize("field", sorted(EVIL))
def test_lying_field_objects_never_sign_and_the_attestation_is_given_back(field: str) -> None:
    rng = random.Random(field)
    who, intent, typed, expires = _case(rng)
    signer, good = SIGNERS[who], _fields(typed)
    verified = _verified(intent, expires)
    hostile = {**good, field: _liar(good[field], EVIL[field])}
    with pytest.raises(IntentMismatch):
        signer.sign_eip3009(verified, **hostile)
    assert signer.sign_eip3009(verified, **good)  # handed back: the true payment signs once
    with pytest.raises(AttestationReplayed):
        signer.sign_eip3009(verified, **good)


def test_two_attestations_mixed_or_an_altered_intent_sign_nothing() -> None:
    rng = random.Random(1212)
    who, intent, typed, expires = _case(rng)
    signer, fields = SIGNERS[who], _fields(typed)
    more = {**fields, "value": intent.amount + 1}
    small = _verified(intent, expires)
    big_intent = PaymentIntent.from_fields({**intent.model_dump(), "amount": intent.amount + 1})
    big = _verified(big_intent, expires)
    mixed = replace(small, intent=big.intent)  # small's attestation, big's intent
    with pytest.raises(IntentMismatch):
        signer.sign_eip3009(mixed, **more)
    altered = _verified(PaymentIntent.from_fields(intent.model_dump()), expires)
    object.__setattr__(altered.intent, "amount", intent.amount + 1)
    with pytest.raises(IntentMismatch):
        signer.sign_eip3009(altered, **more)
    # the big attestation is untouched by the attempts and signs only its own amount
    with pytest.raises(IntentMismatch):
        signer.sign_eip3009(big, **fields)
    assert signer.sign_eip3009(big, **more)


# -- 2. the payment header ------------------------------------------------------------------


def _pay(required: Any, req: Any) -> tuple[dict[str, Any], PaymentPort]:
    port, payment, _, _ = _signed(required, req)
    return json.loads(base64.b64decode(payment.value)), port


def test_a_rebuilt_requirement_sends_its_own_accepted_and_resource() -> None:
    """``dataclasses.replace`` copies every field, a remembered encoding included: the
    header must still say what the object it was given says (the document path's bytes)."""
    entry = requirement()
    parsed = parse_v2_header(
        encode_header({"x402Version": 2, "accepts": [entry], "resource": {"url": "http://a/x"}})
    )
    req = replace(
        select(parsed, Allowances({TOKEN: 10**6})),
        amount=20000,
        raw={**entry, "amount": "20000"},
    )
    required = replace(parsed, resource={"url": "http://b/y"}, accepts=(req,))
    sent, port = _pay(required, req)
    assert sent["payload"]["authorization"]["value"] == "20000"
    assert sent["accepted"] == {**entry, "amount": "20000"}
    assert sent["resource"] == {"url": "http://b/y"}
    assert encode_header(sent) == encode_header(port._document(sent["payload"], None))


INJECTIONS = ['","accepted":{"amount":"1"},"x":"', '\\",\\"payTo\\":\\"', "}", '"', "\u2028",
              '{"x402Version":1}']  # fmt: skip


def test_hostile_text_cannot_add_or_change_a_member_and_the_payer_recovers() -> None:
    rng = random.Random(4020)
    for _ in range(60):
        text = rng.choice(INJECTIONS) + rng.choice(INJECTIONS)
        entry = requirement(extra={"name": "USD Coin", "version": "2", "note": text})
        entry["payTo"] = PAYEE
        document = {"x402Version": 2, "accepts": [entry],
                    "resource": {"url": "http://s/" + text, "description": text}}  # fmt: skip
        required = parse_v2_header(encode_header(document))
        req = select(required, Allowances({TOKEN: 10**6}))
        sent, _ = _pay(required, req)
        assert list(sent) == ["x402Version", "resource", "accepted", "payload"]
        assert sent["accepted"] == entry and sent["resource"] == document["resource"]
        assert sent["payload"]["authorization"]["to"] == PAYEE
        assert sent["payload"]["authorization"]["value"] == entry["amount"]
        assert recover_payer(sent, sent["accepted"]).lower() == SIGNER.address.lower()


# -- 3. the remembered choice ---------------------------------------------------------------


def test_a_remembered_choice_answers_only_its_answer_and_its_auth() -> None:
    cheap, dear = requirement(amount="10"), requirement(amount="5000000")
    header = encode_header({"x402Version": 2, "accepts": [dear, cheap]})
    wide, narrow = _auth(Allowances({TOKEN: 10**7})), _auth(Allowances({TOKEN: 5}))
    required = parse_v2_header(header)
    assert wide._select(required).amount == 10
    with pytest.raises(PaymentRequiredError):  # the same (cached) answer, another auth's caps
        narrow._select(required)
    # an equal answer that is another object (another header text) is chosen from again
    other = parse_v2_header(header + " ")
    assert other is not required and other == required
    stranger = replace(other, accepts=(replace(other.accepts[1], pay_to=STRANGER),))
    assert wide._select(stranger).pay_to == STRANGER
    assert wide._select(required).pay_to == PAYEE


# -- 4. runner.now for gateway steps ---------------------------------------------------------


def _flow() -> Any:
    yield GatewayCommit("0x01", "settled")
    yield GatewayRelease("0x02")
    return "done"


def test_gateway_steps_are_queued_once_and_a_queue_failure_stays_out_of_the_flow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    submitted: list[object] = []

    class Book:
        fail = False

        def submit(self, step: object) -> None:
            submitted.append(step)
            if self.fail:
                raise RuntimeError("queue down")

    book = Book()
    monkeypatch.setattr(runner_module, "bookkeeper", lambda guard: book)
    runner = Runner(object(), Ledger())  # type: ignore[arg-type]
    assert runner.drive(_flow()) == "done"
    assert [type(s).__name__ for s in submitted] == ["GatewayCommit", "GatewayRelease"]
    book.fail = True
    submitted.clear()
    assert runner.drive(_flow()) == "done"
    assert len(submitted) == 2
    seen: list[str] = []
    stock = runner.execute

    def traced(step: Any, port: Any = None) -> Any:
        seen.append(type(step).__name__)
        return stock(step, port)

    runner.execute = traced  # type: ignore[method-assign]
    submitted.clear()
    assert runner.drive(_flow()) == "done"
    assert seen == ["GatewayCommit", "GatewayRelease"] and len(submitted) == 2


def test_async_gateway_steps_are_queued_on_the_running_loop_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An async authorizer's steps go to the asyncio queue, from inside the loop (its
    ``submit`` needs the running loop), once per step."""
    import asyncio
    from types import SimpleNamespace

    from agentguard.pipeline import AsyncRunner

    loops: list[object] = []

    class Book:
        def submit(self, step: object) -> None:
            loops.append((type(step).__name__, asyncio.get_running_loop()))

    class Authorizer:
        async def commit(self, task_id: str, outcome: str) -> None: ...

        async def release(self, task_id: str) -> None: ...

    monkeypatch.setattr(runner_module, "async_bookkeeper", lambda guard: Book())
    monkeypatch.setattr(runner_module, "bookkeeper", lambda guard: pytest.fail("blocking"))
    runner = AsyncRunner(SimpleNamespace(authorizer=Authorizer()), Ledger())  # type: ignore[arg-type]

    async def main() -> object:
        assert await runner.drive(_flow()) == "done"
        return asyncio.get_running_loop()

    loop = asyncio.run(main())
    assert loops == [("GatewayCommit", loop), ("GatewayRelease", loop)]


# -- 5. the URL identity check --------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 402, 500, 302])
def test_a_url_changed_in_place_passes_identity_but_the_payment_stays_counted(
    status: int,
) -> None:
    """``httpx.URL`` is immutable by convention only: same-process code can re-point the very
    object the payment was sent with. The identity check then takes it for the paid URL, but
    an answer never gives the payment back (no outcome releases it), so nothing is gained
    that holding the signed header did not already give."""
    from agentguard.pipeline import NeverLanded
    from agentguard.x402._answer import Paid, outcome

    required = parse_v2_header(encode_header({"x402Version": 2, "accepts": [requirement()]}))
    req = select(required, Allowances({TOKEN: 10**6}))
    _, payment, _, _ = _signed(required, req)
    request = httpx.Request("GET", "http://shop.test/paid")
    url = request.url
    paid = Paid(payment, "r1", SIGNER.address, str(url), False, url)
    url._uri_reference = httpx.URL("http://evil.test/paid")._uri_reference
    assert str(request.url) == "http://evil.test/paid" and request.url is paid.sent_url
    request.headers[payment.header] = payment.value
    headers = {"location": "http://evil.test/x"} if status == 302 else {}
    result = outcome(request, httpx.Response(status, headers=headers, request=request), paid)
    assert not isinstance(result, NeverLanded)
