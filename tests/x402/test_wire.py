"""The 402 parsers: exact shapes accepted, everything else a typed refusal (fuzzed)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentguard._exceptions import PaymentRequiredError
from agentguard.x402._wire import (
    MAX_HEADER_BYTES,
    encode_header,
    parse_payment_required,
    parse_settlement,
    parse_v1_body,
    parse_v2_header,
)

TOKEN = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAYEE = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"


def v2_requirement(**over: Any) -> dict[str, Any]:
    req = {
        "scheme": "exact",
        "network": "eip155:8453",
        "asset": TOKEN,
        "amount": "10000",
        "payTo": PAYEE,
        "maxTimeoutSeconds": 300,
        "extra": {"name": "USD Coin", "version": "2"},
    }
    req.update(over)
    return req


def v2_header(*accepts: dict[str, Any], **top: Any) -> str:
    doc = {
        "x402Version": 2,
        "error": "Payment required",
        "resource": {"url": "http://test/paid", "description": "test", "mimeType": ""},
        "accepts": list(accepts) or [v2_requirement()],
        **top,
    }
    return encode_header(doc)


def v1_body(**over: Any) -> bytes:
    req = {
        "scheme": "exact",
        "network": "base",
        "maxAmountRequired": "10000",
        "resource": "http://test/paid",
        "description": "",
        "mimeType": "",
        "outputSchema": None,
        "payTo": PAYEE,
        "maxTimeoutSeconds": 60,
        "asset": TOKEN,
        "extra": {"name": "USD Coin", "version": "2"},
    }
    req.update(over)
    return json.dumps(
        {"x402Version": 1, "error": "X-PAYMENT header is required", "accepts": [req]}
    ).encode()


def test_v2_header_as_the_official_server_writes_it() -> None:
    required = parse_v2_header(v2_header())
    assert required.x402_version == 2
    assert required.error == "Payment required"
    (req,) = required.accepts
    assert (req.scheme, req.network, req.amount, req.asset, req.pay_to) == (
        "exact",
        "eip155:8453",
        10_000,
        TOKEN,
        PAYEE,
    )
    assert req.max_timeout_seconds == 300
    assert req.resource == "http://test/paid"
    assert req.raw == v2_requirement()  # echoed byte-for-byte as `accepted`


def test_v1_body() -> None:
    required = parse_payment_required(None, v1_body())
    (req,) = required.accepts
    assert required.x402_version == 1
    assert (req.network, req.amount, req.resource) == ("base", 10_000, "http://test/paid")


def test_header_wins_over_body_and_empty_402_is_refused() -> None:
    assert parse_payment_required(v2_header(), v1_body()).x402_version == 2
    with pytest.raises(PaymentRequiredError, match="without x402 payment requirements"):
        parse_payment_required(None, b"")


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("amount", "010", "canonical"),
        ("amount", "1e6", "canonical"),
        ("amount", "-5", "canonical"),
        ("amount", " 5", "canonical"),
        ("amount", 10000, "canonical"),
        ("amount", "0", "positive"),
        ("amount", str(1 << 256), "canonical"),
        ("asset", "0x1234", "asset"),
        ("payTo", "0x209693bc6afc0c5328ba36faf03c514ef312287C", "payTo"),  # bad checksum
        ("maxTimeoutSeconds", 0, "maxTimeoutSeconds"),
        ("maxTimeoutSeconds", -1, "maxTimeoutSeconds"),
        ("maxTimeoutSeconds", 86_401, "maxTimeoutSeconds"),
        ("maxTimeoutSeconds", True, "maxTimeoutSeconds"),
        ("maxTimeoutSeconds", "300", "maxTimeoutSeconds"),
        ("extra", [], "extra"),
        ("network", "eip155:8453 ", "network"),
    ],
)
def test_bad_entries_are_dropped_with_a_reason(field: str, value: Any, match: str) -> None:
    required = parse_v2_header(v2_header(v2_requirement(**{field: value})))
    assert required.accepts == ()
    assert len(required.dropped) == 1 and match in required.dropped[0]


def test_one_bad_entry_does_not_spoil_the_good_one() -> None:
    required = parse_v2_header(v2_header(v2_requirement(amount="x"), v2_requirement(amount="7")))
    assert [r.amount for r in required.accepts] == [7]
    assert len(required.dropped) == 1


@pytest.mark.parametrize(
    ("header", "match"),
    [
        ("not base64!", "base64"),
        ("YWJj", "JSON"),  # "abc"
        (base64.b64encode(b"\xff\xfe").decode(), "JSON"),
        (base64.b64encode(b"[1,2]").decode(), "not a JSON object"),
        (encode_header({"x402Version": 1, "accepts": [v2_requirement()]}), "expected 2"),
        (encode_header({"x402Version": True, "accepts": [v2_requirement()]}), "expected 2"),
        (encode_header({"x402Version": 2, "accepts": []}), "no accepted"),
        (encode_header({"x402Version": 2, "accepts": [v2_requirement()] * 33}), "more than"),
        (
            encode_header({"x402Version": 2, "accepts": [v2_requirement()], "extensions": []}),
            "extensions",
        ),
        (
            base64.b64encode(b"[" * 100_00 + b"]" * 100_00).decode()[:MAX_HEADER_BYTES],
            "base64|JSON",
        ),
        ("A" * (MAX_HEADER_BYTES + 4), "more than"),
        (base64.b64encode(b'{"x402Version":2,"accepts":[' + b"9" * 5000 + b"]}").decode(), "JSON"),
    ],
)
def test_malformed_headers_are_typed_refusals(header: str, match: str) -> None:
    with pytest.raises(PaymentRequiredError, match=match):
        parse_v2_header(header)


def test_deeply_nested_json_is_a_typed_refusal() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    with pytest.raises(PaymentRequiredError):
        parse_v1_body(deep)
    with pytest.raises(PaymentRequiredError):
        parse_v2_header(base64.b64encode(deep).decode())


def test_settlement_headers() -> None:
    ok = encode_header(
        {
            "success": True,
            "payer": PAYEE,
            "transaction": "0x" + "ab" * 32,
            "network": "eip155:8453",
            "amount": "5",
        }
    )
    s = parse_settlement(ok)
    assert s is not None and s.success and s.amount == 5 and s.payer == PAYEE and not s.pending
    pending = parse_settlement(
        encode_header(
            {
                "success": False,
                "errorReason": "settlement_pending",
                "transaction": "0x1",
                "network": "base",
            }
        )
    )
    assert pending is not None and pending.pending
    for bad in (
        None,
        "%%%",
        encode_header({"success": "yes"}),
        encode_header({"success": True, "amount": "01"}),
    ):
        assert parse_settlement(bad) is None


# -- fuzzing: only typed errors may escape ---------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)
plausible_entries = st.fixed_dictionaries(
    {},
    optional={
        "scheme": st.sampled_from(["exact", "upto", "", 5]) | st.text(max_size=5),
        "network": st.sampled_from(["eip155:8453", "base", "solana:x", None]),
        "amount": st.sampled_from(["1", "0", "01", 1, None]) | st.text(max_size=6),
        "maxAmountRequired": st.sampled_from(["1", "99", None]),
        "asset": st.sampled_from([TOKEN, TOKEN.lower(), "0x", None]),
        "payTo": st.sampled_from([PAYEE, None, 7]),
        "maxTimeoutSeconds": st.sampled_from([1, 0, 86400, 86401, 1.5, None, "60"]),
        "extra": json_values,
        "resource": json_values,
    },
)
documents = st.fixed_dictionaries(
    {"x402Version": st.sampled_from([1, 2, "2", None])},
    optional={
        "accepts": st.lists(plausible_entries | json_values, max_size=4) | json_values,
        "resource": json_values,
        "extensions": json_values,
        "error": json_values,
    },
)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_raw_bytes(raw: bytes) -> None:
    for call in (
        lambda: parse_v1_body(raw),
        lambda: parse_v2_header(raw.decode("latin-1")),
        lambda: parse_v2_header(base64.b64encode(raw).decode()),
    ):
        try:
            call()
        except PaymentRequiredError:
            pass
    parse_settlement(base64.b64encode(raw).decode())


@settings(max_examples=200, deadline=None)
@given(documents)
def test_fuzz_json_documents(doc: dict[str, Any]) -> None:
    try:
        text = json.dumps(doc)
    except ValueError:
        return
    for call in (
        lambda: parse_v1_body(text.encode()),
        lambda: parse_v2_header(base64.b64encode(text.encode()).decode()),
    ):
        try:
            required = call()
        except PaymentRequiredError:
            continue
        for req in required.accepts:  # whatever survives is fully valid
            assert (
                req.amount > 0
                and req.asset.startswith("0x")
                and 0 < req.max_timeout_seconds <= 86_400
            )
    parse_settlement(base64.b64encode(text.encode()).decode())
