"""An operator host (several keys, one evaluation) signs exactly what separate operators would,
in process: differential against one ``Operator`` per key on seeded random and hostile
requests, per-key task claims, and the host request's own rules."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard._attestation import operator_address
from agentguard._exceptions import ConfigurationError
from agentguard.network._rpc import INVALID_PARAMS, RPCError
from agentguard.network.operator import Operator
from agentguard.network.registry import Registry

from .conftest import UNIT, params
from .test_operator import request

KEYS = [PrivateKey(bytes([0x40 + i]) * 32) for i in range(3)]
ADDRESSES = [operator_address(k) for k in KEYS]
STRANGER = operator_address(PrivateKey(b"\x5a" * 32))


def separate(
    operators: dict[str, Operator], body: dict[str, Any], wanted: list[str], now: float
) -> list[Any]:
    """What one operator per key answers, or the (code, message) it refuses with."""
    out: list[Any] = []
    for address in wanted:
        operator = operators.get(address)
        if operator is None:
            out.append((INVALID_PARAMS, None))  # a key nobody here holds
            continue
        try:
            out.append(operator.evaluate_and_sign(body, now))
        except RPCError as exc:
            out.append((exc.code, exc.message))
    return out


def hosted(host: Operator, body: dict[str, Any], wanted: list[str], now: float) -> list[Any]:
    """The host's answers in the same shape (a refusal of the whole request: every key's)."""
    try:
        answers = host.evaluate_for({**body, "operators": wanted}, now)["answers"]
    except RPCError as exc:
        return [(exc.code, None if a == STRANGER else exc.message) for a in wanted]
    out: list[Any] = []
    for address, answer in zip(wanted, answers, strict=True):
        assert answer["operator"] == address
        if "error" in answer:
            message = answer["error"]["message"]
            unheld = address == STRANGER
            out.append((answer["error"]["code"], None if unheld else message))
        else:
            out.append(answer)
    return out


def hostile(rng: random.Random, body: dict[str, Any], used: list[str]) -> dict[str, Any]:
    """``body`` spoiled one way a lying gateway might: a reused task id (another intent),
    other params, a wrong expiry, a data.wasm about another intent, or nothing."""
    choice = rng.randrange(6)
    if choice == 0 and used:
        return {**body, "task_id": rng.choice(used)}
    if choice == 1:
        return {**body, "params": params(max_per_tx=rng.randrange(1, 20) * UNIT)}
    if choice == 2:
        return {**body, "expires_at": body["expires_at"] + rng.choice((-1, 1, 3600))}
    if choice == 3:
        other = request(rng.randrange(1, 5) * UNIT)
        return {**body, "wasm": other["wasm"]}
    return body


def test_a_host_answers_exactly_what_separate_operators_answer() -> None:
    rng = random.Random(20261202)
    operators = {a: Operator(k, Registry(":memory:")) for a, k in zip(ADDRESSES, KEYS, strict=True)}
    host = Operator(KEYS, Registry(":memory:"))
    used: list[str] = []
    seen = {"signed": 0, "refused by a key": 0, "refused whole": 0}
    for _ in range(120):
        body = hostile(rng, request(rng.choice((1, 5, 9, 11, 40)) * UNIT), used)
        used.append(body["task_id"])
        wanted = rng.sample(ADDRESSES, rng.randint(1, 3))
        if rng.random() < 0.15:
            wanted.insert(rng.randrange(len(wanted) + 1), STRANGER)
        now = time.time()
        expected = separate(operators, body, wanted, now)
        got = hosted(host, body, wanted, now)
        assert got == expected
        signed = [a for a in got if isinstance(a, dict)]
        seen["signed"] += len(signed)
        seen["refused by a key"] += len(got) - len(signed)
        seen["refused whole"] += not signed
    assert all(seen.values()), seen  # every kind of answer was met


def test_each_key_refuses_a_task_id_it_signed_for_another_intent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Derived task ids name one intent already (each key refuses another derivation); the
    memory of signed ids is the second line, reached here by a derivation that collides."""
    from agentguard.network import operator as operator_module

    host = Operator(KEYS, Registry(":memory:"))
    first = request(UNIT)
    collide = bytes.fromhex(first["task_id"][2:])
    monkeypatch.setattr(operator_module, "derive_task_id", lambda *_: collide)
    answers = host.evaluate_for({**first, "operators": ADDRESSES[:2]})["answers"]
    assert [a["decision"] for a in answers] == ["allow", "allow"]
    other = request(2 * UNIT, task_id=first["task_id"])  # same task id, another intent
    answers = host.evaluate_for({**other, "operators": ADDRESSES})["answers"]
    for refused in answers[:2]:
        assert refused["error"]["code"] == INVALID_PARAMS
        assert "already signed for a different intent" in refused["error"]["message"]
    # the third key never signed that task id: like a separate operator, it may
    assert answers[2]["decision"] == "allow" and answers[2]["operator"] == ADDRESSES[2]
    # from now on the third key holds it for the second intent, and refuses the first
    [again] = host.evaluate_for({**first, "operators": ADDRESSES[2:]})["answers"]
    assert "already signed for a different intent" in again["error"]["message"]
    # a retry of the same intent is fine for each key that signed it
    answers = host.evaluate_for({**first, "operators": ADDRESSES[:2]})["answers"]
    assert [a["decision"] for a in answers] == ["allow", "allow"]


def test_each_key_signs_alone_and_all_sign_the_same_decision() -> None:
    host = Operator(KEYS, Registry(":memory:"))
    body = request(UNIT)
    answers = host.evaluate_for({**body, "operators": ADDRESSES})["answers"]
    assert [a["operator"] for a in answers] == ADDRESSES
    assert len({a["signature"] for a in answers}) == 3
    assert {(a["decision"], a["policy_id"], a["intent_hash"]) for a in answers} == {
        (answers[0]["decision"], answers[0]["policy_id"], answers[0]["intent_hash"])
    }


@pytest.mark.parametrize(
    ("operators", "message"),
    [
        (None, "operators must be a list"),
        ([], "operators must be a list"),
        (["0x1234"], "operators must be a list"),
        ([ADDRESSES[0], 7], "operators must be a list"),
        ([ADDRESSES[0], ADDRESSES[0].lower()], "names an address twice"),
        ([STRANGER] * 257, "operators must be a list"),
    ],
)
def test_a_host_request_must_name_distinct_addresses(operators: Any, message: str) -> None:
    host = Operator(KEYS, Registry(":memory:"))
    body = {**request(), "operators": operators}
    if operators is None:
        del body["operators"]
    with pytest.raises(RPCError) as refused:
        host.evaluate_for(body)
    assert refused.value.code == INVALID_PARAMS and message in refused.value.message


def test_an_address_the_host_does_not_hold_is_refused_not_dropped() -> None:
    host = Operator(KEYS[:2], Registry(":memory:"))
    answers = host.evaluate_for({**request(), "operators": [ADDRESSES[2], ADDRESSES[0]]})
    missing, signed = answers["answers"]
    assert missing["operator"] == ADDRESSES[2]
    assert "does not hold the key" in missing["error"]["message"]
    assert signed["operator"] == ADDRESSES[0] and signed["decision"] == "allow"
    # nothing held: refused for each, without evaluating (a broken body is not even read)
    [alone] = host.evaluate_for({"operators": [STRANGER]})["answers"]
    assert alone == {
        "operator": STRANGER,
        "error": {"code": INVALID_PARAMS, "message": alone["error"]["message"]},
    }


def test_a_host_of_several_keys_answers_only_when_told_which() -> None:
    host = Operator(KEYS, Registry(":memory:"))
    with pytest.raises(RPCError) as refused:
        host.evaluate_and_sign(request())
    assert "agentguard_evaluateForKeys" in refused.value.message
    assert host.address == ADDRESSES[0] and host.addresses == tuple(ADDRESSES)
    assert "Operator(" in repr(host) and KEYS[0].secret.hex() not in repr(host)


def test_a_host_needs_distinct_keys() -> None:
    with pytest.raises(ConfigurationError):
        Operator([KEYS[0], PrivateKey(KEYS[0].secret)], Registry(":memory:"))
    with pytest.raises(ConfigurationError):
        Operator([], Registry(":memory:"))


def test_a_single_key_answers_both_methods_alike() -> None:
    one = Operator(KEYS[0], Registry(":memory:"))
    body, now = request(UNIT), time.time()
    [answer] = one.evaluate_for({**body, "operators": [ADDRESSES[0]]}, now)["answers"]
    assert answer == one.evaluate_and_sign(body, now)  # a retry of the same task


def test_one_approval_allows_one_task_for_every_key_of_a_host() -> None:
    """The host's registry records an approval's use: a key that never saw it refuses it for
    a second task as well (stricter than separate operators, never looser)."""
    from tests.approvals.test_operator_approvals import request as approval_request
    from tests.approvals.test_operator_approvals import signed

    host = Operator(KEYS, Registry(":memory:"))
    approval = signed()
    first = approval_request(approval)
    answers = host.evaluate_for({**first, "operators": ADDRESSES[:2]})["answers"]
    assert [a["decision"] for a in answers] == ["allow", "allow"]
    # the third key joins the same task later (a hedge): the same task, so it signs
    [late] = host.evaluate_for({**first, "operators": ADDRESSES[2:]})["answers"]
    assert late["decision"] == "allow"
    second = approval_request(approval)  # another task id, the same approval
    answers = host.evaluate_for({**second, "operators": ADDRESSES})["answers"]
    for answer in answers:
        assert "already used for another task" in answer["error"]["message"]
