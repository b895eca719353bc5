from __future__ import annotations

import pytest
from eth_abi.abi import encode as abi_encode
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard import IntentError, PaymentIntent, TransactionIntent
from agentguard._eip712 import keccak
from agentguard._intent import NATIVE_ASSET, canonical_signature, chain_id_from_network

from .conftest import AGENT, PAYEE, TOKEN


@pytest.mark.parametrize(
    ("given_sig", "canonical"),
    [
        ("transfer(address,uint256)", "transfer(address,uint256)"),
        ("function transfer(address to, uint256 amount)", "transfer(address,uint256)"),
        ("f(uint, int)", "f(uint256,int256)"),
        ("g((address,uint256)[] items, bytes data)", "g((address,uint256)[],bytes)"),
        ("h()", "h()"),
    ],
)
def test_function_signatures_are_normalised(given_sig, canonical):
    assert canonical_signature(given_sig) == canonical


@pytest.mark.parametrize("bad", ["transfer", "(address)", "transfer(address", "1x(uint256)"])
def test_malformed_signatures_are_refused(bad):
    with pytest.raises(IntentError):
        canonical_signature(bad)


def test_selector_must_match_signature(intent):
    with pytest.raises(IntentError, match="selector"):
        TransactionIntent(
            from_=AGENT,
            to=TOKEN,
            data=intent.data,
            chain_id=8453,
            function_signature="approve(address,uint256)",
        )


def test_calldata_without_signature_is_refused(intent):
    with pytest.raises(IntentError, match="function_signature"):
        TransactionIntent(from_=AGENT, to=TOKEN, data=intent.data, chain_id=8453)


@pytest.mark.parametrize(
    "fields",
    [
        {"from": "0x123", "to": TOKEN, "chain_id": 8453},
        {"from": AGENT, "to": TOKEN, "chain_id": 0},
        {"from": AGENT, "to": TOKEN, "chain_id": 8453, "value": -1},
        {"from": AGENT, "to": TOKEN, "chain_id": 8453, "value": 2**256},
        {"from": AGENT, "to": TOKEN, "chain_id": 8453, "value": 1.5},
        {"from": AGENT, "to": TOKEN, "chain_id": 8453, "data": "0xabc"},
    ],
)
def test_bad_fields_raise_intent_error(fields):
    with pytest.raises(IntentError):
        TransactionIntent.model_validate(fields)


def test_wire_form_is_newton_snake_case_hex(intent):
    wire = intent.wire()
    assert set(wire) == {"from", "to", "value", "data", "chain_id", "function_signature"}
    assert wire["chain_id"] == "0x2105"
    assert wire["value"] == "0x0"
    assert bytes.fromhex(wire["function_signature"][2:]) == b"transfer(address,uint256)"
    assert TransactionIntent.from_wire(wire) == intent


def test_wire_accepts_newton_byte_arrays(intent):
    wire = dict(intent.wire())
    wire["data"] = list(intent.data)
    wire["function_signature"] = list(b"transfer(address,uint256)")
    assert TransactionIntent.from_wire(wire).intent_hash == intent.intent_hash


def test_parsed_input_matches_newton_shape(intent):
    parsed = intent.parsed()
    assert parsed["value"] == "0"
    assert parsed["chain_id"] == "8453"
    assert parsed["decoded_function_signature"] == "transfer(address,uint256)"
    assert parsed["decoded_function_arguments"] == [PAYEE, "1000000"]
    assert parsed["function"]["name"] == "transfer"


def test_amounts_beyond_2_64_stay_exact(make_intent):
    big = 2**200 + 1
    intent = make_intent(amount=big)
    assert intent.spend.amount == big
    assert intent.parsed()["decoded_function_arguments"][1] == str(big)


def test_native_spend():
    intent = TransactionIntent(from_=AGENT, to=PAYEE, value=5, chain_id=8453)
    assert intent.spend.asset == NATIVE_ASSET
    assert intent.spend.amount == 5
    assert intent.spend.recipient == PAYEE


def test_hash_changes_with_every_field(intent):
    base = intent.intent_hash
    variants = [
        TransactionIntent.erc20_transfer(
            sender=AGENT, token=TOKEN, recipient=PAYEE, amount=1_000_001, chain_id=8453
        ),
        TransactionIntent.erc20_transfer(
            sender=AGENT, token=TOKEN, recipient=PAYEE, amount=1_000_000, chain_id=1
        ),
        TransactionIntent.erc20_transfer(
            sender=AGENT, token=PAYEE, recipient=PAYEE, amount=1_000_000, chain_id=8453
        ),
        TransactionIntent.erc20_transfer(
            sender=PAYEE, token=TOKEN, recipient=PAYEE, amount=1_000_000, chain_id=8453
        ),
        TransactionIntent.erc20_transfer(
            sender=AGENT, token=TOKEN, recipient=AGENT, amount=1_000_000, chain_id=8453
        ),
    ]
    assert len({base, *(v.intent_hash for v in variants)}) == 6


def test_payment_intent_is_the_equivalent_transfer():
    payment = PaymentIntent(
        payer=AGENT,
        scheme="exact",
        network="eip155:8453",
        asset=TOKEN,
        amount="10000",
        pay_to=PAYEE,
        resource="http://127.0.0.1/paid",
    )
    transfer = TransactionIntent.erc20_transfer(
        sender=AGENT, token=TOKEN, recipient=PAYEE, amount=10000, chain_id=8453
    )
    assert payment.intent_hash == transfer.intent_hash
    assert payment.spend.amount == 10000
    assert payment.wasm_args()["x402"]["resource"] == "http://127.0.0.1/paid"


@pytest.mark.parametrize(
    "network", ["solana:mainnet", "eip155:", "eip155:abc", "moon", "eip155:0", "eip155:000"]
)
def test_unknown_networks_are_refused(network):
    with pytest.raises(IntentError):
        chain_id_from_network(network)


@pytest.mark.parametrize("amount", [0, -5, "1e6", "0x10", 2**256, True, 1.0])
def test_payment_amounts_must_be_positive_atomic_integers(amount):
    with pytest.raises(IntentError):
        PaymentIntent(
            payer=AGENT, scheme="exact", network="base", asset=TOKEN, amount=amount, pay_to=PAYEE
        )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=80) | st.floats(allow_nan=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=6)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    wire=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {
                "from": st.one_of(st.just(AGENT), json_values),
                "to": st.one_of(st.just(TOKEN), json_values),
                "value": st.one_of(st.just("0x0"), json_values),
                "data": st.one_of(st.just("0x"), json_values),
                "chain_id": st.one_of(st.just("0x2105"), json_values),
                "function_signature": st.one_of(st.just("0x"), json_values),
            }
        ),
    )
)
def test_from_wire_fuzz_only_raises_intent_error(wire):
    """Untrusted wire bytes either parse into a valid intent or raise IntentError."""
    try:
        intent = TransactionIntent.from_wire(wire)
    except IntentError:
        return
    assert TransactionIntent.from_wire(intent.wire()) == intent


# -- finding 10: every bad input is an IntentError from the constructors ------------------------

CHECKSUMMED = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
WRONG_CHECKSUM = "0x833589FCD6eDb6E08f4c7C32D4f71b54bdA02913"  # one letter's case flipped


@pytest.mark.parametrize("address", [CHECKSUMMED.lower(), "0x" + CHECKSUMMED[2:].upper()])
def test_all_lower_or_all_upper_addresses_are_accepted(address):
    intent = TransactionIntent(from_=AGENT, to=address, value=1, chain_id=8453)
    assert intent.to == CHECKSUMMED


def test_a_wrong_eip55_checksum_is_refused():
    """Before issue 7 a mistyped mixed-case address was silently re-checksummed and used."""
    with pytest.raises(IntentError, match="EIP-55"):
        TransactionIntent(from_=AGENT, to=WRONG_CHECKSUM, value=1, chain_id=8453)
    with pytest.raises(IntentError, match="EIP-55"):
        TransactionIntent.erc20_transfer(
            sender=AGENT, token=TOKEN, recipient=WRONG_CHECKSUM, amount=1, chain_id=8453
        )
    with pytest.raises(IntentError, match="EIP-55"):
        PaymentIntent(
            payer=AGENT,
            scheme="exact",
            network="base",
            asset=WRONG_CHECKSUM,
            amount=1,
            pay_to=PAYEE,
        )
    wire = TransactionIntent(from_=AGENT, to=PAYEE, value=1, chain_id=8453).wire()
    with pytest.raises(IntentError, match="EIP-55"):
        TransactionIntent.from_wire({**wire, "to": WRONG_CHECKSUM})


BAD_AMOUNTS = [1.5, 1.0, -1, 2**256, True, "1e6", "ten", None, [1], b"\x01", "1" * 5000]


@pytest.mark.parametrize("amount", BAD_AMOUNTS)
def test_erc20_transfer_amounts_are_checked_before_abi_encoding(amount):
    """Before: eth_abi's EncodingError (or OverflowError) escaped for these."""
    with pytest.raises(IntentError):
        TransactionIntent.erc20_transfer(
            sender=AGENT, token=TOKEN, recipient=PAYEE, amount=amount, chain_id=8453
        )


@pytest.mark.parametrize("value", BAD_AMOUNTS)
def test_transaction_values_are_exact_uint256(value):
    with pytest.raises(IntentError):
        TransactionIntent(from_=AGENT, to=PAYEE, value=value, chain_id=8453)


@pytest.mark.parametrize(
    "address",
    ["0x123", "0x" + "g" * 40, 123, None, b"\x01" * 19, "1111111111111111111111111111111111111111",
     " 0x1111111111111111111111111111111111111111", "0x" + "11" * 20 + "\n"],
)  # fmt: skip
def test_malformed_addresses_are_intent_errors(address):
    with pytest.raises(IntentError):
        TransactionIntent.erc20_transfer(
            sender=AGENT, token=TOKEN, recipient=address, amount=1, chain_id=8453
        )
    with pytest.raises(IntentError):
        TransactionIntent(from_=address, to=PAYEE, chain_id=8453)


@pytest.mark.parametrize(
    "signature",
    ["f(" + "(" * 5000 + "uint256" + ")" * 5000 + ")", "f(" + "uint256," * 2000 + "uint256)"],
)
def test_hostile_signatures_are_intent_errors_not_recursion_errors(signature):
    with pytest.raises(IntentError):
        canonical_signature(signature)


@settings(max_examples=300, deadline=None)
@given(
    sender=st.one_of(st.just(AGENT), json_values, st.binary(max_size=24)),
    recipient=st.one_of(st.just(PAYEE), st.text(max_size=44), json_values),
    amount=st.one_of(st.integers(), st.floats(), st.text(max_size=90), json_values),
    chain_id=st.one_of(st.just(8453), st.integers(), json_values),
)
def test_constructors_fuzz_only_raise_intent_error(sender, recipient, amount, chain_id):
    """Random (hostile) inputs to every intent constructor: a valid intent or IntentError."""
    try:
        intent = TransactionIntent.erc20_transfer(
            sender=sender, token=TOKEN, recipient=recipient, amount=amount, chain_id=chain_id
        )
    except IntentError:
        pass
    else:
        assert intent.spend.amount == intent.decoded_arguments[1]
    try:
        TransactionIntent(from_=sender, to=recipient, value=amount, chain_id=chain_id)
    except IntentError:
        pass
    try:
        PaymentIntent(
            payer=sender, scheme="exact", network="base", asset=TOKEN, amount=amount,
            pay_to=recipient,
        )  # fmt: skip
    except IntentError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    signature=st.text(alphabet="abcf_$()[],0123456789 uintaddressbytes", max_size=60),
    data=st.binary(max_size=200),
    value=st.one_of(st.integers(min_value=0, max_value=2), json_values),
)
def test_wire_calldata_fuzz_only_raises_intent_error(signature, data, value):
    """Hostile signatures and calldata from the wire: parse and value, or IntentError."""
    wire = {
        "from": AGENT,
        "to": TOKEN,
        "value": value,
        "data": "0x" + (keccak(signature.encode())[:4] + data).hex(),
        "chain_id": "0x2105",
        "function_signature": "0x" + signature.encode().hex(),
    }
    try:
        intent = TransactionIntent.from_wire(wire)
    except IntentError:
        return
    assert intent.spend.kind in ("native", "transfer", "approval", "nft", "unknown_call")
    intent.parsed()


def test_a_changed_copy_is_revalidated_and_rehashed(intent):
    """Pydantic's model_copy skipped validation and kept the cached hash and spend: a copy
    with another value or a colliding name kept the original's intent_hash."""
    changed = intent.model_copy(update={"to": PAYEE})
    assert (changed.to, changed.spend.asset) == (PAYEE, PAYEE)
    assert changed.intent_hash != intent.intent_hash
    with pytest.raises(IntentError, match="also sends"):  # revalidated
        intent.model_copy(update={"value": 7})
    approve = keccak(b"approve(address,uint256)")[:4] + intent.data[4:]
    with pytest.raises(IntentError):
        intent.model_copy(
            update={"data": approve, "function_signature": "payb_9uByHa(address,uint256)"}
        )
    assert intent.model_copy() == intent
    payment = PaymentIntent(
        payer=AGENT, scheme="exact", network="base", asset=TOKEN, amount=5, pay_to=PAYEE
    )
    assert payment.model_copy(update={"amount": 6}).intent_hash != payment.intent_hash


@pytest.mark.parametrize("amount", ["\uff11000000", "\u0663", "1\u00b2"])
def test_payment_amounts_are_ascii_digits_only(amount: str) -> None:
    """Before: ``str.isdigit`` took full-width and Arabic-Indic digits (U+FF11 as 1)."""
    with pytest.raises(IntentError):
        PaymentIntent(
            payer=AGENT, scheme="exact", network="eip155:8453", asset=TOKEN, amount=amount,
            pay_to=PAYEE,
        )  # fmt: skip


@pytest.mark.parametrize("chain_id", [1, 8453, 10**20 - 1, 2**256 - 1])
def test_every_accepted_chain_id_has_a_wire_form(chain_id: int) -> None:
    """A transaction intent takes chain ids 1..uint256, a payment's network up to 20 digits;
    each accepted one goes to the wire and back unchanged."""
    intent = TransactionIntent.erc20_transfer(
        sender=AGENT, token=TOKEN, recipient=PAYEE, amount=1, chain_id=chain_id
    )
    assert TransactionIntent.from_wire(intent.wire()) == intent
    if chain_id < 10**20:
        payment = PaymentIntent(
            payer=AGENT, scheme="exact", network=f"eip155:{chain_id}", asset=TOKEN, amount=1,
            pay_to=PAYEE,
        )  # fmt: skip
        assert payment.wire() == intent.wire()
        assert TransactionIntent.from_wire(payment.wire()).intent_hash == payment.intent_hash


@pytest.mark.parametrize("chain_id", [0, 2**256, -1])
def test_a_transaction_intent_refuses_chain_ids_it_cannot_carry(chain_id: int) -> None:
    with pytest.raises(IntentError):
        TransactionIntent.erc20_transfer(
            sender=AGENT, token=TOKEN, recipient=PAYEE, amount=1, chain_id=chain_id
        )
    with pytest.raises(IntentError):
        TransactionIntent.model_validate({"from": AGENT, "to": PAYEE, "chain_id": chain_id})


def test_a_network_id_is_ascii_digits_only() -> None:
    with pytest.raises(IntentError):
        chain_id_from_network("eip155:\u0668\u0664\u0665\u0663")


def test_large_calldata_is_validated_but_not_cached() -> None:
    """Servers parse intents from strangers: only small calldata may sit in the decode cache
    (before: every distinct calldata up to the request limit was kept, 4096 of them)."""
    from agentguard._intent import _CACHED_CALLDATA, _decode_cached

    blob = b"\x01" * (2 * _CACHED_CALLDATA)
    data = keccak(b"store(bytes)")[:4] + abi_encode(["bytes"], [blob])
    before = _decode_cached.cache_info().currsize
    intent = TransactionIntent(
        from_=AGENT, to=TOKEN, data=data, chain_id=8453, function_signature="store(bytes)"
    )
    assert intent.decoded_arguments == (blob,)
    assert _decode_cached.cache_info().currsize == before
