"""Intents: the exact action an agent wants to take, before anything is signed.

Two kinds share one shape on the wire. A ``TransactionIntent`` is Newton's six-field
``Intent`` (``from, to, value, data, chain_id, function_signature``). A ``PaymentIntent`` is
the x402 requirement the agent would pay; on the wire it travels as the equivalent ERC-20
``transfer(payTo, amount)`` intent on the asset, with the x402 details in ``wasm_args``. So
one policy (recipient allowlists, spend caps) sees payments and transactions alike, and one
budget covers both.

The canonical hash of every intent is the EIP-712 ``hashStruct`` of Newton's ``Intent`` type
(see ``docs/architecture.md``); attestations are bound to it.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Mapping
from functools import cached_property, lru_cache
from types import MappingProxyType
from typing import Any, Literal, Self, TypeVar

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from agentguard._eip712 import INTENT_TYPEHASH, address_word, keccak, uint_word
from agentguard._exceptions import IntentError
from agentguard._json import one_spelling
from agentguard._value import (
    KNOWN_SELECTORS,
    NATIVE_ASSET,
    UINT256_MAX,
    Spend,
    check_signature,
    value_call,
)

__all__ = [
    "NATIVE_ASSET",
    "PaymentIntent",
    "Spend",
    "TransactionIntent",
    "argument_types",
    "canonical_signature",
    "chain_id_from_network",
    "wire_chain_id",
]

_ERC20_TRANSFER = "transfer(address,uint256)"
_FIELD_NAMES = ("from_", "to", "value", "data", "chain_id", "function_signature")
_TRANSFER_FIELDS = ("from_", "to", "data", "chain_id", "function_signature")  # value: default

_MAX_SIGNATURE = 2048
_MAX_NESTING = 16
_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}\Z")
_HEX_RE = re.compile(r"^0x([0-9a-fA-F]{2})*\Z")
_ARRAY_SUFFIX_RE = re.compile(r"(\s*\[[0-9]*\])*")
_ALIASES = {
    "uint": "uint256",
    "int": "int256",
    "ufixed": "ufixed128x18",
    "fixed": "fixed128x18",
    "byte": "bytes1",
}
_ALIAS_RE = re.compile(r"(uint|int|ufixed|fixed|byte)((?:\[[0-9]*\])*)")

# x402 v1 network names we accept (v2 uses CAIP-2 ``eip155:<id>``).
_V1_NETWORKS = {"base": 8453, "base-sepolia": 84532, "ethereum": 1, "sepolia": 11155111}


def chain_id_from_network(network: str) -> int:
    """``eip155:8453`` or a v1 name like ``base`` → 8453. Chain 0 is refused: a transfer
    intent cannot carry it (``_check_call``), so a payment naming it has no wire form."""
    if type(network) is str and len(network) <= _MAX_NETWORK:  # a key that cannot lie
        return _chain_id_cached(network)
    return _chain_id(network)


_MAX_NETWORK = 64  # longer than any valid name; a refusal raises and is not cached anyway


@lru_cache(maxsize=256)  # pure; a payment reads its network several times
def _chain_id_cached(network: str) -> int:
    return _chain_id(network)


def _chain_id(network: str) -> int:
    if network.startswith("eip155:"):
        tail = network[7:]
        if tail.isascii() and tail.isdigit() and len(tail) <= 20 and (chain_id := int(tail)):
            return chain_id
        raise IntentError(f"network {network!r} is not a valid CAIP-2 eip155 id")
    if network in _V1_NETWORKS:
        return _V1_NETWORKS[network]
    raise IntentError(f"network {network!r} is not a supported EVM network")


def _split_top_level(params: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(params):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(params[start:i])
            start = i + 1
    parts.append(params[start:])
    return [p.strip() for p in parts if p.strip()]


def _canonical_type(param: str) -> str:
    param = param.strip()
    if param.startswith("("):
        depth = 0
        for i, ch in enumerate(param):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                inner = ",".join(_canonical_type(p) for p in _split_top_level(param[1:i]))
                # array dimensions stay; a parameter name after the tuple does not
                dims = _ARRAY_SUFFIX_RE.match(param[i + 1 :])
                return f"({inner}){''.join(dims.group(0).split()) if dims else ''}"
        raise IntentError(f"unbalanced parentheses in {param!r}")
    kind = param.split()[0]
    alias = _ALIAS_RE.fullmatch(kind)  # Solidity's aliases, also as array elements
    return _ALIASES[alias.group(1)] + alias.group(2) if alias else kind


@lru_cache(maxsize=4096)  # pure (a refusal raises and is not cached)
def canonical_signature(signature: str) -> str:
    """``function transfer(address to, uint256 amount)`` → ``transfer(address,uint256)``.

    Newton's sources disagree on the exact form (with or without ``function`` and names);
    the wire carries this canonical form, the one whose keccak gives the selector.
    """
    if len(signature) > _MAX_SIGNATURE:
        raise IntentError(f"function signature is longer than {_MAX_SIGNATURE} characters")
    depth = 0
    for ch in signature:
        depth += (ch == "(") - (ch == ")")
        if depth > _MAX_NESTING:
            raise IntentError(f"function signature nests tuples deeper than {_MAX_NESTING}")
    sig = signature.strip()
    if sig.startswith("function "):
        sig = sig[len("function ") :].strip()
    open_at = sig.find("(")
    if open_at <= 0 or (not sig.endswith(")") and ")" not in sig):
        raise IntentError(f"function signature {signature!r} is not of the form name(types)")
    name = sig[:open_at].strip()
    depth, close_at = 0, -1
    for i in range(open_at, len(sig)):
        depth += sig[i] == "("
        depth -= sig[i] == ")"
        if depth == 0:
            close_at = i
            break
    if close_at < 0 or not re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$]*", name):
        raise IntentError(f"function signature {signature!r} is not of the form name(types)")
    types = ",".join(_canonical_type(p) for p in _split_top_level(sig[open_at + 1 : close_at]))
    return f"{name}({types})"


def argument_types(signature: str) -> list[str]:
    inner = signature[signature.index("(") + 1 : -1]
    return _split_top_level(inner)


@lru_cache(maxsize=4096)
def _checksum_cached(address: str) -> str:
    # EIP-55 costs a keccak per call; an agent talks to a handful of addresses, again and again.
    return to_checksum_address(address)


def _checksum(value: Any, field: str) -> str:
    if type(value) is str and len(value) == 42:  # a key that cannot lie, of bounded size
        checksummed, well_formed, right = _address_verdict(value)
    else:
        if isinstance(value, bytes) and len(value) == 20:
            value = "0x" + value.hex()
        if not isinstance(value, str):
            well_formed = right = False
        else:
            checksummed, well_formed, right = _address_verdict_uncached(value)
    if not well_formed:
        raise IntentError(f"{field} must be a 0x-prefixed 20-byte address, got {value!r:.80}")
    if not right:
        # mixed case is an EIP-55 checksum; a wrong one is a typo'd or altered address
        raise IntentError(
            f"{field} {value} has a wrong EIP-55 checksum (expected {checksummed}); "
            "check the address, or pass it all lowercase"
        )
    return checksummed


def _address_verdict_uncached(value: str) -> tuple[str, bool, bool]:
    """(checksummed, a 0x-prefixed 20-byte hex address, its case is no wrong EIP-55 checksum)."""
    if not _ADDRESS_RE.match(value):
        return "", False, False
    checksummed = _checksum_cached(value)
    hex_part = value[2:]
    mixed = hex_part != hex_part.lower() and hex_part != hex_part.upper()
    # ``!=``, not ``==``: a str subclass inherits an honest ``__ne__`` even when its
    # ``__eq__`` lies (the comparison the check always made)
    return checksummed, True, not (mixed and value != checksummed)


_address_verdict = lru_cache(maxsize=4096)(_address_verdict_uncached)


def _uint(value: Any, field: str) -> int:
    """An exact non-negative integer: an ``int``, or a decimal or 0x-hex string (the wire)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise IntentError(f"{field} must be an integer, got {type(value).__name__}")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
        except ValueError:
            raise IntentError(f"{field} {text!r:.80} is not an integer") from None
    if not 0 <= value <= UINT256_MAX:
        raise IntentError(f"{field} {value} is outside uint256")
    return int(value)


@lru_cache(maxsize=1024)  # a signature's parts are up to ~3x its 2048 characters
def _function_parts(signature: str) -> tuple[str, tuple[str, ...], str]:
    """A canonical signature's name, argument types and wire hex (read for every intent)."""
    types = tuple(argument_types(signature))
    return signature.split("(", 1)[0], types, "0x" + signature.encode().hex()


@lru_cache(maxsize=256)
def _small_int(abi_type: str) -> bool:
    bits = re.fullmatch(r"u?int(\d+)", abi_type)
    return bits is not None and int(bits.group(1)) <= 32


def _jsonable(value: Any, abi_type: str = "") -> Any:
    """Decoded ABI values as operators hand them to Rego (Newton's parsed-intent shape).

    Integers of up to 32 bits are JSON numbers (as Newton shows ``uint32``); wider ones are
    exact decimal strings, because Rego engines lose precision past 2^53/2^64.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if _small_int(abi_type) else str(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, list | tuple):
        inner = abi_type[:-2] if abi_type.endswith("[]") else ""
        return [_jsonable(v, inner) for v in value]
    if isinstance(value, str) and _ADDRESS_RE.match(value):
        return _checksum_cached(value)
    return value


def _hex(value: Any) -> bytes | None:
    """The bytes of a string ``_HEX_RE`` matches (``0x`` and pairs of hex digits), else None.
    A ``str`` is decoded by ``bytes.fromhex``, which refuses anything but ASCII hex digits and
    whitespace; a length that is not twice the bytes' means it skipped whitespace: refused.
    A sixth of the regex's cost on a transfer's calldata (its repeated group is slow).
    Anything else (a ``str`` subclass included) is matched by the regex."""
    if type(value) is str:
        if value[:2] != "0x":
            return None
        try:
            decoded = bytes.fromhex(value[2:])
        except ValueError:
            return None
        return decoded if len(decoded) * 2 == len(value) - 2 else None
    if isinstance(value, str) and _HEX_RE.match(value):
        return bytes.fromhex(value[2:])
    return None


def _wire_bytes(value: Any, field: str) -> bytes:
    """Solidity ``bytes`` on Newton's wire: 0x-hex, or a JSON array of numbers 0..255."""
    if isinstance(value, list) and all(
        isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 256 for b in value
    ):
        return bytes(value)
    decoded = _hex(value)
    if decoded is not None:
        return decoded
    raise IntentError(f"{field} must be 0x-hex or an array of byte values")


@lru_cache(maxsize=4096)
def _signature_hash(signature: str) -> bytes:
    return keccak(signature.encode())


def _selector(signature: str) -> bytes:
    return _signature_hash(signature)[:4]


_CACHED_CALLDATA = 1024  # bytes: a server must not hold 4096 hostile 100 KiB calldatas


_ADDRESS, _BOOL, _BYTES32 = -1, -2, -3
_UINT_BITS = re.compile(r"uint(\d+)")
_ZERO_PAD = bytes(12)
_FALSE_WORD, _TRUE_WORD = bytes(32), bytes(31) + b"\x01"
_UINT_WIDTHS = frozenset(range(8, 257, 8))
_STATIC_KINDS = {"address": _ADDRESS, "bool": _BOOL, "bytes32": _BYTES32}


@lru_cache(maxsize=256)  # only the value-moving table's signatures get here
def _static_shape(signature: str) -> tuple[int, ...] | None:
    """Per argument of ``signature``: ``_ADDRESS``, ``_BOOL``, ``_BYTES32`` or the bit width of
    a ``uintN``; None if any argument is of another type (those go through eth_abi)."""
    shape: list[int] = []
    for abi_type in argument_types(signature):
        bits = _UINT_BITS.fullmatch(abi_type)
        if bits and int(bits.group(1)) in _UINT_WIDTHS:
            shape.append(int(bits.group(1)))
        elif abi_type in _STATIC_KINDS:
            shape.append(_STATIC_KINDS[abi_type])
        else:
            return None
    return tuple(shape)


def _decode_static(signature: str, data: bytes) -> tuple[Any, ...] | None:
    """eth_abi's result for the canonical encoding of a value-moving call whose arguments are
    all one word each (``transfer``, ``approve``, EIP-2612 ``permit``...), read directly; None
    for anything else (another selector or type, any other length, a word that is not the
    canonical encoding of its value), which ``_decode_uncached`` then judges as before. It
    accepts only calldata that decodes and re-encodes to itself, so the set accepted and the
    values returned are exactly eth_abi's (``tests/unit/test_intent_fast.py``)."""
    if data[:4] not in KNOWN_SELECTORS:
        return None
    shape = _static_shape(signature)
    if shape is None or len(data) != 4 + 32 * len(shape):
        return None
    decoded: list[Any] = []
    for at, kind in enumerate(shape):
        word = data[4 + 32 * at : 36 + 32 * at]
        if kind == _ADDRESS:
            if word[:12] != _ZERO_PAD:
                return None
            decoded.append("0x" + word[12:].hex())
        elif kind == _BOOL:
            if word != _FALSE_WORD and word != _TRUE_WORD:
                return None
            decoded.append(word == _TRUE_WORD)
        elif kind == _BYTES32:
            decoded.append(word)
        else:
            number = int.from_bytes(word, "big")
            if number >> kind:
                return None
            decoded.append(number)
    return tuple(decoded)


def _decode(signature: str, data: bytes) -> tuple[Any, ...]:
    """The decoded arguments of ``data`` (selector first) as ``signature`` says; for a
    value-moving selector only the canonical encoding is accepted, since the call is valued
    from these arguments and only that encoding leaves a contract no room to read other ones.
    One-word arguments are read directly (``_decode_static``); other calldata is decoded by
    eth_abi, once (cached) if it is ordinary, each time if it is large."""
    fast = _decode_static(signature, data)
    if fast is not None:
        return fast
    if len(data) <= _CACHED_CALLDATA:
        return _decode_cached(signature, data)
    return _decode_uncached(signature, data)


def _decode_uncached(signature: str, data: bytes) -> tuple[Any, ...]:
    types = argument_types(signature)
    try:
        decoded = tuple(abi_decode(types, data[4:]))
    except Exception as exc:
        raise IntentError(f"calldata does not decode as {signature}: {exc}") from None
    if data[:4] in KNOWN_SELECTORS and data[4:] != abi_encode(types, decoded):
        raise IntentError(
            f"calldata of {signature} is not the canonical ABI encoding of its arguments "
            "(extra or rearranged bytes); encode it with a standard ABI encoder"
        )
    return decoded


_decode_cached = lru_cache(maxsize=4096)(_decode_uncached)


def _calldata(v: Any) -> bytes:
    if isinstance(v, bytes | bytearray):
        return bytes(v)
    decoded = _hex(v)
    if decoded is not None:
        return decoded
    raise IntentError(f"data must be bytes or 0x-hex, got {v!r:.80}")


def _signature_text(v: Any) -> str:
    if v in (None, "", "0x"):
        return ""
    if not isinstance(v, str):
        raise IntentError("function_signature must be a string like 'transfer(address,uint256)'")
    return canonical_signature(v)


def wire_chain_id(wire: Any) -> int:
    """The chain of a wire intent, read as ``TransactionIntent.from_wire`` reads it (refused
    alike), without validating the rest: for an intent validated when it was recorded (the
    gateway's sweep reads it for every expired task, each pass; its calldata, up to a
    request's size, is not decoded again)."""
    if not isinstance(wire, dict):
        raise IntentError("intent must be a JSON object")
    try:
        spelled = one_spelling(wire, "chain_id", "chainId")
    except ValueError as exc:
        raise IntentError(f"intent: {exc}") from None
    chain_id = _uint(spelled, "chain_id")
    if chain_id == 0:
        raise IntentError("chain_id must be set (8453 for Base)")
    return chain_id


def _check_call(chain_id: int, data: bytes, signature: str) -> tuple[Any, ...]:
    """A transaction intent's checks across fields: a chain, and calldata that starts with the
    selector of a signature that is not a value-moving function's lookalike and decodes.
    Returns the decoded arguments (``decoded_arguments``), so a caller need not decode twice."""
    if chain_id == 0:
        raise IntentError("chain_id must be set (8453 for Base)")
    if signature:
        if len(data) < 4 or _selector(signature) != data[:4]:
            raise IntentError(f"calldata does not start with the selector of {signature!r}")
        check_signature(signature)
        return _decode(signature, data)  # refuses what does not decode
    if data:
        raise IntentError(
            "calldata without a function_signature cannot be checked by policies; "
            "pass the human-readable signature, e.g. 'transfer(address,uint256)'"
        )
    return ()


def _as_intent_error(exc: ValidationError) -> IntentError:
    """Pydantic wraps our validators' errors; callers get the typed IntentError back."""
    first = exc.errors()[0]
    original = (first.get("ctx") or {}).get("error")
    if isinstance(original, IntentError):
        return original
    where = ".".join(str(p) for p in first.get("loc", ())) or "intent"
    return IntentError(f"{where}: {first['msg']}")


class _Model(BaseModel):
    """Frozen model whose construction errors are always ``IntentError``."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, ignored_types=(cached_property,))

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _as_intent_error(exc) from None

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise _as_intent_error(exc) from None

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A changed copy is a new intent: validated again, no hash or spend carried over.

        Pydantic's own ``model_copy`` skips validation and copies the cached ``intent_hash``
        and ``spend``, which would then describe the original, not the copy.
        """
        return self.model_validate({**self.model_dump(), **(update or {})})


class TransactionIntent(_Model):
    """Newton's six-field intent; frozen, validated, hashed once."""

    from_: str = Field(alias="from")
    to: str
    value: int = 0
    data: bytes = b""
    chain_id: int
    function_signature: str = ""

    @field_validator("from_", "to", mode="before")
    @classmethod
    def _address(cls, v: Any, info: Any) -> str:
        return _checksum(v, info.field_name.rstrip("_"))

    @field_validator("value", "chain_id", mode="before")
    @classmethod
    def _quantity(cls, v: Any, info: Any) -> int:
        return _uint(v, info.field_name)

    @field_validator("data", mode="before")
    @classmethod
    def _bytes(cls, v: Any) -> bytes:
        return _calldata(v)

    @field_validator("function_signature", mode="before")
    @classmethod
    def _signature(cls, v: Any) -> str:
        return _signature_text(v)

    @model_validator(mode="after")
    def _selector_matches(self) -> TransactionIntent:
        _check_call(self.chain_id, self.data, self.function_signature)
        _ = self.spend  # an intent whose spend cannot be judged is refused here, not later
        return self

    # -- derived, computed once -------------------------------------------------------------

    @cached_property
    def intent_hash(self) -> bytes:
        """EIP-712 ``hashStruct(Intent)``: what every attestation is bound to."""
        return keccak(
            INTENT_TYPEHASH
            + address_word(bytes.fromhex(self.from_[2:]))
            + address_word(bytes.fromhex(self.to[2:]))
            + uint_word(self.value)
            + keccak(self.data)
            + uint_word(self.chain_id)
            + _signature_hash(self.function_signature)
        )

    @cached_property
    def decoded_arguments(self) -> tuple[Any, ...]:
        if not self.function_signature:
            return ()
        return _decode(self.function_signature, self.data)

    @property
    def function_name(self) -> str:
        """The called function's name (``transfer``), or ``""`` for a plain transfer."""
        return self.function_signature.split("(", 1)[0] if self.function_signature else ""

    @cached_property
    def spend(self) -> Spend:
        """What the call moves, judged from its calldata (``agentguard._value``)."""
        return value_call(
            to=self.to,
            value=self.value,
            data=self.data,
            signature=self.function_signature,
            arguments=self.decoded_arguments,
        )

    def newton_intent(self) -> TransactionIntent:
        return self

    def wire(self) -> dict[str, str]:
        """Newton gateway ``TaskIntent``: snake_case, hex quantities, hex-of-UTF-8 signature."""
        return {
            "from": self.from_,
            "to": self.to,
            "value": hex(self.value),
            "data": "0x" + self.data.hex(),
            "chain_id": hex(self.chain_id),
            "function_signature": "0x" + self.function_signature.encode().hex(),
        }

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> TransactionIntent:
        """Our snake_case wire or Newton's camelCase (``chainId``, ``functionSignature``, as its
        gateway returns ``task_response.intent``); both spellings disagreeing is refused."""
        if not isinstance(wire, dict):
            raise IntentError("intent must be a JSON object")
        try:
            sig = one_spelling(wire, "function_signature", "functionSignature", "")
            chain_id = one_spelling(wire, "chain_id", "chainId")
        except ValueError as exc:
            raise IntentError(f"intent: {exc}") from None
        if isinstance(sig, list) or (isinstance(sig, str) and sig.startswith("0x")):
            try:
                sig = _wire_bytes(sig, "function_signature").decode("utf-8", "strict")
            except UnicodeDecodeError:
                raise IntentError("function_signature is not UTF-8 text") from None
        data = wire.get("data", "0x")
        if isinstance(data, list):
            data = _wire_bytes(data, "data")
        fields = {
            "from": wire.get("from"),
            "to": wire.get("to"),
            "value": wire.get("value", 0),
            "data": data,
            "chain_id": chain_id,
            "function_signature": sig,
        }
        try:
            return cls._validated_directly(fields, _FIELD_NAMES)
        except Exception:
            return cls.model_validate(fields)

    @classmethod
    def _validated_directly(
        cls, fields: dict[str, Any], given: tuple[str, ...]
    ) -> TransactionIntent:
        """``model_validate(fields)`` without pydantic's machinery: the same validators in the
        same order, then the same model check (spend included); ``given`` are the fields the
        caller set (``model_fields_set``; a default is valid as is). It runs on every request
        a gateway or operator reads, so it costs what the checks cost. Callers hand any
        refusal to the model, so errors stay exactly the model's;
        ``tests/unit/test_intent_fast.py`` holds the accepted intents equal on random input."""
        from_ = _checksum(fields["from"], "from")
        to = _checksum(fields["to"], "to")
        value = _uint(fields["value"], "value")
        data = _calldata(fields["data"])
        chain_id = _uint(fields["chain_id"], "chain_id")
        signature = _signature_text(fields["function_signature"])
        decoded = _check_call(chain_id, data, signature)
        values: dict[str, Any] = {
            "from_": from_,
            "to": to,
            "value": value,
            "data": data,
            "chain_id": chain_id,
            "function_signature": signature,
        }
        intent = (
            _constructed(cls, values, set(given))
            if cls is TransactionIntent
            else cls.model_construct(set(given), **values)
        )
        # ``decoded_arguments`` is a cached_property: what _check_call decoded is its value
        intent.__dict__["decoded_arguments"] = decoded
        _ = intent.spend
        return intent

    def parsed(self) -> dict[str, Any]:
        """The ``input`` document policies see, in the shape Newton's operators produce (a new
        document per call: callers may change it)."""
        fn: dict[str, Any] | None = None
        args: list[Any] = []
        if self.function_signature:
            name, types, signature_hex = _function_parts(self.function_signature)
            fn = {
                "name": name,
                "type": "function",
                "inputs": [{"type": t, "name": f"param{i}"} for i, t in enumerate(types)],
            }
            args = [_jsonable(a, t) for a, t in zip(self.decoded_arguments, types, strict=True)]
        else:
            signature_hex = "0x"
        return {
            "from": self.from_,
            "to": self.to,
            "value": str(self.value),
            "data": "0x" + self.data.hex(),
            "chain_id": str(self.chain_id),
            "function_signature": signature_hex,
            "function": fn,
            "decoded_function_signature": self.function_signature,
            "decoded_function_arguments": args,
        }

    def __repr__(self) -> str:
        return (
            f"TransactionIntent(from={self.from_}, to={self.to}, value={self.value}, "
            f"chain_id={self.chain_id}, function={self.function_signature or '-'})"
        )

    __str__ = __repr__

    @classmethod
    def erc20_transfer(
        cls, *, sender: str, token: str, recipient: str, amount: int, chain_id: int
    ) -> TransactionIntent:
        """``token.transfer(recipient, amount)`` sent by ``sender``; ``amount`` in atomic units."""
        # The canonical ABI encoding of (address, uint256), written out: this runs per payment.
        payee = bytes.fromhex(_checksum(recipient, "recipient")[2:])
        data = _selector(_ERC20_TRANSFER) + address_word(payee) + uint_word(_uint(amount, "amount"))
        fields = {
            "from": sender,
            "to": token,
            "value": 0,
            "data": data,
            "chain_id": chain_id,
            "function_signature": _ERC20_TRANSFER,
        }
        try:
            return cls._validated_directly(fields, _TRANSFER_FIELDS)
        except Exception:
            return cls(
                from_=sender,
                to=token,
                data=data,
                chain_id=chain_id,
                function_signature=_ERC20_TRANSFER,
            )


_TRANSFER_SELECTOR = _selector(_ERC20_TRANSFER)
_TRANSFER_SIGNATURE_HASH = keccak(_ERC20_TRANSFER.encode())


@lru_cache(maxsize=1024)
def _transfer_hash(payer: str, asset: str, pay_to: str, amount: int, network: str) -> bytes:
    """The intent hash of ``asset.transfer(pay_to, amount)`` sent by ``payer`` on ``network``."""
    calldata = _TRANSFER_SELECTOR + address_word(bytes.fromhex(pay_to[2:])) + uint_word(amount)
    return keccak(
        INTENT_TYPEHASH
        + address_word(bytes.fromhex(payer[2:]))
        + address_word(bytes.fromhex(asset[2:]))
        + uint_word(0)
        + keccak(calldata)
        + uint_word(chain_id_from_network(network))
        + _TRANSFER_SIGNATURE_HASH
    )


@lru_cache(maxsize=1024)
def _transfer_wire(
    payer: str, asset: str, pay_to: str, amount: int, network: str
) -> Mapping[str, str]:
    """``TransactionIntent.erc20_transfer(...).wire()`` for these exact values (read-only:
    callers get a copy)."""
    transfer = TransactionIntent.erc20_transfer(
        sender=payer,
        token=asset,
        recipient=pay_to,
        amount=amount,
        chain_id=chain_id_from_network(network),
    )
    return MappingProxyType(transfer.wire())


_PAYMENT_FIELDS = (
    "payer", "scheme", "network", "asset", "amount", "pay_to", "resource", "x402_version",
)  # fmt: skip
_payment_values = operator.itemgetter(*_PAYMENT_FIELDS)  # each read once, in order, in C


def _payment_amount(v: Any) -> int:
    if isinstance(v, str) and v.isascii() and v.isdigit() and len(v) <= 78:
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= UINT256_MAX:
        raise IntentError(f"payment amount must be a positive atomic integer, got {v!r:.80}")
    return v


def _payment_checks(network: str, resource: str) -> None:
    """A ``PaymentIntent``'s checks across fields."""
    chain_id_from_network(network)
    if len(resource) > 2048:
        raise IntentError("resource URL is longer than 2048 characters")


_object_setattr = object.__setattr__
_IntentModel = TypeVar("_IntentModel", "TransactionIntent", "PaymentIntent")


def _constructed(
    cls: type[_IntentModel], values: dict[str, Any], fields_set: set[str] | None = None
) -> _IntentModel:
    """``cls.model_construct(fields_set, **values)`` of validated values for every field (by
    field name, in declaration order), as pydantic builds it (its ``model_construct`` also
    resolves aliases and defaults: none here), at half the cost; ``fields_set`` defaults to
    every field. Pinned equal to the model's instances in the tests."""
    intent = cls.__new__(cls)
    _object_setattr(intent, "__dict__", values)
    _object_setattr(
        intent, "__pydantic_fields_set__", set(values) if fields_set is None else fields_set
    )
    _object_setattr(intent, "__pydantic_extra__", None)
    _object_setattr(intent, "__pydantic_private__", None)
    return intent


class PaymentIntent(_Model):
    """An x402 requirement the agent would pay, as chosen from a 402 answer."""

    payer: str
    scheme: Literal["exact", "upto"]
    network: str
    asset: str
    amount: int = Field(description="exact amount (exact) or session maximum (upto), atomic units")
    pay_to: str
    resource: str = ""
    x402_version: Literal[1, 2] = 2

    @field_validator("payer", "asset", "pay_to", mode="before")
    @classmethod
    def _address(cls, v: Any, info: Any) -> str:
        return _checksum(v, info.field_name)

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, v: Any) -> int:
        return _payment_amount(v)

    @model_validator(mode="after")
    def _network(self) -> PaymentIntent:
        _payment_checks(self.network, self.resource)
        return self

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> PaymentIntent:
        """``model_validate(fields)``: the same intent or the same ``IntentError``. It runs
        (twice) for every payment, so a mapping of every field, each of exactly its plain type
        (``str``, ``int``, an amount as ``int`` or ``str``), is validated here by the model's
        own checks without pydantic's machinery; anything else, and any refusal, is the
        model's to decide (``tests/unit/test_payment_intent_fast.py``)."""
        try:
            return cls._validated_directly(fields)
        except Exception:
            return cls.model_validate(fields)

    @classmethod
    def _validated_directly(cls, fields: Mapping[str, Any]) -> PaymentIntent:
        payer, scheme, network, asset, amount, pay_to, resource, version = _payment_values(fields)
        if not (
            type(fields) is dict
            and len(fields) == len(_PAYMENT_FIELDS)
            and type(payer) is str
            and type(asset) is str
            and type(pay_to) is str
            and type(scheme) is str
            and scheme in ("exact", "upto")
            and type(network) is str
            and type(resource) is str
            and type(version) is int
            and version in (1, 2)
            and type(amount) in (int, str)
        ):
            raise IntentError("not plain fields")  # the model decides
        values = {
            "payer": _checksum(payer, "payer"),
            "scheme": scheme,
            "network": network,
            "asset": _checksum(asset, "asset"),
            "amount": _payment_amount(amount),
            "pay_to": _checksum(pay_to, "pay_to"),
            "resource": resource,
            "x402_version": version,
        }
        _payment_checks(network, resource)
        return _constructed(cls, values)

    @property
    def chain_id(self) -> int:
        return chain_id_from_network(self.network)

    @cached_property
    def _transfer(self) -> TransactionIntent:
        return TransactionIntent.erc20_transfer(
            sender=self.payer,
            token=self.asset,
            recipient=self.pay_to,
            amount=self.amount,
            chain_id=self.chain_id,
        )

    def newton_intent(self) -> TransactionIntent:
        """The equivalent onchain action: ``asset.transfer(pay_to, amount)`` from the payer."""
        return self._transfer

    @cached_property
    def intent_hash(self) -> bytes:
        """``newton_intent().intent_hash``, written out: it is hashed several times per payment
        (each from a fresh copy), and building the transfer intent costs more than hashing.
        Memoized per field values (``_exact_fields``)."""
        exact = self._exact_fields()
        if exact is not None:
            return _transfer_hash(*exact)
        return _transfer_hash.__wrapped__(
            self.payer, self.asset, self.pay_to, self.amount, self.network
        )

    def _exact_fields(self) -> tuple[str, str, str, int, str] | None:
        """The fields a transfer is built from, if each is exactly ``str`` / ``int`` (as
        validation leaves them): only such values may key the caches below, so a lookalike
        object that compares equal never gets another value's answer."""
        fields = (self.payer, self.asset, self.pay_to, self.amount, self.network)
        if type(fields[3]) is int and all(type(fields[i]) is str for i in (0, 1, 2, 4)):
            return fields
        return None

    @cached_property
    def spend(self) -> Spend:
        """Computed once, like ``intent_hash`` (the pipeline reads it to hold and to settle)."""
        return Spend(asset=self.asset, amount=self.amount, recipient=self.pay_to)

    def wire(self) -> dict[str, str]:
        """The transfer's wire form: a new dict per call, built once per field values (the
        audit log writes one for every payment, each from a fresh copy)."""
        exact = self._exact_fields()
        if exact is not None:
            return dict(_transfer_wire(*exact))
        return self._transfer.wire()

    def wasm_args(self) -> dict[str, Any]:
        return {
            "x402": {
                "scheme": self.scheme,
                "network": self.network,
                "asset": self.asset,
                "amount": str(self.amount),
                "pay_to": self.pay_to,
                "resource": self.resource,
                "x402_version": self.x402_version,
            }
        }

    def parsed(self) -> dict[str, Any]:
        return self._transfer.parsed()


Intent = TransactionIntent | PaymentIntent


def wasm_args_hex(args: dict[str, Any] | None) -> str:
    """Newton's ``wasm_args``: hex of compact UTF-8 JSON (``0x`` prefixed)."""
    if not args:
        return "0x"
    text = json.dumps(args, separators=(",", ":"), sort_keys=True, allow_nan=False)
    return "0x" + text.encode().hex()


def _constructible(cls: type[_Model], fields: tuple[str, ...], aliases: Mapping[str, str]) -> bool:
    """Whether ``_constructed`` sets all that pydantic's ``model_construct`` would: it would
    miss a post-init hook, private attributes, extras, aliases or a root model, so none may
    appear unnoticed. ``aliases`` are the known ones (TransactionIntent's ``from``, for input):
    any other could name another field, which ``model_construct`` would read in its place."""
    return (
        cls.__pydantic_post_init__ is None
        and not cls.__private_attributes__
        and cls.model_config.get("extra") in (None, "ignore")
        and not cls.__pydantic_root_model__
        and tuple(cls.model_fields) == fields
        and all(
            f.alias == f.validation_alias == aliases.get(name)
            for name, f in cls.model_fields.items()
        )
    )


if not _constructible(PaymentIntent, _PAYMENT_FIELDS, {}):
    raise RuntimeError("PaymentIntent changed: review _constructed and from_fields")
if not _constructible(TransactionIntent, _FIELD_NAMES, {"from_": "from"}):
    raise RuntimeError("TransactionIntent changed: review _constructed and _validated_directly")
