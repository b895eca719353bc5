"""Fuzz: the public readers of wire documents, ``Attestation.from_json`` and
``TransactionIntent.from_wire``, and what a parsed intent is then asked (hash, valuation,
the policy's ``input``).

Both are public: a caller may hand them a document parsed by any JSON library (NaN,
Infinity, lone surrogates included). The outcome must be the value or ``MalformedAttestation``
/ ``IntentError``; an intent that parses must then hash, value and render without error.
"""

from __future__ import annotations

from typing import Any

from eth_abi.abi import encode as abi_encode
from hypothesis import given
from hypothesis import strategies as st

from agentguard import Attestation, TransactionIntent
from agentguard._eip712 import keccak

from .hostile import budget, mutated, outcome, python_values, wire_values

SENDER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAYEE = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"

ATTESTATION = {
    "scheme": "ecdsa",
    "decision": "allow",
    "task_id": "0x" + "11" * 32,
    "policy_id": list(b"\x22" * 32),
    "policy_client": TOKEN,
    "intent_hash": "0x" + "33" * 32,
    "expires_at": 1_764_000_300,
    "signatures": [{"operator": PAYEE, "signature": "0x" + "44" * 64 + "1b"}],
    "reasons": ["within the cap"],
}
TRANSFER = TransactionIntent.erc20_transfer(
    sender=SENDER, token=TOKEN, recipient=PAYEE, amount=10**6, chain_id=8453
).wire()
CAMEL = {
    "from": SENDER,
    "to": TOKEN,
    "value": "0x0",
    "data": list(bytes.fromhex(TRANSFER["data"][2:])),
    "chainId": 8453,
    "functionSignature": list(b"transfer(address,uint256)"),
}


@budget(300)
@given(st.one_of(mutated(ATTESTATION, python_values), python_values))
def test_attestation_documents(doc: Any) -> None:
    parsed = outcome(Attestation.from_json, doc)
    if isinstance(parsed, Attestation):
        assert Attestation.from_json(parsed.to_json()) == parsed  # what it writes, it reads


def _use(intent: TransactionIntent) -> None:
    """Everything the pipeline and the network ask of a parsed intent."""
    intent.intent_hash  # noqa: B018
    intent.spend  # noqa: B018
    intent.parsed()
    TransactionIntent.from_wire(intent.wire())
    repr(intent)


@budget(400)
@given(st.one_of(mutated(TRANSFER, python_values), mutated(CAMEL, python_values), python_values))
def test_intent_wire_documents(wire: Any) -> None:
    intent = outcome(TransactionIntent.from_wire, wire)
    if isinstance(intent, TransactionIntent):
        outcome(_use, intent)


_TYPES = st.recursive(
    st.sampled_from(
        [
            *("address", "uint256", "uint8", "int256", "bool", "bytes", "bytes32", "bytes1"),
            *("string", "uint", "int", "byte", "fixed", "ufixed128x18", "uint7", "bytes33", "x"),
            "function",
        ]
    ),
    lambda inner: st.one_of(
        inner.map(lambda t: t + "[]"),
        st.tuples(inner, st.integers(0, 3)).map(lambda p: f"{p[0]}[{p[1]}]"),
        st.lists(inner, min_size=0, max_size=3).map(lambda ts: "(" + ",".join(ts) + ")"),
    ),
    max_leaves=6,
)
_NAMES = st.sampled_from(
    ["transfer", "approve", "permit", "send", "f", "payb_9uByHa", "", "1x", "tränsfer"]
)


@st.composite
def _calls(draw: Any) -> dict[str, Any]:
    """A signature over random types and calldata that starts with its selector, followed by
    arbitrary words (lengths and offsets that point anywhere, huge array lengths)."""
    types = draw(st.lists(_TYPES, max_size=4))
    signature = f"{draw(_NAMES)}({','.join(types)})"
    words = draw(
        st.lists(
            st.one_of(
                st.sampled_from([0, 1, 32, 64, 2**255, 2**256 - 1, 2**64, 2**32]),
                st.integers(0, 2**256 - 1),
            ),
            max_size=10,
        )
    )
    body = b"".join(w.to_bytes(32, "big") for w in words) + draw(st.binary(max_size=40))
    if draw(st.booleans()):
        try:  # sometimes a real encoding of a simple argument list
            body = abi_encode(["address", "uint256"], [PAYEE, draw(st.integers(0, 2**256 - 1))])
            signature = f"{draw(_NAMES)}(address,uint256)"
        except Exception:
            pass
    selector = keccak(signature.encode("utf-8", "surrogatepass"))[:4]
    return {
        "from": SENDER,
        "to": TOKEN,
        "value": draw(st.sampled_from(["0x0", "0x1", 0, "1", "0x" + "f" * 64])),
        "data": "0x" + (selector + body).hex(),
        "chain_id": draw(st.sampled_from([8453, "0x2105", 1, 0, -1, 2**64])),
        "function_signature": draw(
            st.sampled_from([signature, "0x" + signature.encode().hex(), "function " + signature])
        ),
    }


@budget(400)
@given(_calls())
def test_intent_calldata_under_any_signature(wire: dict[str, Any]) -> None:
    """Calldata that the ABI decoder must read under a signature chosen by the peer."""
    intent = outcome(TransactionIntent.from_wire, wire)
    if isinstance(intent, TransactionIntent):
        outcome(_use, intent)


@budget(150)
@given(wire_values)
def test_intent_fields_directly(value: Any) -> None:
    """The constructor's own field validators with one hostile field at a time."""
    for field in ("from", "to", "value", "data", "chain_id", "function_signature"):
        outcome(TransactionIntent.from_wire, {**TRANSFER, field: value})
