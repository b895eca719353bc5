"""``call_intent``: the exact intent operators see for an offchain call (no network needed)."""

from __future__ import annotations

import json

import pytest
from eth_abi.abi import decode

from agentguard import OFFCHAIN_TARGET, ConfigurationError, IntentError, TransactionIntent
from agentguard import call_intent as ci
from agentguard._eip712 import keccak

AGENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def test_the_shape_the_contract_promises() -> None:
    intent = ci(AGENT, "send_email", {"to": "a@b.c", "cc": ("x", "y"), "n": 1.5}, chain_id=8453)
    assert OFFCHAIN_TARGET.lower() == "0x" + keccak(b"agentguard.offchain-call")[12:].hex()
    assert (intent.from_, intent.to, intent.value, intent.chain_id) == (
        AGENT, OFFCHAIN_TARGET, 0, 8453
    )  # fmt: skip
    assert intent.function_signature == "send_email(string)"
    assert intent.data[:4] == keccak(b"send_email(string)")[:4]
    (text,) = decode(["string"], intent.data[4:])
    assert text == '{"cc":["x","y"],"n":1.5,"to":"a@b.c"}'  # canonical: sorted, no spaces
    assert intent.parsed()["decoded_function_arguments"] == [text]
    assert intent.spend.kind == "unknown_call" and intent.spend.amount == 0


def test_operators_parse_it_back_to_the_same_hash() -> None:
    intent = ci(AGENT, "notify", {"msg": "héllo ✓", "n": [1, {"k": None}]}, chain_id=84532)
    again = TransactionIntent.from_wire(intent.wire())
    assert again == intent and again.intent_hash == intent.intent_hash
    assert again.parsed()["decoded_function_signature"] == "notify(string)"
    assert json.loads(again.parsed()["decoded_function_arguments"][0])["msg"] == "héllo ✓"


def test_key_order_and_containers_do_not_change_the_intent() -> None:
    a = ci(AGENT, "f", {"a": 1, "b": [1, 2]}, chain_id=8453)
    b = ci(AGENT, "f", {"b": (1, 2), "a": 1}, chain_id=8453)
    assert a.intent_hash == b.intent_hash


@pytest.mark.parametrize("name", ["_x", "$y", "sendEmail2", "a" * 128])
def test_solidity_identifiers_are_names(name: str) -> None:
    assert ci(AGENT, name, {}, chain_id=8453).function_name == name


@pytest.mark.parametrize(
    "name", ["", "2fa", "send-email", "send email", "f(string)", "a" * 129, "é", None, 3]
)
def test_anything_else_is_a_configuration_error_naming_name(name: object) -> None:
    with pytest.raises(ConfigurationError, match="name="):
        ci(AGENT, name, {}, chain_id=8453)  # type: ignore[arg-type]


def test_arguments_must_be_a_mapping() -> None:
    with pytest.raises(IntentError, match="mapping"):
        ci(AGENT, "f", ["a"], chain_id=8453)  # type: ignore[arg-type]
    with pytest.raises(IntentError):
        ci(AGENT, "f", {"n": 10**5000}, chain_id=8453)  # longer than Python writes as text


def test_a_dict_whose_items_lie_is_read_for_what_it_holds() -> None:
    """Before: the top level was read through ``arguments.items()``, so a dict subclass could
    hide a key from the hash that the function would still see."""

    class Sly(dict[str, object]):
        def items(self):  # type: ignore[no-untyped-def,override]
            return [(k, v) for k, v in super().items() if k != "bcc"]

    lying = ci(AGENT, "f", Sly(to="a", bcc="eve"), chain_id=8453)
    assert lying == ci(AGENT, "f", {"to": "a", "bcc": "eve"}, chain_id=8453)
