"""The operator's fast intent reader, attacked by a hostile gateway: whatever it sends, the
operator signs exactly what the model path (pydantic validation, eth_abi decoding) would have
signed, or refuses with the same error (real engine, real keys)."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest
from coincurve import PrivateKey
from eth_hash.auto import keccak

import agentguard._intent as intent_module
from agentguard._exceptions import IntentError
from agentguard._intent import TransactionIntent
from agentguard._json import strict_loads
from agentguard.network._rpc import INVALID_PARAMS, POLICY_EVALUATION_ERROR, RPCError
from agentguard.network.operator import Operator
from agentguard.network.registry import Registry
from agentguard.policies._engine import Evaluation, PolicyEngine

from .conftest import PAYEE, TOKEN, UNIT
from .test_operator import AGENT, request

KEY = PrivateKey(b"\x09" * 32)
TRANSFER = keccak(b"transfer(address,uint256)")[:4]


def _operator(engine: PolicyEngine | None = None) -> Operator:
    return Operator(KEY, Registry(":memory:"), engine)


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _with_intent(wire: dict[str, Any], body: dict[str, Any] | None = None) -> dict[str, Any]:
    """A request whose intent is ``wire`` and whose data.wasm describes it (as far as it can
    be read), so only the intent decides the outcome."""
    body = body or request()
    body["intent"] = wire
    try:
        intent = TransactionIntent.from_wire(wire)
    except IntentError:
        return body
    body["wasm"]["intent_hash"] = "0x" + intent.intent_hash.hex()
    body["wasm"]["spend"] = intent.spend.wasm()
    return body


def _answer(operator: Operator, body: dict[str, Any]) -> Any:
    try:
        return operator.evaluate_and_sign(copy.deepcopy(body))
    except RPCError as exc:
        return (exc.code, exc.message)


def _model_path(patched: pytest.MonkeyPatch) -> None:
    def refuse(cls: Any, fields: Any) -> Any:
        raise RuntimeError("fast path disabled")

    patched.setattr(TransactionIntent, "_validated_directly", classmethod(refuse))
    patched.setattr(intent_module, "_decode_static", lambda signature, data: None)


def _transfer_wire(calldata: bytes, **override: Any) -> dict[str, Any]:
    wire = {
        "from": AGENT,
        "to": TOKEN,
        "value": "0x0",
        "data": "0x" + calldata.hex(),
        "chain_id": "0x2105",
        "function_signature": "transfer(address,uint256)",
    }
    wire.update(override)
    return wire


CANONICAL = TRANSFER + bytes(12) + bytes.fromhex(PAYEE[2:]) + _word(UNIT)
HOSTILE_WIRES = {
    "canonical": _transfer_wire(CANONICAL),
    "upper-case hex": _transfer_wire(CANONICAL, data="0x" + CANONICAL.hex().upper()),
    "0X prefix": _transfer_wire(CANONICAL, data="0X" + CANONICAL.hex()),
    "byte array": _transfer_wire(CANONICAL, data=list(CANONICAL)),
    # a recipient word whose padding hides another address: a lax reader would pay PAYEE
    "dirty address padding": _transfer_wire(
        TRANSFER + b"\x01" + bytes(11) + bytes.fromhex(PAYEE[2:]) + _word(UNIT)
    ),
    "trailing byte": _transfer_wire(CANONICAL + b"\x00"),
    "a word short": _transfer_wire(CANONICAL[:-32]),
    "amount over uint256 (as a second word pair)": _transfer_wire(CANONICAL + _word(1)),
    # approve's selector under a lookalike name: the contract would run approve
    "selector collision": _transfer_wire(
        keccak(b"approve(address,uint256)")[:4] + CANONICAL[4:],
        function_signature="payb_9uByHa(address,uint256)",
    ),
    "signature of another selector": _transfer_wire(
        CANONICAL, function_signature="transferFrom(address,address,uint256)"
    ),
    "value over uint256": _transfer_wire(CANONICAL, value=hex(1 << 256)),
    "huge decimal value": _transfer_wire(CANONICAL, value="9" * 100),
    "ETH with a token transfer": _transfer_wire(CANONICAL, value="0x1"),
    "wrong checksum": _transfer_wire(CANONICAL, to=TOKEN[:-1] + "3"),
    "upper-case to": _transfer_wire(CANONICAL, to="0x" + TOKEN[2:].upper()),
    "both chain spellings": _transfer_wire(CANONICAL, chainId="0x1"),
    "hex signature": _transfer_wire(
        CANONICAL, function_signature="0x" + b"transfer(address,uint256)".hex()
    ),
    "non-UTF-8 signature": _transfer_wire(CANONICAL, function_signature="0xff"),
    "uint alias": _transfer_wire(CANONICAL, function_signature="transfer(address to, uint amt)"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_WIRES))
def test_hostile_wire_intents_get_the_model_paths_answer(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each wire a hostile gateway might send, signed or refused exactly as with the model path
    (same task id, same key: the same signature bytes, or the same error)."""
    body = _with_intent(HOSTILE_WIRES[name])
    fast = _answer(_operator(), body)
    intent_module._decode_cached.cache_clear()
    with monkeypatch.context() as patched:
        _model_path(patched)
        slow = _answer(_operator(), body)
    assert fast == slow


def test_dirty_padding_is_refused_not_read_as_the_payee() -> None:
    """A sloppy fast reader taking ``word[12:]`` alone would read the address under dirty
    padding as PAYEE and sign (a regression guard: the code before the fast reader refused it,
    and still does, with eth_abi's padding error)."""
    with pytest.raises(RPCError) as refused:
        _operator().evaluate_and_sign(_with_intent(HOSTILE_WIRES["dirty address padding"]))
    assert refused.value.code == INVALID_PARAMS
    assert "Padding bytes were not empty" in refused.value.message


def test_mixed_case_calldata_hashes_like_lower_case() -> None:
    lower = TransactionIntent.from_wire(HOSTILE_WIRES["canonical"])
    upper = TransactionIntent.from_wire(HOSTILE_WIRES["upper-case hex"])
    assert upper.intent_hash == lower.intent_hash and upper.data == lower.data


class _Mutating(PolicyEngine):
    """An engine during whose evaluation the request's intent is rewritten (a gateway or a
    concurrent caller sharing the params object), to pay someone else everything."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__()
        self.body = body

    def evaluate(self, policy: Any, **kwargs: Any) -> Evaluation:
        result = super().evaluate(policy, **kwargs)
        thief = "0x" + "99" * 20
        data = TRANSFER + bytes(12) + bytes.fromhex(thief[2:]) + _word(10**30)
        self.body["intent"]["data"][:] = list(data)
        self.body["intent"]["to"] = thief
        kwargs["input"]["decoded_function_arguments"][0] = thief
        return result


def test_intent_changed_after_parsing_is_not_what_is_signed() -> None:
    """The attestation is bound to the intent as parsed: rewriting the request's intent (its
    byte list, its fields, even the policy input) after the parse changes nothing signed."""
    body = _with_intent(_transfer_wire(CANONICAL, data=list(CANONICAL)))
    expected = TransactionIntent.from_wire(copy.deepcopy(body["intent"])).intent_hash
    answer = _operator(_Mutating(body)).evaluate_and_sign(body)
    assert answer["decision"] == "allow"
    assert answer["intent_hash"] == "0x" + expected.hex()


def test_policy_input_is_a_new_document_each_time() -> None:
    """``parsed()`` reuses cached signature parts; a caller editing one input document must not
    change the next (an engine or challenger that annotates its input)."""
    intent = TransactionIntent.from_wire(HOSTILE_WIRES["canonical"])
    first = intent.parsed()
    first["function"]["inputs"][0]["type"] = "uint256"
    first["function"]["name"] = "approve"
    first["decoded_function_arguments"].append("0x" + "99" * 20)
    again = TransactionIntent.from_wire(HOSTILE_WIRES["canonical"]).parsed()
    assert again["function"]["inputs"][0]["type"] == "address"
    assert again["function"]["name"] == "transfer"
    assert len(again["decoded_function_arguments"]) == 2


def test_duplicate_keys_in_a_wire_intent_never_reach_the_parser() -> None:
    """Two ``data`` keys could be read as two different intents by two readers: the request
    parser refuses them before any intent is read."""
    body = json.dumps(request()).replace('"data": "0x', '"data": "0x", "data": "0x', 1)
    with pytest.raises(ValueError, match="twice"):
        strict_loads(body)


def test_huge_integers_in_the_policy_input_are_refused() -> None:
    """A history count past int64 would wrap in regopy's input API; the operator refuses it."""
    body = request()
    body["wasm"]["history"]["60"]["count"] = 1 << 64
    with pytest.raises(RPCError) as refused:
        _operator().evaluate_and_sign(body)
    assert "does not fit in 64 bits" in refused.value.message


@pytest.mark.parametrize(
    "where", [("history", "60", "note"), ("history", "\udc80"), ("history", "60", "spent")]
)
def test_a_lone_surrogate_in_the_policy_input_is_a_policy_error(where: tuple[str, ...]) -> None:
    """``policy_input`` does not read ``history`` deeply, and text with a lone surrogate has no
    UTF-8 form: the operator answers with its typed policy error, not an encoder's exception."""
    body = request()
    *path, last = where
    node = body["wasm"]
    for key in path:
        node = node[key]
    node[last] = {"\ud800": "1"} if last == "spent" else "\ud800"
    with pytest.raises(RPCError) as refused:
        _operator().evaluate_and_sign(body)
    assert refused.value.code == POLICY_EVALUATION_ERROR
    assert "lone surrogate" in refused.value.message


def _seeded_request(rng: random.Random) -> dict[str, Any]:
    """A request a hostile gateway might send: amounts around the caps, history totals and
    counts near (and past) the limits, strings shaped like JSON, extra or missing fields."""
    amount = rng.choice([1, UNIT, 10 * UNIT, 10 * UNIT + 1, 99 * UNIT, rng.randrange(1, 10**9)])
    body = request(amount)
    history = body["wasm"]["history"]
    window = history[rng.choice(["60", "3600", "86400"])]
    pick = rng.randrange(9)
    if pick == 0:
        window["count"] = rng.choice([0, 999, 1000, 10**6, (1 << 63) - 1, 1 << 63, -1])
    elif pick == 1:
        window["projected"][TOKEN.lower()] = rng.choice(["1", str(100 * UNIT + 1), "9" * 40])
    elif pick == 2:
        window["spent"] = {TOKEN.lower(): rng.choice(["[1,2]", "{}", "[" * 40 + "]" * 40])}
    elif pick == 3:
        window["note"] = rng.choice([None, 1.5, True, [], {"a": ["b", 2]}])
    elif pick == 4:
        body["wasm"]["extra"] = 1  # a key no gateway sends: refused
    elif pick == 5:
        body["wasm"]["approved"] = True  # without a signed approval: refused
    elif pick == 6:
        history["60"] = {"count": "0", "spent": {}, "projected": {}}  # a string count
    elif pick == 7:
        body["intent"]["data"] = list(bytes.fromhex(body["intent"]["data"][2:]))
    return body


def test_seeded_requests_sign_as_the_previous_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's input builder and its remembered outputs, through whole operators: seeded
    hostile requests get the same signature bytes (same key, same task) or the same error as
    with the previous walker and no remembered outputs."""
    from agentguard.policies import _engine
    from tests.policies.test_engine_input_fast import _reference

    rng = random.Random(911)
    bodies = [_seeded_request(rng) for _ in range(120)]
    fast_operator = _operator()
    fast = [_answer(fast_operator, body) for body in bodies]
    fast += [_answer(fast_operator, body) for body in bodies]  # again: remembered outputs
    with monkeypatch.context() as patched:
        patched.setattr(_engine, "_node", _reference)
        patched.setattr(_engine, "_MAX_DECIDED_TEXT", -1)  # remember nothing
        slow_operator = _operator()
        slow = [_answer(slow_operator, body) for body in bodies]
        slow += [_answer(slow_operator, body) for body in bodies]
        assert not slow_operator._engine._decided
    assert fast == slow
    kinds = {a["decision"] if isinstance(a, dict) else a[1][:25] for a in fast}
    assert {"allow", "deny"} <= kinds and len(kinds) >= 5, kinds
    assert fast_operator._engine._decided
