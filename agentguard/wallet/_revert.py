"""Revert data → a sentence a person can act on.

Decodes ``Error(string)``, ``Panic(uint256)`` and the custom errors of every contract that
ships with agentguard (AgentVault, UsdCoin, …), so "execution reverted" becomes
"AgentVault: TaskAlreadyUsed(taskId=0x…)".
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from eth_abi.abi import decode as abi_decode

from agentguard._eip712 import keccak

__all__ = ["decode_revert", "revert_data"]

_ERROR = keccak(b"Error(string)")[:4]
_PANIC = keccak(b"Panic(uint256)")[:4]
_PANICS = {
    0x01: "assertion failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division by zero",
    0x21: "invalid enum value",
    0x31: "pop on empty array",
    0x32: "array index out of bounds",
    0x41: "out of memory",
    0x51: "call to an uninitialised function",
}


def _type(param: dict[str, Any]) -> str:
    if param["type"].startswith("tuple"):
        inner = ",".join(_type(c) for c in param["components"])
        return f"({inner}){param['type'][5:]}"
    return str(param["type"])


@cache
def _custom_errors() -> dict[bytes, tuple[str, list[str], list[str]]]:
    import json

    found: dict[bytes, tuple[str, list[str], list[str]]] = {}
    folder = resources.files("agentguard.chain") / "artifacts"
    for item in folder.iterdir():
        if not item.name.endswith(".json"):
            continue
        artifact = json.loads(item.read_text("utf-8"))
        for entry in artifact.get("abi", []):
            if entry.get("type") != "error":
                continue
            types = [_type(p) for p in entry["inputs"]]
            selector = keccak(f"{entry['name']}({','.join(types)})".encode())[:4]
            names = [p.get("name") or f"arg{i}" for i, p in enumerate(entry["inputs"])]
            found[selector] = (f"{artifact['contractName']}: {entry['name']}", types, names)
    return found


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def decode_revert(data: bytes) -> str:
    """A readable reason for ``data`` (revert bytes); never raises."""
    if not data:
        return "reverted without a reason"
    selector, body = data[:4], data[4:]
    try:
        if selector == _ERROR:
            return str(abi_decode(["string"], body)[0])
        if selector == _PANIC:
            code = int(abi_decode(["uint256"], body)[0])
            return f"panic 0x{code:02x} ({_PANICS.get(code, 'unknown panic')})"
        known = _custom_errors().get(selector)
        if known is not None:
            name, types, names = known
            values = abi_decode(types, body) if types else ()
            args = ", ".join(f"{n}={_show(v)}" for n, v in zip(names, values, strict=True))
            return f"{name}({args})"
    except Exception:  # noqa: S110 - undecodable data falls through to the raw form
        pass
    return f"reverted with undecoded data 0x{data.hex()[:200]}"


def revert_data(exc: BaseException) -> bytes:
    """The revert bytes carried by a web3 exception, if any."""
    data = getattr(exc, "data", None)
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return b""
    if isinstance(data, bytes):
        return data
    return b""
