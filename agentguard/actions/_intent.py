"""The intent of an offchain call: ``name(string)`` with the call's arguments as canonical JSON,
sent (in name only) from the agent to ``OFFCHAIN_TARGET`` with no value.

It is an ordinary ``TransactionIntent``, so operators parse, hash and value it like any other:
``name(string)`` is not a value-moving selector, so its spend is an ``unknown_call`` of 0 ETH and
the bundled policies refuse it unless their params' ``offchain_calls`` lists ``name`` (which
allows ``name(string)`` to ``OFFCHAIN_TARGET`` with value 0, and nothing else). A policy can
read the arguments: ``json.unmarshal(input.decoded_function_arguments[0])``.

The arguments are copied once into plain JSON values (``frozen_arguments``): that copy is what
is hashed and what the function receives, so editing the caller's objects after authorization
changes nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address

from agentguard._eip712 import keccak
from agentguard._exceptions import ConfigurationError, IntentError
from agentguard._intent import TransactionIntent
from agentguard._json import MAX_DEPTH, canonical_json

__all__ = [
    "MAX_ARGUMENTS_BYTES",
    "MAX_ARGUMENT_VALUES",
    "OFFCHAIN_TARGET",
    "call_intent",
    "frozen_arguments",
]

OFFCHAIN_TARGET = to_checksum_address(keccak(b"agentguard.offchain-call")[12:])
"""The ``to`` of every offchain call intent: ``keccak("agentguard.offchain-call")[12:]``, an
address nobody holds a key or code for, so such an intent moves nothing if sent onchain."""

MAX_ARGUMENTS_BYTES = 64 * 1024
"""Largest canonical JSON of a call's arguments: every operator decodes and evaluates it."""

MAX_ARGUMENT_VALUES = 1024
"""Most JSON values (objects, lists and scalars, the arguments' own object included) in a
call's arguments: rego-cpp's ``json.unmarshal`` is quadratic in their number (30,000 took every
operator about 17 s); the policy engine refuses more than 4,096 in any input string."""

_NAME = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]{0,127}\Z")


def _plain(value: Any, depth: int, count: list[int]) -> Any:
    """A fresh copy of ``value`` made only of JSON values, read through the built-in types'
    own methods (a subclass's overridden ``items`` or ``__iter__`` is not consulted);
    ``count[0]`` counts the values copied."""
    if depth > MAX_DEPTH:
        raise IntentError(f"the arguments are nested deeper than {MAX_DEPTH} levels")
    count[0] += 1
    if count[0] > MAX_ARGUMENT_VALUES:
        raise IntentError(
            f"the arguments hold more than {MAX_ARGUMENT_VALUES} values; pass a reference (an "
            "id, a URL) or one string instead of a long list"
        )
    if value is None or type(value) in (bool, int, str):
        return value
    if type(value) is float:
        if not math.isfinite(value):
            raise IntentError("the arguments contain NaN or infinity, which JSON cannot carry")
        return value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in list(dict.items(value)):
            if type(key) is not str:
                raise IntentError(f"argument keys must be strings, got {type(key).__name__}")
            out[key] = _plain(item, depth + 1, count)
        return out
    if isinstance(value, list):
        return [_plain(item, depth + 1, count) for item in list.copy(value)]
    if isinstance(value, tuple):
        return tuple(_plain(item, depth + 1, count) for item in tuple.__iter__(value))
    raise IntentError(
        f"the arguments must be plain JSON values (dict, list, str, int, float, bool, None), "
        f"got {type(value).__name__}; pass its JSON form instead"
    )


def frozen_arguments(arguments: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """``(copy, canonical JSON)`` of a call's arguments, or ``IntentError`` (nothing asked)."""
    if not isinstance(arguments, Mapping):
        raise IntentError(f"arguments must be a mapping of names to values, not {arguments!r:.60}")
    try:
        top = arguments if isinstance(arguments, dict) else dict(arguments.items())
        copy = _plain(top, 0, [0])
        text = canonical_json(copy).decode()
    except IntentError:
        raise
    except (RuntimeError, ValueError, RecursionError) as exc:  # edited while read; huge ints
        why = type(exc).__name__
        raise IntentError(f"the arguments could not be read as JSON: {why}") from None
    size = len(text.encode())
    if size > MAX_ARGUMENTS_BYTES:
        raise IntentError(
            f"the arguments are {size} bytes of JSON, more than the {MAX_ARGUMENTS_BYTES} a call "
            "may carry; pass a reference (an id, a URL) instead of the content"
        )
    return copy, text


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigurationError(
            f"name={name!r:.80} is not a Solidity identifier (letters, digits, _ and $, not "
            "starting with a digit, at most 128 characters); the bundled policies allow it "
            "when their params' offchain_calls lists it"
        )
    return name


def intent_for(agent: str, name: str, canonical: str, chain_id: int) -> TransactionIntent:
    signature = f"{check_name(name)}(string)"
    data = keccak(signature.encode())[:4] + abi_encode(["string"], [canonical])
    return TransactionIntent(
        from_=agent,
        to=OFFCHAIN_TARGET,
        value=0,
        data=data,
        chain_id=chain_id,
        function_signature=signature,
    )


def call_intent(
    agent: str, name: str, arguments: Mapping[str, Any], *, chain_id: int
) -> TransactionIntent:
    """The intent a policy sees when ``agent`` calls ``name`` with ``arguments`` (plain JSON)."""
    check_name(name)
    _, canonical = frozen_arguments(arguments)
    return intent_for(agent, name, canonical, chain_id)
