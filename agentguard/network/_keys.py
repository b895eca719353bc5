"""Operator signing keys and API keys: made, stored and loaded without ever being shown.

Keys live in files with 0600 permissions (or an environment variable); only their path or
the derived address ever reaches a log, a process argument or an error message.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from coincurve import PrivateKey

from agentguard._attestation import operator_address
from agentguard._dumps import forbid_core_dumps
from agentguard._exceptions import ConfigurationError

__all__ = [
    "api_key_digest",
    "load_operator_key",
    "load_token",
    "new_api_key",
    "new_token",
    "write_operator_key",
    "write_secret",
]


def write_secret(path: Path, text: str) -> None:
    """Create ``path`` readable by its owner only, before any secret byte is written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def write_operator_key(path: Path) -> str:
    """Generate a secp256k1 key into ``path`` (hex, 0600); returns the operator address."""
    key = PrivateKey()
    write_secret(path, "0x" + key.secret.hex() + "\n")
    return operator_address(key)


def load_operator_key(path: str | None, env_var: str) -> PrivateKey:
    """The operator key from a file, else from ``env_var``. Errors never quote the key; the
    process holding it writes no core dump (a crash a policy causes would hold the key)."""
    forbid_core_dumps()
    if path:
        try:
            text = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read operator key file {path}: {exc.strerror}"
            ) from None
        source = f"key file {path}"
    else:
        # taken out of the environment: nothing this process runs later (a policy, a child)
        # can read it there
        text = os.environ.pop(env_var, "").strip()
        source = f"${env_var}"
        if not text:
            raise ConfigurationError(f"no operator key: pass --key-file or set ${env_var}")
    hex_key = text[2:] if text.startswith(("0x", "0X")) else text
    try:
        raw = bytes.fromhex(hex_key)
        if len(raw) != 32:
            raise ValueError
        return PrivateKey(raw)
    except ValueError:
        raise ConfigurationError(
            f"{source} does not hold a 32-byte hex secp256k1 private key"
        ) from None


def new_token() -> str:
    """A gateway→operator bearer token: only the gateway may ask an operator to sign."""
    return secrets.token_urlsafe(32)


def load_token(path: str | None, env_var: str) -> str:
    """A token from a file, else from ``env_var``. Errors never quote the token."""
    if path:
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigurationError(f"cannot read token file {path}: {exc.strerror}") from None
    else:
        token = os.environ.get(env_var, "").strip()
    if len(token) < 16:
        raise ConfigurationError(
            f"no usable operator token (at least 16 characters) in {path or '$' + env_var}"
        )
    return token


def new_api_key() -> str:
    return "agk_" + secrets.token_urlsafe(32)


def api_key_digest(api_key: str) -> str:
    """What the gateway stores instead of the key: a SHA-256 hex digest."""
    return hashlib.sha256(api_key.encode()).hexdigest()
