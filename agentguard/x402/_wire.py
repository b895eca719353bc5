"""x402 on the wire: parse what a server sends (v1 and v2), encode what the client sends.

Everything a server sends is untrusted input that decides what gets signed, so parsing is
strict and bounded: headers are capped in size, base64 must be canonical, amounts must be
canonical decimal integers, addresses real 20-byte hex, timeouts sane. Anything else is a
``PaymentRequiredError`` (for the 402 answer) or ``None`` (for a receipt), never a crash.
One malformed entry in ``accepts`` does not spoil the others: it is dropped with a reason.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from eth_utils.address import is_checksum_address, to_checksum_address

from agentguard._exceptions import PaymentRequiredError
from agentguard._json import strict_loads

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_TIMEOUT_SECONDS",
    "PAYMENT_REQUIRED",
    "PAYMENT_RESPONSE",
    "PAYMENT_SIGNATURE",
    "X_PAYMENT",
    "X_PAYMENT_RESPONSE",
    "PaymentRequired",
    "Requirement",
    "Settlement",
    "encode_header",
    "encode_json",
    "encode_text",
    "parse_amount",
    "parse_payment_required",
    "parse_settlement",
    "parse_v1_body",
    "parse_v2_header",
]

PAYMENT_REQUIRED = "PAYMENT-REQUIRED"
PAYMENT_SIGNATURE = "PAYMENT-SIGNATURE"
PAYMENT_RESPONSE = "PAYMENT-RESPONSE"
X_PAYMENT = "X-PAYMENT"
X_PAYMENT_RESPONSE = "X-PAYMENT-RESPONSE"

MAX_HEADER_BYTES = 16 * 1024
"""A real PAYMENT-REQUIRED header is well under 2 KiB; anything past this is refused unread."""
MAX_BODY_BYTES = 64 * 1024
MAX_ACCEPTS = 32
MAX_TIMEOUT_SECONDS = 86_400
"""A server asking for an authorization valid longer than a day is refused."""

_UINT256_MAX = (1 << 256) - 1
_AMOUNT_RE = re.compile(r"(0|[1-9][0-9]{0,77})")
_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")
_B64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_NETWORK_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}(:[A-Za-z0-9-]{1,64})?")


@dataclass(frozen=True, slots=True)
class Requirement:
    """One entry of ``accepts``, validated; ``raw`` is exactly what the server sent."""

    x402_version: Literal[1, 2]
    scheme: str
    network: str
    amount: int
    """``amount`` (v2) or ``maxAmountRequired`` (v1): exact price, or the ``upto`` maximum."""
    asset: str
    pay_to: str
    max_timeout_seconds: int
    extra: Mapping[str, Any]
    resource: str
    raw: Mapping[str, Any] = field(repr=False)
    raw_json: str | None = field(default=None, init=False, repr=False, compare=False)
    """``raw`` as compact JSON (v2): a payment's ``accepted``. Encoded by every constructor,
    never passed in, so a copy with another ``raw`` (``dataclasses.replace``) encodes its own."""

    def __post_init__(self) -> None:
        if self.x402_version == 2:
            object.__setattr__(self, "raw_json", _compact_or_none(self.raw))


@dataclass(frozen=True, slots=True)
class PaymentRequired:
    """A parsed 402 answer: the usable requirements and why the others were dropped."""

    x402_version: Literal[1, 2]
    accepts: tuple[Requirement, ...]
    dropped: tuple[str, ...]
    error: str
    resource: Mapping[str, Any] | None
    extensions: Mapping[str, Any]
    resource_json: str | None = field(default=None, init=False, repr=False, compare=False)
    """``resource`` as compact JSON (with a resource), encoded by every constructor like
    ``Requirement.raw_json``."""

    def __post_init__(self) -> None:
        if self.resource is not None:
            object.__setattr__(self, "resource_json", _compact_or_none(self.resource))


@dataclass(frozen=True, slots=True)
class Settlement:
    """A server's ``SettleResponse`` (``PAYMENT-RESPONSE`` / ``X-PAYMENT-RESPONSE``)."""

    success: bool
    transaction: str
    network: str
    payer: str | None
    amount: int | None
    error_reason: str | None

    @property
    def pending(self) -> bool:
        return not self.success and self.error_reason == "settlement_pending"


def parse_amount(value: object) -> int | None:
    """A canonical decimal uint256 string (no sign, no leading zeros, no spaces) or ``None``."""
    if isinstance(value, str) and _AMOUNT_RE.fullmatch(value):
        amount = int(value)
        if amount <= _UINT256_MAX:
            return amount
    return None


def _address(value: object) -> str | None:
    if not isinstance(value, str) or not _ADDRESS_RE.fullmatch(value):
        return None
    return _checked_address(value)


@lru_cache(maxsize=1024)
def _checked_address(value: str) -> str | None:
    """EIP-55 checks cost keccaks; a server names the same few addresses on every 402."""
    body = value[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(value):
        return None  # mixed case with a wrong checksum: a typo or a forgery
    return str(to_checksum_address(value))


def _timeout(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 < value <= MAX_TIMEOUT_SECONDS:
        return value
    return None


def _short(value: object, limit: int = 120) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _requirement(entry: object, version: Literal[1, 2], resource: str) -> Requirement | str:
    """A validated requirement, or a sentence saying why this entry cannot be paid."""
    if not isinstance(entry, dict):
        return "an accepts entry is not a JSON object"
    scheme, network = entry.get("scheme"), entry.get("network")
    if not isinstance(scheme, str) or not scheme or len(scheme) > 32:
        return f"scheme {_short(scheme)} is not a scheme name"
    if not isinstance(network, str) or not _NETWORK_RE.fullmatch(network):
        return f"{scheme}: network {_short(network)} is not a network id"
    where = f"{scheme} on {network}"
    amount_key = "amount" if version == 2 else "maxAmountRequired"
    amount = parse_amount(entry.get(amount_key))
    if amount is None or amount == 0:
        return (
            f"{where}: {amount_key} {_short(entry.get(amount_key))} is not a positive "
            "canonical decimal integer"
        )
    asset, pay_to = _address(entry.get("asset")), _address(entry.get("payTo"))
    if asset is None:
        return f"{where}: asset {_short(entry.get('asset'))} is not an EVM address"
    if pay_to is None:
        return f"{where}: payTo {_short(entry.get('payTo'))} is not an EVM address"
    timeout = _timeout(entry.get("maxTimeoutSeconds"))
    if timeout is None:
        return (
            f"{where}: maxTimeoutSeconds {_short(entry.get('maxTimeoutSeconds'))} is not "
            f"between 1 and {MAX_TIMEOUT_SECONDS}"
        )
    extra = entry.get("extra")
    if extra is None:
        extra = {}
    if not isinstance(extra, dict):
        return f"{where}: extra is not a JSON object"
    if version == 1:
        resource = entry.get("resource")  # type: ignore[assignment]
        if not isinstance(resource, str):
            return f"{where}: resource is not a URL string"
    if len(resource) > 2048:
        return f"{where}: resource URL is longer than 2048 characters"
    return Requirement(
        x402_version=version,
        scheme=scheme,
        network=network,
        amount=amount,
        asset=asset,
        pay_to=pay_to,
        max_timeout_seconds=timeout,
        extra=extra,
        resource=resource,
        raw=entry,
    )


def _document(data: object, version: Literal[1, 2]) -> PaymentRequired:
    if not isinstance(data, dict):
        raise PaymentRequiredError("the 402 payment requirements are not a JSON object")
    if data.get("x402Version") != version or isinstance(data.get("x402Version"), bool):
        raise PaymentRequiredError(
            f"the 402 payment requirements say x402Version {_short(data.get('x402Version'))}, "
            f"expected {version}"
        )
    accepts = data.get("accepts")
    if not isinstance(accepts, list) or not accepts:
        raise PaymentRequiredError("the 402 answer lists no accepted payments")
    if len(accepts) > MAX_ACCEPTS:
        raise PaymentRequiredError(
            f"the 402 answer lists {len(accepts)} payment options (more than {MAX_ACCEPTS})"
        )
    resource_info: Mapping[str, Any] | None = None
    url = ""
    if version == 2:
        resource_info = data.get("resource")
        if resource_info is not None:
            if not isinstance(resource_info, dict) or not isinstance(
                resource_info.get("url", ""), str
            ):
                raise PaymentRequiredError("the 402 answer's resource is not {url, …}")
            url = resource_info.get("url", "")
    extensions = data.get("extensions")
    if extensions is None:
        extensions = {}
    if not isinstance(extensions, dict):
        raise PaymentRequiredError("the 402 answer's extensions are not a JSON object")
    error = data.get("error")
    good: list[Requirement] = []
    dropped: list[str] = []
    for entry in accepts:
        parsed = _requirement(entry, version, url)
        if isinstance(parsed, Requirement):
            good.append(parsed)
        else:
            dropped.append(parsed)
    return PaymentRequired(
        x402_version=version,
        accepts=tuple(good),
        dropped=tuple(dropped),
        error=_short(error, 300) if isinstance(error, str) else "",
        resource=resource_info,
        extensions=extensions,
    )


def _json(raw: bytes, what: str) -> object:
    """A server's JSON, read strictly: a duplicate key (which two parsers read differently),
    deep nesting, NaN or an oversized number is refused, not interpreted."""
    try:
        return strict_loads(raw)
    except ValueError as exc:
        raise PaymentRequiredError(f"{what} is not strict UTF-8 JSON ({exc})") from None


def _b64(value: str, what: str) -> bytes:
    value = value.strip()
    if not _B64_RE.fullmatch(value) or len(value) % 4:
        raise PaymentRequiredError(f"{what} is not standard base64")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PaymentRequiredError(f"{what} is not standard base64") from None


def parse_v2_header(value: str) -> PaymentRequired:
    """``PAYMENT-REQUIRED``: base64 of a v2 ``PaymentRequired`` JSON document.

    A server sends the same header on every 402 of an endpoint, so the parse is remembered
    per header text (a bounded cache; a failed parse is not remembered). The result is shared:
    its mappings are read, never changed (what is sent is built from copies)."""
    if not isinstance(value, str):
        raise PaymentRequiredError("the PAYMENT-REQUIRED header is not text")
    if len(value) > MAX_HEADER_BYTES:
        raise PaymentRequiredError(
            f"the PAYMENT-REQUIRED header is {len(value)} bytes (more than {MAX_HEADER_BYTES})"
        )
    return _parse_v2(value)


@lru_cache(maxsize=64)
def _parse_v2(value: str) -> PaymentRequired:
    return _document(_json(_b64(value, "the PAYMENT-REQUIRED header"), "PAYMENT-REQUIRED"), 2)


def parse_v1_body(body: bytes) -> PaymentRequired:
    """A v1 402 body: ``{"x402Version": 1, "error", "accepts": [...]}``."""
    if len(body) > MAX_BODY_BYTES:
        raise PaymentRequiredError(f"the 402 body is larger than {MAX_BODY_BYTES} bytes")
    return _document(_json(body, "the 402 body"), 1)


def parse_payment_required(header: str | None, body: bytes) -> PaymentRequired:
    """v2 if the server sent ``PAYMENT-REQUIRED``, else a v1 body, else refuse."""
    if header is not None:
        return parse_v2_header(header)
    if not body.strip():
        raise PaymentRequiredError(
            "the server answered 402 without x402 payment requirements "
            "(no PAYMENT-REQUIRED header and an empty body)"
        )
    return parse_v1_body(body)


def parse_settlement(value: str | None) -> Settlement | None:
    """A ``SettleResponse`` header, or ``None`` if absent or unreadable."""
    if value is None or len(value) > MAX_HEADER_BYTES:
        return None
    try:
        data = _json(_b64(value, "the payment response header"), "the payment response header")
    except PaymentRequiredError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("success"), bool):
        return None
    transaction, network = data.get("transaction", ""), data.get("network", "")
    payer, reason = data.get("payer"), data.get("errorReason")
    raw_amount = data.get("amount")
    amount = parse_amount(raw_amount)
    if not isinstance(transaction, str) or not isinstance(network, str):
        return None
    if raw_amount is not None and amount is None:
        return None
    return Settlement(
        success=data["success"],
        transaction=_short(transaction, 200),
        network=_short(network, 80),
        payer=_address(payer),
        amount=amount,
        error_reason=_short(reason, 300) if isinstance(reason, str) else None,
    )


_COMPACT = json.JSONEncoder(separators=(",", ":"))
"""``json.dumps(..., separators=(",", ":"))``'s encoder, made once instead of per call."""


def _compact_or_none(value: object) -> str | None:
    """``value`` as compact JSON, or ``None`` if it is not JSON (a payment then encodes its
    whole document, and fails there as it always did)."""
    try:
        return _COMPACT.encode(value)
    except (TypeError, ValueError, RecursionError):
        return None


def encode_header(document: Mapping[str, Any]) -> str:
    """Standard base64 of compact JSON, as x402's SDKs write it."""
    return encode_text(_COMPACT.encode(document))


def encode_json(value: Any) -> str:
    """Compact JSON, as ``encode_header`` writes it (a document's parts may be joined)."""
    return _COMPACT.encode(value)


def encode_text(text: str) -> str:
    """Standard base64 of ``text``'s UTF-8: a header value of compact JSON."""
    return base64.b64encode(text.encode("utf-8")).decode("ascii")
