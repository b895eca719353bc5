"""``Guard.from_env()``: a guard and its defaults from documented ``AGENTGUARD_*`` variables.

Each variable is read, checked and turned into one ``Guard.connect`` keyword here; a malformed
one is a ``ConfigurationError`` that names the variable. Values are never echoed back (a key
pasted into the wrong variable must not reach a log), except a budget's rule text, which passes
through the same secret masking as every log line. The table in docs/configuration.md lists
them; ``VARIABLES`` is its source of truth (a test keeps the two in step).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agentguard._exceptions import ConfigurationError
from agentguard._logging import get_logger
from agentguard._redact import MASK, redact, register_secret, register_url_secrets

__all__ = ["VARIABLES", "connect_options"]

log = get_logger("agentguard.env")

VARIABLES = {
    "AGENTGUARD_GATEWAY_URL": "gateway JSON-RPC URL (required)",
    "AGENTGUARD_API_KEY": "gateway API key (secret)",
    "AGENTGUARD_POLICY_CLIENT": "policy client address (required)",
    "AGENTGUARD_OPERATORS": "reference network: operator addresses, comma-separated (unset: "
    "Newton, BLS verified through AGENTGUARD_RPC_URL)",
    "AGENTGUARD_THRESHOLD": "quorum percentage, 1..100 (default 66; Newton: the gateway's)",
    "AGENTGUARD_POLICY_ID": "the registered policy id, 0x + 64 hex",
    "AGENTGUARD_POLICY": "a bundled policy name; its params are the budget's",
    "AGENTGUARD_EXPIRE_AFTER": "with AGENTGUARD_POLICY: the registered expiry (default 300)",
    "AGENTGUARD_ANY_POLICY": "1 accepts any policy the gateway chooses (unsafe, logged)",
    "AGENTGUARD_PRIVATE_KEY_FILE": "file holding the agent's key (preferred)",
    "AGENTGUARD_PRIVATE_KEY": "the agent's key itself (secret)",
    "AGENTGUARD_RPC_URL": "chain JSON-RPC URL (treated as a secret)",
    "AGENTGUARD_CHAIN_ID": "chain id (default 8453, Base)",
    "AGENTGUARD_LEDGER": "spend ledger: SQLite path, or sqlite:///, redis://, postgresql:// URL",
    "AGENTGUARD_AUDIT_LOG": "audit log path",
    "AGENTGUARD_BUDGET": "budget rules separated by ';'",
    "AGENTGUARD_VAULT": "AgentVault address the agent spends from",
    "AGENTGUARD_NEWTON_CERTIFICATE_VERIFIER": "Newton: the BN254 certificate verifier holding "
    "the operator table (default: Newton's deployment for the chain)",
    "AGENTGUARD_NEWTON_SOURCE_AVS": "Newton: the AVS whose operator set signs (default: "
    "Newton's deployment for the chain)",
}
RPC_TIMEOUT = 15.0
"""Seconds one request to ``AGENTGUARD_RPC_URL`` may take before it fails (closed)."""
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}\Z")
_DIGITS = re.compile(r"[0-9]{1,20}")  # ASCII only: str.isdigit() also takes "²"
_POLICY_ID = re.compile(r"^0x[0-9a-fA-F]{64}\Z")
_KEY_MATERIAL = re.compile(r"(0x)?[0-9a-fA-F]{64}")
_URL = re.compile(r"^https?://[^\s/]+", re.IGNORECASE)
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _error(name: str, message: str) -> ConfigurationError:
    """Masked like a log line: no registered secret and no 32-byte hex ever leaves in it."""
    return ConfigurationError(f"{name}: {_KEY_MATERIAL.sub(MASK, redact(message))}")


class _Env:
    def __init__(self, environ: Mapping[str, str]) -> None:
        for key, value in environ.items():
            if (
                isinstance(key, str)
                and key.startswith("AGENTGUARD_")
                and not isinstance(value, str)
            ):
                raise ConfigurationError(f"{key}: an environment value is text")
        self._values = {
            k: v.strip() for k, v in environ.items() if k.startswith("AGENTGUARD_") and v.strip()
        }
        for secret in ("AGENTGUARD_API_KEY", "AGENTGUARD_PRIVATE_KEY", "AGENTGUARD_RPC_URL"):
            if secret in self._values:  # masked from here on, even if malformed
                register_secret(self._values[secret])
        register_url_secrets(self._values.get("AGENTGUARD_RPC_URL"))  # its path, query…
        for name in sorted(set(self._values) - set(VARIABLES)):
            close = difflib.get_close_matches(name, VARIABLES, n=1)
            log.warning(
                "unknown AGENTGUARD_ variable ignored",
                variable=name,
                did_you_mean=close[0] if close else None,
            )

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def required(self, name: str) -> str:
        value = self._values.get(name)
        if value is None:
            raise ConfigurationError(f"{name} is not set ({VARIABLES[name]})")
        return value

    def integer(self, name: str, low: int, high: int) -> int | None:
        value = self.get(name)
        if value is None:
            return None
        if not _DIGITS.fullmatch(value) or not low <= int(value) <= high:
            raise _error(name, f"must be a whole number from {low} to {high}")
        return int(value)

    def flag(self, name: str) -> bool:
        value = (self.get(name) or "0").lower()
        if value not in _TRUE | _FALSE:
            raise _error(name, "must be 1 or 0 (true/false, yes/no)")
        return value in _TRUE

    def address(self, name: str, value: str | None = None, what: str | None = None) -> str:
        from agentguard._verifier import _address

        value = self.required(name) if value is None else value
        label = what or "the value"
        if not _ADDRESS.match(value):
            raise _error(name, f"{label} is not an address (0x + 40 hex digits)")
        try:
            return _address(value, label)
        except ConfigurationError as exc:
            raise _error(name, exc.message) from None

    def url(self, name: str, *, required: bool) -> str | None:
        """An http(s) URL; plain http:// only to this machine (the gateway's API key rides in
        a header, a provider's key in the RPC URL's path)."""
        value = self.required(name) if required else self.get(name)
        if value is None:
            return None
        if not _URL.match(value):
            raise _error(name, "must be an http:// or https:// URL")
        try:
            parsed = urlsplit(value)
            host = parsed.hostname or ""
        except ValueError:
            raise _error(name, "is not a valid URL") from None
        if parsed.scheme.lower() == "http" and not _loopback(host):
            raise _error(
                name,
                "plain http:// is only for this machine (localhost, 127.0.0.1, ::1); use "
                "https:// so the keys it carries are not sent in cleartext",
            )
        return value


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _operators(env: _Env) -> list[str] | None:
    """The reference network's operator addresses; unset means Newton (BLS, checked against
    Newton's contracts through AGENTGUARD_RPC_URL)."""
    name = "AGENTGUARD_OPERATORS"
    text = env.get(name)
    if text is None:
        return None
    items = [item.strip() for item in text.split(",")]
    seen: dict[str, int] = {}
    out = []
    for i, item in enumerate(items, start=1):
        if not item:
            raise _error(name, f"item {i} is empty; separate addresses with single commas")
        address = env.address(name, item, f"item {i}")
        if address in seen:
            raise _error(name, f"item {i} repeats item {seen[address]}; list each operator once")
        seen[address] = i
        out.append(address)
    return out


def _policy(env: _Env) -> dict[str, Any]:
    pid, policy = env.get("AGENTGUARD_POLICY_ID"), env.get("AGENTGUARD_POLICY")
    any_policy = env.flag("AGENTGUARD_ANY_POLICY")
    given = (("POLICY_ID", pid), ("POLICY", policy), ("ANY_POLICY", any_policy))
    chosen = [n for n, v in given if v]
    if len(chosen) > 1:
        raise ConfigurationError(
            f"set only one of AGENTGUARD_{' / AGENTGUARD_'.join(chosen)}: "
            "AGENTGUARD_POLICY_ID pins the registered policy"
        )
    if pid is not None and not _POLICY_ID.match(pid):
        raise _error("AGENTGUARD_POLICY_ID", "must be 0x followed by 64 hex digits")
    expire_after = env.integer("AGENTGUARD_EXPIRE_AFTER", 1, 31_536_000)
    if expire_after is not None and policy is None:
        raise ConfigurationError("AGENTGUARD_EXPIRE_AFTER is only used with AGENTGUARD_POLICY")
    if policy is not None:
        from agentguard.policies import bundled

        if policy not in bundled():
            raise _error("AGENTGUARD_POLICY", f"bundled policies are {', '.join(bundled())}")
        if env.get("AGENTGUARD_BUDGET") is None:
            raise ConfigurationError(
                "AGENTGUARD_POLICY needs AGENTGUARD_BUDGET (its params are the budget's); "
                "or pin AGENTGUARD_POLICY_ID"
            )
        return {"policy": policy, "expire_after": 300 if expire_after is None else expire_after}
    if pid is None and not any_policy:
        raise ConfigurationError(
            "set AGENTGUARD_POLICY_ID (the id register_policy_client returned), or "
            "AGENTGUARD_POLICY with AGENTGUARD_BUDGET; AGENTGUARD_ANY_POLICY=1 accepts any "
            "policy the gateway chooses (unsafe)"
        )
    return {"policy_id": pid, "any_policy": any_policy}


def _signer(env: _Env) -> Any:
    from agentguard._signer import Signer

    file, inline = env.get("AGENTGUARD_PRIVATE_KEY_FILE"), env.get("AGENTGUARD_PRIVATE_KEY")
    if file is not None and inline is not None:
        raise ConfigurationError(
            "set AGENTGUARD_PRIVATE_KEY_FILE or AGENTGUARD_PRIVATE_KEY, not both "
            "(prefer the file: a variable is inherited by every child process)"
        )
    if file is not None:
        path = Path(file).expanduser()
        try:
            text = path.read_text().strip()
            mode = path.stat().st_mode
        except (OSError, UnicodeDecodeError):
            raise _error("AGENTGUARD_PRIVATE_KEY_FILE", f"cannot read {path}") from None
        register_secret(text)
        if mode & 0o077:
            log.warning("the private key file is readable by others; chmod 600 it", path=str(path))
        name = "AGENTGUARD_PRIVATE_KEY_FILE"
    elif inline is not None:
        text, name = inline, "AGENTGUARD_PRIVATE_KEY"
    else:
        return None
    try:
        return Signer.from_key(text)
    except ConfigurationError:
        raise ConfigurationError(
            f"{name}: not a valid private key (0x followed by 64 hex digits)"
        ) from None


def _open(name: str, path: str, kind: type[Any]) -> Any:
    where = Path(path).expanduser()
    if not where.parent.is_dir():
        raise _error(name, f"the directory of {where} does not exist")
    try:
        return kind(where)
    except Exception as exc:  # sqlite/OS errors: a path that cannot be opened
        raise _error(name, f"cannot open {path}: {type(exc).__name__}") from None


def _shared_ledger(url: str) -> dict[str, Any]:
    """A ledger URL: the ledger and, beside it, the record of used attestations, so every
    process of a fleet spends one budget and accepts each attestation once. The URL (it may
    hold a password) is never echoed."""
    from agentguard._exceptions import AgentGuardError
    from agentguard.ledger import open_ledger, open_replay_guard

    scheme = url.split("://", 1)[0][:20]
    try:
        ledger = open_ledger(url)
        try:
            return {"ledger": ledger, "replay_guard": open_replay_guard(url)}
        except AgentGuardError:
            ledger.close()
            raise
    except ConfigurationError as exc:  # ours, without the URL: what to do (e.g. create it once)
        raise _error(
            "AGENTGUARD_LEDGER",
            f"cannot open the {scheme} ledger: {exc.message}. {exc.hint or ''}".strip(),
        ) from None
    except AgentGuardError as exc:
        raise _error(
            "AGENTGUARD_LEDGER", f"cannot open the {scheme} ledger: {type(exc).__name__}"
        ) from None


def connect_options(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``Guard.connect`` keywords from the environment (``os.environ`` by default)."""
    env = _Env(os.environ if environ is None else environ)
    options: dict[str, Any] = {
        "url": env.url("AGENTGUARD_GATEWAY_URL", required=True),
        "policy_client": env.address("AGENTGUARD_POLICY_CLIENT"),
        "operators": _operators(env),
        "api_key": env.get("AGENTGUARD_API_KEY"),
        **_policy(env),
    }
    threshold = env.integer("AGENTGUARD_THRESHOLD", 1, 100)
    if threshold is not None:
        options["threshold_percentage"] = threshold
    chain_id = env.integer("AGENTGUARD_CHAIN_ID", 1, 2**63 - 1)
    options["chain_id"] = chain_id
    budget_text = env.get("AGENTGUARD_BUDGET")
    if budget_text is not None:
        from agentguard.budget import Budget

        try:
            options["budget"] = Budget(budget_text, chain_id=chain_id or 8453)
        except ConfigurationError as exc:
            raise _error("AGENTGUARD_BUDGET", exc.message) from None
    options["signer"] = _signer(env)
    rpc = env.url("AGENTGUARD_RPC_URL", required=False)
    if rpc is not None:
        from web3 import Web3

        # explicit: a stalled node must fail (closed) in bounded time, not hang an agent
        options["web3"] = Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": RPC_TIMEOUT}))
    if (path := env.get("AGENTGUARD_LEDGER")) is not None and "://" in path:
        options.update(_shared_ledger(path))
    elif path is not None:
        from agentguard.ledger import Ledger

        options["ledger"] = _open("AGENTGUARD_LEDGER", path, Ledger)
    if (path := env.get("AGENTGUARD_AUDIT_LOG")) is not None:
        from agentguard.audit import AuditLog

        options["audit"] = _open("AGENTGUARD_AUDIT_LOG", path, AuditLog)
    if env.get("AGENTGUARD_VAULT") is not None:
        options["vault"] = env.address("AGENTGUARD_VAULT")
    newton = {
        option: env.address(name) for option, name in _NEWTON.items() if env.get(name) is not None
    }
    if newton:
        options["newton"] = newton
    return options


_NEWTON = {
    "certificate_verifier": "AGENTGUARD_NEWTON_CERTIFICATE_VERIFIER",
    "source_avs": "AGENTGUARD_NEWTON_SOURCE_AVS",
}
"""``Guard.connect(newton={...})`` options read from the environment."""
