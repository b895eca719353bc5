"""Red team of ``TransactionIntent``'s decoded arguments taken from the cross-field check
(session 9): the value kept is what decoding the intent's own calldata gives, for every
shape of call, whether the intent is built, validated from the wire or copied."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from eth_abi.abi import encode as abi_encode

from agentguard import TransactionIntent
from agentguard._eip712 import keccak
from agentguard._intent import _decode_uncached

TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
SHOP = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
AGENT = "0x" + "ab" * 20

SIGNATURES: dict[str, Callable[[random.Random], list[Any]]] = {
    "transfer(address,uint256)": lambda r: [SHOP, r.randint(0, 2**256 - 1)],
    "approve(address,uint256)": lambda r: [SHOP, r.randint(0, 2**64)],
    "setValues(uint256[])": lambda r: [[r.randint(0, 2**32) for _ in range(r.randint(0, 5))]],
    "post(string,bytes)": lambda r: ["\u00e9x" * r.randint(0, 9), r.randbytes(r.randint(0, 70))],
    "route((address,uint256)[],bool)": lambda r: [
        [(SHOP, r.randint(0, 9)) for _ in range(r.randint(0, 3))],
        r.random() < 0.5,
    ],
}


def _intent(rng: random.Random, signature: str) -> TransactionIntent:
    args = SIGNATURES[signature](rng)
    from agentguard._intent import argument_types

    data = keccak(signature.encode())[:4] + abi_encode(argument_types(signature), args)
    return TransactionIntent(
        from_=AGENT,
        to=TOKEN,
        value=0,
        data="0x" + data.hex(),
        chain_id=8453,
        function_signature=signature,
    )


def test_decoded_arguments_are_what_decoding_the_calldata_gives() -> None:
    rng = random.Random(11)
    for _ in range(120):
        signature = rng.choice(sorted(SIGNATURES))
        built = _intent(rng, signature)
        data = bytes.fromhex(built.wire()["data"][2:])
        truth = _decode_uncached(signature, data)
        assert built.decoded_arguments == truth
        again = TransactionIntent.model_validate(built.model_dump(by_alias=False))
        assert again.decoded_arguments == truth
        assert built.model_copy().decoded_arguments == truth


def test_a_plain_transfer_has_no_arguments() -> None:
    intent = TransactionIntent(from_=AGENT, to=SHOP, value=5, data="0x", chain_id=8453)
    assert intent.decoded_arguments == ()
