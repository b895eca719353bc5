"""Bundled Rego policies and the policy material format shared by client and network.

A policy is Rego logic plus a JSON schema for its parameters (as on Newton): the logic is
shared, each policy client gets its own configuration and its own ``policy_id``. Every bundled
policy lives in a folder here with ``policy.rego``, ``params_schema.json`` and
``policy_metadata.json`` (``{"name", "description", "entrypoint"}``) and its tests.

A composite policy lists other bundled policies in its metadata (``"includes": ["tx_cap", …]``);
their modules are loaded with it (named ``<included>/<file>``), so ``code_hash`` covers every
line of Rego that runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from agentguard._eip712 import address_word, keccak, uint_word
from agentguard._exceptions import PolicyError
from agentguard._json import canonical_json

__all__ = ["Policy", "PolicyError", "bundled", "canonical_json", "load", "policy_id"]


def _share_libstdcxx() -> None:
    """Make the process's libstdc++ global before regopy's native library loads.

    rego-cpp's library exports its own ``operator new``/``delete``. If libstdc++ is already
    loaded privately (any C++ extension imported earlier does it: aiohttp's frozenlist, pulled
    in by web3), libstdc++ and rego-cpp end up with different allocators; memory then leaks on
    every evaluation (66 KB for agent_spend) and some builtins (``time.weekday``) abort with
    ``free(): invalid pointer``. Promoting libstdc++ to global scope gives both one allocator.
    Done here because every process that evaluates policies imports this package first.
    """
    if sys.platform.startswith("linux") and "regopy" not in sys.modules:
        with contextlib.suppress(OSError):
            ctypes.CDLL("libstdc++.so.6", mode=os.RTLD_GLOBAL | os.RTLD_NOLOAD)


_share_libstdcxx()


NUL_REFUSED = (
    "a NUL character in the entrypoint or a module is refused: rego-cpp reads a module only up "
    "to one, and the code hash (entrypoint and modules joined by NULs) would not name one code"
)
"""Why material with a NUL is refused (the engine and ``policy_from_material``)."""


@dataclass(frozen=True)
class Policy:
    """Rego modules + entrypoint (Newton style ``package.rule``, no ``data.`` prefix) + schema."""

    name: str
    entrypoint: str
    modules: Mapping[str, str]
    params_schema: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        """Text with no UTF-8 form (a lone surrogate) is refused here, typed, rather than as a
        ``UnicodeEncodeError`` from whichever hash or encoder meets it first."""
        texts = [
            self.name,
            self.entrypoint,
            self.description,
            *self.modules,
            *self.modules.values(),
        ]
        try:
            for text in texts:
                if isinstance(text, str):
                    text.encode()
            try:
                canonical_json(self.params_schema)
            except UnicodeEncodeError:
                raise
            except (TypeError, ValueError):  # not JSON: the engine refuses it, as before
                pass
        except UnicodeEncodeError as exc:
            raise PolicyError(
                f"policy {self.name!r}: its text holds a lone surrogate "
                f"(U+{ord(exc.object[exc.start]):04X}), which has no UTF-8 form, so it could "
                "not be hashed or compiled"
            ) from None

    @cached_property
    def code_hash(self) -> bytes:
        """Identifies the Rego code and entrypoint (part of the policy id)."""
        blob = self.entrypoint.encode()
        for name in sorted(self.modules):
            blob += b"\x00" + self.modules[name].encode()
        return keccak(blob)

    @cached_property
    def schema_hash(self) -> bytes:
        """Identifies the params schema (the network's compiled-policy cache keys on it)."""
        return keccak(canonical_json(self.params_schema))

    @cached_property
    def material_hash(self) -> bytes:
        """sha256 of exactly what evaluates: the entrypoint, each module's name and text (in
        name order) and the schema's hash, each length-prefixed, so no two materials share it
        (``code_hash`` joins texts by NULs and leaves names out). Keys the probe's verdicts."""
        digest = hashlib.sha256(b"agentguard.policy-material/1")

        def put(data: bytes) -> None:
            digest.update(len(data).to_bytes(8, "big"))
            digest.update(data)

        put(self.entrypoint.encode("utf-8", "surrogatepass"))
        digest.update(len(self.modules).to_bytes(8, "big"))
        for name in sorted(self.modules):
            put(name.encode("utf-8", "surrogatepass"))
            put(self.modules[name].encode("utf-8", "surrogatepass"))
        put(self.schema_hash)
        return digest.digest()

    @classmethod
    def from_dir(cls, path: str | Path) -> Policy:
        """A policy folder: ``policy.rego`` (and any other ``.rego``), ``params_schema.json``,
        ``policy_metadata.json``; bundled modules it ``includes`` are loaded with it."""
        path = Path(path)
        meta = json.loads((path / "policy_metadata.json").read_text())
        modules = {p.name: p.read_text() for p in sorted(path.glob("*.rego"))}
        for included in _included(meta, seen={path.name}):
            for p in sorted((_root() / included).glob("*.rego")):
                modules[f"{included}/{p.name}"] = p.read_text()
        schema_file = path / "params_schema.json"
        schema = json.loads(schema_file.read_text()) if schema_file.exists() else {}
        return cls(
            name=meta["name"],
            entrypoint=meta["entrypoint"],
            modules=modules,
            params_schema=schema,
            description=meta.get("description", ""),
        )


def _root() -> Path:
    return Path(str(resources.files("agentguard.policies")))


def _included(meta: Mapping[str, Any], seen: set[str]) -> list[str]:
    """Bundled policies named by ``includes``, transitively, each once."""
    names: list[str] = []
    for name in meta.get("includes", []):
        if name in seen:
            continue
        if not (_root() / name / "policy_metadata.json").exists():
            raise KeyError(f"included policy {name!r} is not bundled: {', '.join(bundled())}")
        seen.add(name)
        names.append(name)
        names += _included(json.loads((_root() / name / "policy_metadata.json").read_text()), seen)
    return names


def bundled() -> list[str]:
    """Names of the policies shipped with agentguard."""
    return sorted(p.name for p in _root().iterdir() if (p / "policy_metadata.json").exists())


def load(name: str) -> Policy:
    """The bundled policy ``name`` (``KeyError`` naming the bundled ones otherwise)."""
    path = _root() / name
    if not (path / "policy_metadata.json").exists():
        raise KeyError(f"no bundled policy {name!r}; bundled: {', '.join(bundled())}")
    return Policy.from_dir(path)


def policy_id(policy_client: str, policy: Policy, params: Any, expire_after: int) -> bytes:
    """``keccak(policy_client ‖ code_hash ‖ keccak(canonical params) ‖ uint256(expire_after))``."""
    return keccak(
        address_word(bytes.fromhex(policy_client[2:]))
        + policy.code_hash
        + keccak(canonical_json(params))
        + uint_word(expire_after)
    )
