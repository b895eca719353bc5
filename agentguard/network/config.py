"""The reference network's configuration file (JSON): operators, API keys, policy clients.

It holds no secrets: API keys appear only as SHA-256 digests, operators as address, URL and
the path of the 0600 file holding the gateway's bearer token for that operator. The keys
themselves live in 0600 files next to it (see ``launcher``)::

    {"gateway": {"host": "127.0.0.1", "port": 8550, "state_db": "state.sqlite3",
                 "threshold_percentage": 66, "timeout": 5, "chain_ids": [8453, 84532, 31337]},
     "operators": [{"address": "0x…", "url": "http://127.0.0.1:8551/rpc",
                    "token_file": "keys/operator-0.token"}],
     "api_keys": [{"sha256": "…", "policy_clients": ["*"], "admin": false}],
     "policy_clients": [{"registration": {…owner-signed, see registration.py…},
                         "policy": "agent_spend"}]}

A policy client's ``policy`` is a bundled policy name, a path to a policy folder, or the
policy material itself (``{"entrypoint", "modules", "params_schema", …}``). ``gateway.chain_rpc``
(optional) is a node URL: with it the gateway checks a contract client's ``owner()`` at
registration and runs the chain usage check (``agentguard.network.usage``).
``gateway.state_db`` is a file path (SQLite, one gateway process) or a ``postgresql://`` URL that
several gateway replicas share; give its password through ``PGPASSWORD`` or ``~/.pgpass``, not
in this file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentguard._exceptions import ConfigurationError

__all__ = ["ApiKeyEntry", "GatewaySettings", "NetworkConfig", "OperatorEntry"]

DEFAULT_CHAIN_IDS = (1, 8453, 84532, 11155111, 31337)

_ADDR = re.compile(r"^0x[0-9a-fA-F]{40}\Z")
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class OperatorEntry:
    """An operator: its signing address, its URL, and the file with the gateway's token for it."""

    address: str
    url: str
    token_file: str


@dataclass(frozen=True)
class ApiKeyEntry:
    """An API key (by digest) and the policy clients it may use (``"*"``: all)."""

    sha256: str
    policy_clients: frozenset[str] = frozenset({"*"})
    admin: bool = False

    def may_use(self, policy_client: str) -> bool:
        return (
            self.admin or "*" in self.policy_clients or policy_client.lower() in self.policy_clients
        )


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8550
    state_db: str = "state.sqlite3"
    threshold_percentage: int = 66
    timeout: float = 5.0
    chain_ids: tuple[int, ...] = DEFAULT_CHAIN_IDS
    usage_check: str | None = None
    chain_rpc: str | None = None  # turns on the chain usage check and vault owner checks
    approval_ttl: int = 900  # seconds a parked approval request waits for a person


@dataclass(frozen=True)
class NetworkConfig:
    gateway: GatewaySettings
    operators: tuple[OperatorEntry, ...]
    api_keys: tuple[ApiKeyEntry, ...]
    policy_clients: tuple[dict[str, Any], ...] = field(default=())

    @classmethod
    def load(cls, path: str | Path) -> NetworkConfig:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read network config {path}: {exc}") from None
        try:
            config = cls.from_json(raw, base=path.parent)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"network config {path} is invalid: {exc}") from None
        return config

    @classmethod
    def from_json(cls, raw: dict[str, Any], base: Path | None = None) -> NetworkConfig:
        gw = dict(raw.get("gateway", {}))
        state_db = str(gw.get("state_db", "state.sqlite3"))
        if "://" not in state_db:  # a file path; a URL (postgresql://…) is taken as it is
            state_db = _resolve(state_db, base)
        settings = GatewaySettings(
            host=str(gw.get("host", "127.0.0.1")),
            port=int(gw.get("port", 8550)),
            state_db=state_db,
            threshold_percentage=int(gw.get("threshold_percentage", 66)),
            timeout=float(gw.get("timeout", 5.0)),
            chain_ids=tuple(int(c) for c in gw.get("chain_ids", DEFAULT_CHAIN_IDS)),
            usage_check=gw.get("usage_check"),
            chain_rpc=gw.get("chain_rpc"),
            approval_ttl=int(gw.get("approval_ttl", 900)),
        )
        if not 0 < settings.approval_ttl <= 86400:
            raise ValueError("gateway.approval_ttl must be in 1..86400 seconds")
        if not 0 < settings.threshold_percentage <= 100:
            raise ValueError("gateway.threshold_percentage must be in 1..100")
        operators = tuple(
            OperatorEntry(
                address=str(o["address"]),
                url=str(o["url"]),
                token_file=_resolve(str(o["token_file"]), base),
            )
            for o in raw["operators"]
        )
        for op in operators:
            if not _ADDR.match(op.address):
                raise ValueError(f"operator address {op.address!r} is not a 0x address")
        if not operators:
            raise ValueError("at least one operator is needed")
        keys = tuple(
            ApiKeyEntry(
                sha256=str(k["sha256"]).lower(),
                policy_clients=frozenset(str(c).lower() for c in k.get("policy_clients", ["*"])),
                admin=bool(k.get("admin", False)),
            )
            for k in raw.get("api_keys", [])
        )
        for key in keys:
            if not _SHA256.match(key.sha256):
                raise ValueError("api_keys[].sha256 must be a SHA-256 hex digest of the key")
        clients = tuple(dict(c) for c in raw.get("policy_clients", []))
        return cls(gateway=settings, operators=operators, api_keys=keys, policy_clients=clients)

    def to_json(self) -> dict[str, Any]:
        gw = self.gateway
        return {
            "gateway": {
                "host": gw.host,
                "port": gw.port,
                "state_db": gw.state_db,
                "threshold_percentage": gw.threshold_percentage,
                "timeout": gw.timeout,
                "chain_ids": list(gw.chain_ids),
                "usage_check": gw.usage_check,
                "chain_rpc": gw.chain_rpc,
                "approval_ttl": gw.approval_ttl,
            },
            "operators": [
                {"address": o.address, "url": o.url, "token_file": o.token_file}
                for o in self.operators
            ],
            "api_keys": [
                {"sha256": k.sha256, "policy_clients": sorted(k.policy_clients), "admin": k.admin}
                for k in self.api_keys
            ],
            "policy_clients": list(self.policy_clients),
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")


def _resolve(path: str, base: Path | None) -> str:
    return str(base / path) if base is not None and not Path(path).is_absolute() else path
