"""The fast wire reader (``TransactionIntent.from_wire`` without pydantic, one-word calldata
read without eth_abi) accepts exactly what the model did, with the same values and hash, and
refuses with the same error.

Two references: the model path of the current code (``model_validate`` with eth_abi decoding,
forced by patching the fast paths off), and goldens recorded from the code before this change
(commit a179a10) on the same seeded cases: ``python tests/unit/test_intent_fast.py --golden``
with ``PYTHONPATH`` pointing at that tree writes ``intent_fast_golden.json``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_hash.auto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

import agentguard._intent as intent_module
from agentguard._exceptions import IntentError
from agentguard._intent import TransactionIntent
from agentguard._value import KNOWN_SELECTORS

GOLDEN = Path(__file__).with_name("intent_fast_golden.json")
CASES = 3000
SEED = 11

TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
# every value-moving signature agentguard values (agentguard._value), and a few others
SIGNATURES = (
    "transfer(address,uint256)",
    "transferFrom(address,address,uint256)",
    "approve(address,uint256)",
    "increaseAllowance(address,uint256)",
    "decreaseAllowance(address,uint256)",
    "burn(uint256)",
    "burnFrom(address,uint256)",
    "transferAndCall(address,uint256)",
    "transferAndCall(address,uint256,bytes)",
    "permit(address,address,uint256,uint256,uint8,bytes32,bytes32)",
    "permit(address,address,uint256,uint256,bool,uint8,bytes32,bytes32)",
    "permit(address,address,uint256,uint256,bytes)",
    "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)",
    "safeTransferFrom(address,address,uint256)",
    "setApprovalForAll(address,bool)",
    "approve(address,address,uint160,uint48)",
    "transferFrom(address,address,uint160,address)",
    "authorizeOperator(address)",
    "deposit()",
    "store(uint256)",
    "vote(uint8,bool)",
    "swap(address,uint256,uint256,bytes32)",
)
# spellings a hostile or sloppy client may use for a signature
SPELLINGS = (
    "function transfer(address to, uint256 amount)",
    "transfer(address,uint)",
    " transfer( address , uint256 ) ",
    "payb_9uByHa(address,uint256)",  # approve's selector, another name: refused
    "transfer(address,uint256",
    "transfer",
    "(address,uint256)",
    "tránsfer(address,uint256)",
)


def _word_value(rng: random.Random, abi_type: str) -> Any:
    if abi_type == "address":
        return "0x" + bytes(rng.choice((b"\x22" * 20, rng.randbytes(20), bytes(20)))).hex()
    if abi_type == "bool":
        return rng.random() < 0.5
    if abi_type == "bytes32":
        return rng.randbytes(32)
    if abi_type == "bytes":
        return rng.randbytes(rng.choice((0, 1, 65, 70)))
    bits = int(abi_type[4:])
    return rng.choice(
        (0, 1, (1 << bits) - 1, rng.getrandbits(bits), rng.getrandbits(min(bits, 40)))
    )


def _mutate(rng: random.Random, data: bytes) -> bytes:
    kind = rng.randrange(9)
    if not data or kind == 0:
        return data
    at = rng.randrange(len(data))
    if kind == 1:  # flip one byte (padding, selector or value)
        return data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1 :]
    if kind == 2:
        return data + rng.randbytes(rng.choice((1, 31, 32)))
    if kind == 3:
        return data[: max(0, len(data) - rng.choice((1, 32)))]
    if kind == 4 and len(data) > 4 + 32:  # dirty the high bytes of a word (padding)
        word = 4 + 32 * rng.randrange((len(data) - 4) // 32)
        return data[:word] + b"\x01" + data[word + 1 :]
    if kind == 5 and len(data) > 4 + 32:  # a bool or uint8 word out of range
        word = 4 + 32 * rng.randrange((len(data) - 4) // 32)
        return data[: word + 31] + b"\x02" + data[word + 32 :]
    return data


def _calldata(rng: random.Random, signature: str) -> bytes:
    types = intent_module.argument_types(signature)
    data = keccak(signature.encode())[:4] + abi_encode(types, [_word_value(rng, t) for t in types])
    return _mutate(rng, data) if rng.random() < 0.5 else data


def _address(rng: random.Random) -> Any:
    choice = rng.randrange(12)
    raw = rng.choice((TOKEN, "0x" + rng.randbytes(20).hex(), "0x" + "11" * 20))
    if choice < 5:
        return raw
    if choice == 5:
        return raw.lower()
    if choice == 6:
        return "0x" + raw[2:].upper()
    if choice == 7:  # a mixed-case spelling that is not the checksum
        return raw[:2] + "".join(
            c.upper() if i % 3 == 0 else c.lower() for i, c in enumerate(raw[2:])
        )
    if choice == 8:
        return bytes.fromhex(raw[2:])
    return rng.choice((None, 5, raw[:-1], raw + "0", "0X" + raw[2:], [1, 2], ""))


def _quantity(rng: random.Random) -> Any:
    n = rng.choice((0, 1, 8453, 10**18, (1 << 256) - 1, 1 << 256, -1))
    return rng.choice(
        (
            n,
            hex(n) if n >= 0 else "-0x1",
            str(n),
            f" {n} ",
            True,
            1.5,
            "0X2105",
            "1_000",
            "",
            "0x",
            None,
        )
    )


def _wire(rng: random.Random) -> Any:
    """One wire intent: mostly well formed, with one or two fields mangled."""
    if rng.random() < 0.02:
        return rng.choice((None, [], "intent", 5))
    signature = rng.choice(SIGNATURES)
    wire: dict[str, Any] = {
        "from": "0x" + "11" * 20,
        "to": TOKEN,
        "value": "0x0",
        "chain_id": "0x2105",
    }
    data = _calldata(rng, signature)
    spelled: Any = signature
    if rng.random() < 0.15:
        spelled = rng.choice(SPELLINGS)
        try:
            canonical = intent_module.canonical_signature(spelled)
        except IntentError:
            canonical = ""
        if canonical and rng.random() < 0.7:
            data = _calldata(rng, canonical)
    how = rng.randrange(6)
    if how == 0:
        wire["function_signature"] = "0x" + spelled.encode().hex()
    elif how == 1:
        wire["function_signature"] = list(spelled.encode())
    elif how == 2:
        wire["functionSignature"] = spelled
    elif how == 3 and rng.random() < 0.3:
        wire["function_signature"] = rng.choice(("", "0x", None, "0xff", 7, "0xc3"))
    else:
        wire["function_signature"] = spelled
    data_how = rng.randrange(5)
    if data_how == 0:
        wire["data"] = list(data)
    elif data_how == 1:
        wire["data"] = "0x" + data.hex().upper()
    else:
        wire["data"] = "0x" + data.hex()
    for field in rng.sample(("from", "to", "value", "chain_id", "data", "camel"), rng.randrange(3)):
        if field in ("from", "to"):
            wire[field] = _address(rng)
        elif field in ("value", "chain_id"):
            wire[field] = _quantity(rng)
        elif field == "data":
            wire["data"] = rng.choice(("0x", "0xabc", "a9059cbb", None, 5, [256], b"\xa9\x05"))
        else:
            wire["chainId"] = rng.choice((wire["chain_id"], 8453, "0x1"))
            if rng.random() < 0.5:
                del wire["chain_id"]
    if rng.random() < 0.05:
        del wire[rng.choice(tuple(wire))]
    return wire


def cases() -> Iterator[Any]:
    rng = random.Random(SEED)
    for _ in range(CASES):
        yield _wire(rng)


def transfer_cases() -> Iterator[dict[str, Any]]:
    """Arguments of ``TransactionIntent.erc20_transfer`` (the client's and x402's builder)."""
    rng = random.Random(SEED + 2)
    for _ in range(CASES // 3):
        odd = rng.random
        yield {
            "sender": _address(rng) if odd() < 0.3 else "0x" + "11" * 20,
            "token": _address(rng) if odd() < 0.3 else TOKEN,
            "recipient": _address(rng) if odd() < 0.3 else "0x" + rng.randbytes(20).hex(),
            "amount": _quantity(rng) if odd() < 0.3 else rng.randrange(1 << rng.randrange(1, 257)),
            "chain_id": _quantity(rng) if odd() < 0.2 else 8453,
        }


def transfer_outcome(args: dict[str, Any]) -> str:
    try:
        intent = TransactionIntent.erc20_transfer(**args)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return _observed(intent)


def outcome(wire: Any) -> str:
    """Everything a caller can observe of reading ``wire``: the error, or the intent's fields,
    hash, decoded arguments (with their Python types), spend and policy input."""
    try:
        intent = TransactionIntent.from_wire(wire)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return _observed(intent)


def _observed(intent: TransactionIntent) -> str:
    seen = {
        "fields": repr(intent.model_dump()),
        "set": sorted(intent.model_fields_set),
        "hash": intent.intent_hash.hex(),
        "args": [f"{type(a).__name__}:{a!r}" for a in intent.decoded_arguments],
        "spend": repr(intent.spend),
        "parsed": intent.parsed(),
        "wire": intent.wire(),
    }
    return json.dumps(seen, sort_keys=True, default=repr)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _model_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference: pydantic's validation and eth_abi's decoding for every wire."""

    def refuse(cls: Any, fields: Any) -> Any:
        raise RuntimeError("fast path disabled")

    monkeypatch.setattr(TransactionIntent, "_validated_directly", classmethod(refuse))
    monkeypatch.setattr(intent_module, "_decode_static", lambda signature, data: None)


def _clear_caches() -> None:
    intent_module._decode_cached.cache_clear()


def _outcomes(read: Callable[[Any], str]) -> list[str]:
    _clear_caches()
    return [read(wire) for wire in cases()]


def test_the_cases_cover_both_sides() -> None:
    results = _outcomes(outcome)
    accepted = sum(not r.startswith(("IntentError", "TypeError")) for r in results)
    assert 0.3 * CASES < accepted < 0.9 * CASES
    assert any("checksum" in r for r in results)
    assert any("canonical ABI encoding" in r for r in results)
    assert any("has the selector of" in r for r in results)


def test_fast_reader_equals_the_model_path(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _outcomes(outcome)
    with monkeypatch.context() as patched:
        _model_path(patched)
        slow = _outcomes(outcome)
    for wire, got, want in zip(cases(), fast, slow, strict=True):
        assert got == want, wire


def test_fast_reader_equals_the_previous_code() -> None:
    """Goldens recorded from the code before the fast reader (see the module docstring)."""
    golden = json.loads(GOLDEN.read_text())
    assert golden["cases"] == CASES and golden["seed"] == SEED
    got = [_digest(r) for r in _outcomes(outcome)]
    mismatched = [i for i, (a, b) in enumerate(zip(got, golden["outcomes"], strict=True)) if a != b]
    assert not mismatched, mismatched[:10]


def test_fast_transfer_builder_equals_the_model_path(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = [transfer_outcome(args) for args in transfer_cases()]
    with monkeypatch.context() as patched:
        _model_path(patched)
        slow = [transfer_outcome(args) for args in transfer_cases()]
    assert fast == slow
    assert CASES // 10 < sum(not r.startswith("IntentError") for r in fast) < CASES // 3


def test_fast_transfer_builder_equals_the_previous_code() -> None:
    golden = json.loads(GOLDEN.read_text())
    got = [_digest(transfer_outcome(args)) for args in transfer_cases()]
    assert got == golden["transfers"]


def test_static_decoder_matches_eth_abi_on_every_word_shape() -> None:
    """Where the direct reader answers, eth_abi (with the canonical re-encoding check) answers
    the same values of the same types; where eth_abi refuses, the direct reader never
    accepts."""
    rng = random.Random(SEED + 1)
    answered = 0
    for _ in range(20_000):
        signature = rng.choice(SIGNATURES)
        data = _calldata(rng, signature)
        fast = intent_module._decode_static(signature, data)
        if fast is None:
            continue
        answered += 1
        slow = intent_module._decode_uncached(signature, data)
        assert [(type(a), a) for a in fast] == [(type(a), a) for a in slow], (signature, data)
    assert answered > 5_000


@pytest.mark.parametrize(
    ("signature", "data"),
    [
        # an address word with a dirty high byte: eth_abi refuses, so must the reader
        (
            "transfer(address,uint256)",
            b"\xa9\x05\x9c\xbb" + b"\x01" + bytes(11) + b"\x22" * 20 + bytes(32),
        ),
        # permit's v (uint8) of 256
        (
            "permit(address,address,uint256,uint256,uint8,bytes32,bytes32)",
            keccak(b"permit(address,address,uint256,uint256,uint8,bytes32,bytes32)")[:4]
            + bytes(32 * 4)
            + (256).to_bytes(32, "big")
            + bytes(64),
        ),
        # a bool of 2
        (
            "setApprovalForAll(address,bool)",
            keccak(b"setApprovalForAll(address,bool)")[:4] + bytes(63) + b"\x02",
        ),
        # a trailing byte after a canonical transfer
        ("transfer(address,uint256)", b"\xa9\x05\x9c\xbb" + bytes(64) + b"\x00"),
    ],
)
def test_non_canonical_words_are_refused_as_before(signature: str, data: bytes) -> None:
    """A hostile gateway's calldata that a sloppy fast reader would take (dirty padding, an
    out-of-range uint8 or bool, trailing bytes) is left to eth_abi, which refuses it, with the
    same error as before the fast reader."""
    assert intent_module._decode_static(signature, data) is None
    wire = {"from": "0x" + "11" * 20, "to": TOKEN, "chain_id": 8453, "data": "0x" + data.hex(),
            "function_signature": signature}  # fmt: skip
    with pytest.raises(IntentError):
        TransactionIntent.from_wire(wire)


def test_a_rejected_fast_read_is_judged_by_the_model() -> None:
    """Errors come from the model path: the message of a refused field is the model's."""
    wire = {"from": "0x" + "11" * 20, "to": TOKEN.lower().replace("c", "C", 1), "chain_id": 8453}
    with pytest.raises(IntentError, match="wrong EIP-55 checksum"):
        TransactionIntent.from_wire(wire)


def test_a_fast_read_intent_is_as_frozen_as_a_validated_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing read from the wire can be changed between its check and its signature: the
    directly built intent refuses assignment exactly like a validated one, and holds bytes."""
    wire = {"from": "0x" + "11" * 20, "to": TOKEN, "chain_id": 8453, "data": [], "value": 1}

    def attempt() -> str:
        intent = TransactionIntent.from_wire(wire)
        assert type(intent.data) is bytes
        try:
            setattr(intent, "to", "0x" + "99" * 20)  # noqa: B010 - the frozen model refuses it
        except Exception as exc:
            return type(exc).__name__
        return "assigned"

    fast = attempt()
    with monkeypatch.context() as patched:
        _model_path(patched)
        assert attempt() == fast != "assigned"


_TABLE = sorted(entry.signature for entry in KNOWN_SELECTORS.values())


_WORD = st.one_of(
    st.binary(min_size=32, max_size=32),
    st.integers(0, 2).map(lambda b: b.to_bytes(32, "big")),
    st.integers(0, 300).map(lambda b: b.to_bytes(32, "big")),
    st.binary(min_size=20, max_size=20).map(lambda a: bytes(12) + a),
    st.binary(min_size=20, max_size=20).map(lambda a: b"\x01" + bytes(11) + a),
)


@settings(max_examples=1500, deadline=None)
@given(signature=st.sampled_from(_TABLE), draw=st.data())
def test_static_decoder_never_accepts_what_eth_abi_refuses(
    signature: str, draw: st.DataObject
) -> None:
    """Arbitrary words after every value-moving selector (dirty padding, out-of-range uintN and
    bools, odd lengths): the direct reader answers only where eth_abi with the canonical check
    answers the same values."""
    count = len(intent_module.argument_types(signature))
    count = draw.draw(st.sampled_from((count, count, count, count - 1, count + 1)))
    words = draw.draw(st.lists(_WORD, min_size=max(count, 0), max_size=max(count, 0)))
    tail = draw.draw(st.sampled_from((b"", b"", b"", b"\x00", b"\x01" * 31)))
    data = KNOWN_SELECTORS_BY_SIGNATURE[signature] + b"".join(words) + tail
    fast = intent_module._decode_static(signature, data)
    if fast is None:
        return
    slow = intent_module._decode_uncached(signature, data)
    assert [(type(a), a) for a in fast] == [(type(a), a) for a in slow]


KNOWN_SELECTORS_BY_SIGNATURE = {entry.signature: sel for sel, entry in KNOWN_SELECTORS.items()}

if __name__ == "__main__" and "--golden" in sys.argv:
    records = [_digest(outcome(wire)) for wire in cases()]
    transfers = [_digest(transfer_outcome(args)) for args in transfer_cases()]
    GOLDEN.write_text(
        json.dumps({"seed": SEED, "cases": CASES, "outcomes": records, "transfers": transfers})
        + "\n"
    )
    print(f"wrote {len(records)} outcomes to {GOLDEN}")


def test_the_direct_build_equals_pydantics_model_construct(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``_validated_directly`` builds the model itself (``_constructed``) instead of through
    ``model_construct``: on every accepted seeded case the two are the same object state
    (fields in order, fields set, extra, private, cached values), equal, hashed and pickled
    alike."""
    import pickle

    real = TransactionIntent.model_construct
    built: list[TransactionIntent] = []

    def construct(fields_set: Any = None, **values: Any) -> TransactionIntent:
        built.append(real(fields_set, **values))
        return built[-1]

    fast: list[TransactionIntent] = []
    for wire in cases():
        try:
            fast.append(TransactionIntent.from_wire(wire))
        except Exception:  # refusals are compared elsewhere
            continue
    with monkeypatch.context() as patched:
        patched.setattr(intent_module, "_constructed", lambda cls, v, s=None: construct(s, **v))
        for intent in fast:
            again = TransactionIntent.from_wire(intent.wire())
            assert again is built[-1]
            assert vars(again) == vars(intent)
            assert list(vars(again)) == list(vars(intent))
            assert again.model_fields_set == intent.model_fields_set
            assert again.__pydantic_extra__ is intent.__pydantic_extra__ is None
            assert again.__pydantic_private__ is intent.__pydantic_private__ is None
            assert again == intent and hash(again) == hash(intent)
            assert pickle.loads(pickle.dumps(intent)) == again
    assert len(fast) > CASES // 4


def _hex_by_regex(value: Any) -> bytes | None:
    """What calldata and wire bytes were read with before ``_hex``: the regex, then fromhex."""
    if isinstance(value, str) and intent_module._HEX_RE.match(value):
        return bytes.fromhex(value[2:])
    return None


class _Str(str):
    __slots__ = ()


HOSTILE_HEX = [
    "",
    "0",
    "0x",
    "0X",
    "0x0",
    "0x00",
    "0X00",
    "0xgg",
    "0x 00",
    "0x00 ",
    "0x0 0",
    "0x00\n",
    "0x00\t11",
    "0x\u0660\u0661",  # Arabic-Indic digits: int() would read them, hex must not
    "0x\uff10\uff11",  # full-width digits
    "0x00\x00",
    "0xa9059CBB",
    " 0x00",
    "x00",
    "00",
    "0x" + "ab" * 5000,
    "0x" + "ab" * 5000 + "a",
    _Str("0x00ff"),
    _Str("0x0 0"),
    b"0x00",
    None,
    5,
    ["0x00"],
]


@pytest.mark.parametrize("value", HOSTILE_HEX, ids=repr)
def test_hex_reader_equals_the_regex(value: Any) -> None:
    assert intent_module._hex(value) == _hex_by_regex(value)


@settings(max_examples=2000)
@given(
    st.one_of(
        st.text(),
        st.text(alphabet="0123456789abcdefABCDEFxX \t\n\r\x0b\x0c").map(lambda t: "0x" + t),
        st.binary().map(lambda b: "0x" + b.hex()),
    )
)
def test_hex_reader_equals_the_regex_on_random_text(value: str) -> None:
    assert intent_module._hex(value) == _hex_by_regex(value)


# every ASCII character (NUL, controls, the whitespace ``fromhex`` skips, the separators
# ``str.isspace`` counts but ``fromhex`` does not), and non-ASCII look-alikes: digits, spaces,
# a BOM, a lone surrogate
_EVERY_CHAR = [chr(c) for c in range(128)] + list("\x85\xa0\u2028\u3000\u0660\uff10\ufeff\udc80")


def test_hex_reader_equals_the_regex_on_every_short_text() -> None:
    """Every text of up to two characters after "0x", "0X" or nothing, and every text of up to
    four hex digits and whitespace after "0x" (where fromhex's skipping could show): the same
    bytes or the same refusal as the regex."""
    tails = [a + b for a in ["", *_EVERY_CHAR] for b in ["", *_EVERY_CHAR]]
    spaced = "0aF \t\n\r\x0b\x0c\x1c"
    tails += ["".join(t) for n in range(3, 5) for t in itertools.product(spaced, repeat=n)]
    differ = [
        prefix + tail
        for prefix in ("0x", "0X", "")
        for tail in tails
        if intent_module._hex(prefix + tail) != _hex_by_regex(prefix + tail)
    ]
    assert not differ
    assert intent_module._hex("0xaF") == b"\xaf" and intent_module._hex("0xa F") is None
