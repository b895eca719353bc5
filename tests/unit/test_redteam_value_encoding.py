"""Red team: calldata and wire tricks that would make the operators value one thing while a
contract runs another. Each fails closed (an ``IntentError`` before anything is attested) or
is valued exactly as the contract reads it; the cases a Solidity decoder (or an old
abicoder-v1 contract, which masks instead of reverting) would read differently are refused.
"""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode

from agentguard import IntentError, TransactionIntent
from agentguard._eip712 import keccak
from agentguard._intent import argument_types, canonical_signature
from agentguard._value import UINT256_MAX
from agentguard.policies._testkit import evaluate

AGENT = "0x1111111111111111111111111111111111111111"
TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"  # USDC on Base
PERMIT2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
THIEF = "0x6666666666666666666666666666666666666666"
CAPS: dict[str, Any] = {"max_per_tx": {TOKEN.lower(): "5000000"}}


def word(n: int) -> bytes:
    return n.to_bytes(32, "big")


def addr_word(address: str, dirt: int = 0) -> bytes:
    return word((dirt << 160) | int(address, 16))


def intent(signature: str, body: bytes, *, to: str = TOKEN) -> TransactionIntent:
    return TransactionIntent(
        from_=AGENT,
        to=to,
        data=keccak(signature.encode())[:4] + body,
        chain_id=8453,
        function_signature=signature,
    )


@pytest.mark.parametrize(
    ("signature", "body", "to"),
    [
        # abicoder v1 masks an address to its low 160 bits: the spender read would be THIEF
        # while a decoder that kept the dirt would see another address
        ("approve(address,uint256)", addr_word(THIEF, dirt=1) + word(1), TOKEN),
        ("transfer(address,uint256)", addr_word(THIEF, dirt=0xFF) + word(1), TOKEN),
        # a bool of 2 is "true" to abicoder v1: setApprovalForAll(THIEF, 2) grants everything
        ("setApprovalForAll(address,bool)", addr_word(THIEF) + word(2), TOKEN),
        # uint160 with bit 160 set: masked to 2^160 - 1 (Permit2's unlimited) by a v1 reader
        (
            "approve(address,address,uint160,uint48)",
            addr_word(TOKEN) + addr_word(THIEF) + word((1 << 161) - 1) + word(1),
            PERMIT2,
        ),
        # uint48 expiration with high bits: masked to a far expiry, or 0 ("this block")
        (
            "approve(address,address,uint160,uint48)",
            addr_word(TOKEN) + addr_word(THIEF) + word(5) + word(1 << 48),
            PERMIT2,
        ),
        # short calldata: the EVM zero-pads it, so the amount read would be amount << 8k
        ("transfer(address,uint256)", addr_word(THIEF) + word(5_000_000 << 8)[:-1], TOKEN),
        ("approve(address,uint256)", addr_word(THIEF), TOKEN),
    ],
)
def test_words_a_contract_could_read_otherwise_are_refused(
    signature: str, body: bytes, to: str
) -> None:
    with pytest.raises(IntentError):
        intent(signature, body, to=to)


def test_an_unlimited_permit2_allowance_is_never_read_as_less() -> None:
    """2^160 - 1 is Permit2's 'never decremented' allowance: counted as 2^256 - 1."""
    body = addr_word(TOKEN) + addr_word(THIEF) + word((1 << 160) - 1) + word(1)
    spend = intent("approve(address,address,uint160,uint48)", body, to=PERMIT2).spend
    assert (spend.asset, spend.amount, spend.recipient) == (TOKEN, UINT256_MAX, THIEF)


@pytest.mark.parametrize(
    "written",
    [
        "function approve(address spender, uint256 amount) external returns (bool)",
        "approve(address,uint)",
        "approve( address\u00a0spender ,uint256 )",
    ],
)
def test_every_spelling_of_a_signature_is_the_canonical_one(written: str) -> None:
    """Operators hash and value the canonical signature, the one the vault's selector check and
    intent hash see; another spelling can neither change the hash nor dodge the valuation."""
    body = abi_encode(["address", "uint256"], [THIEF, UINT256_MAX])
    canonical = intent("approve(address,uint256)", body)
    spelled = TransactionIntent(
        from_=AGENT, to=TOKEN, data=canonical.data, chain_id=8453, function_signature=written
    )
    assert spelled.function_signature == "approve(address,uint256)"
    assert spelled.intent_hash == canonical.intent_hash
    assert spelled.spend == canonical.spend
    assert spelled.spend.amount == UINT256_MAX


def test_a_lookalike_name_or_type_is_refused() -> None:
    data = keccak(b"approve(address,uint256)")[:4] + abi_encode(
        ["address", "uint256"], [THIEF, UINT256_MAX]
    )
    for lookalike in ("\u0430pprove(address,uint256)", "approve(address,uint\uff12\uff15\uff16)"):
        with pytest.raises(IntentError):
            TransactionIntent(
                from_=AGENT, to=TOKEN, data=data, chain_id=8453, function_signature=lookalike
            )


def test_the_wire_forms_of_one_intent_hash_and_value_alike() -> None:
    """Byte arrays (Newton's gateway) and hex, upper- and lowercase addresses: one intent."""
    body = abi_encode(["address", "uint256"], [THIEF, 6_000_000])
    base = intent("transfer(address,uint256)", body)
    wire = base.wire()
    variants = [
        {
            **wire,
            "data": list(base.data),
            "function_signature": list(base.function_signature.encode()),
        },
        {**wire, "to": "0x" + TOKEN[2:].upper(), "from": AGENT.lower(), "value": "0"},
        {k: v for k, v in wire.items() if k != "chain_id"} | {"chainId": "8453"},
    ]
    for variant in variants:
        parsed = TransactionIntent.from_wire(variant)
        assert parsed.intent_hash == base.intent_hash
        assert parsed.spend.wasm() == base.spend.wasm()
        assert evaluate("agent_spend", parsed, CAPS).decision == "deny"  # 6 USDC > 5 USDC


def test_named_tuple_parameters_canonicalize_to_the_abi_type() -> None:
    """A parameter name after a tuple used to be glued onto it (``(address,uint256)x``)."""
    named = (
        "permit(address owner, ((address token, uint160 amount, uint48 expiration, "
        "uint48 nonce) details, address spender, uint256 sigDeadline) permitSingle, "
        "bytes signature)"
    )
    assert canonical_signature(named) == (
        "permit(address,((address,uint160,uint48,uint48),address,uint256),bytes)"
    )
    assert canonical_signature("f((uint a) [2] [] xs)") == "f((uint256)[2][])"
    signature = canonical_signature(named)
    args = [AGENT, ((TOKEN, 5, 1 << 40, 0), THIEF, 1 << 40), b"\x01" * 65]
    data = keccak(signature.encode())[:4] + abi_encode(argument_types(signature), args)
    spend = TransactionIntent(
        from_=AGENT, to=PERMIT2, data=data, chain_id=8453, function_signature=named
    ).spend
    assert (spend.kind, spend.asset, spend.amount, spend.recipient) == ("approval", TOKEN, 5, THIEF)


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("f(uint[] xs)", "f(uint256[])"),
        ("f(int[2][])", "f(int256[2][])"),
        ("f(byte b)", "f(bytes1)"),
        ("f(fixed,ufixed[])", "f(fixed128x18,ufixed128x18[])"),
        (
            "safeBatchTransferFrom(address,address,uint[],uint[],bytes)",
            "safeBatchTransferFrom(address,address,uint256[],uint256[],bytes)",
        ),
    ],
)
def test_solidity_aliases_canonicalize_inside_arrays_too(written: str, canonical: str) -> None:
    """``uint[]`` stayed ``uint[]``: a selector no contract has, and an ERC-1155 batch written
    that way missed the valuation table (it was refused as unknown, but never valued)."""
    assert canonical_signature(written) == canonical
