"""The JSON-RPC params checks every method shares: addresses, 32-byte words, hex."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from agentguard.network._rpc import INVALID_PARAMS, RPCError

__all__ = ["ADDR", "B32", "HEX", "address_param", "invalid"]

ADDR = re.compile(r"^0x[0-9a-fA-F]{40}\Z")
B32 = re.compile(r"^0x[0-9a-fA-F]{64}\Z")
HEX = re.compile(r"^(0x)?([0-9a-fA-F]{2})*\Z")


def invalid(message: str) -> RPCError:
    return RPCError(INVALID_PARAMS, message)


def address_param(params: Mapping[str, Any], field: str) -> str:
    value = params.get(field)
    if not isinstance(value, str) or not ADDR.match(value):
        raise invalid(f"{field} must be a 0x-prefixed 20-byte address")
    return value
