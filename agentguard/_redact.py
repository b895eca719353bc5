"""Secrets never leave through a log line or an audit record: a chain of small plain functions.

Each function takes and returns a JSON-like value; ``redact`` runs them all. Keys that name a
secret are masked whatever their value, bearer tokens are masked, and every secret this process
has handed to agentguard (``register_secret``: API keys, private keys) is cut out of any string
it appears in, however it got there.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = [
    "MASK",
    "redact",
    "redact_event",
    "register_node_secrets",
    "register_secret",
    "register_url_secrets",
]

MASK = "[redacted]"
_SECRET_KEY = re.compile(
    r"(private[_-]?key|secret|api[_-]?key|authorization|mnemonic|password|passphrase|seed|"
    r"bearer|credential|token_secret)",
    re.IGNORECASE,
)
_SHORT_KEY_NAME = re.compile(r"(?i)^(key|pk|sk|priv|privkey|signing_?key|raw_?key|key_?bytes)$")
_KEY_MATERIAL = re.compile(r"(0x)?[0-9a-fA-F]{64}")
# A path segment or query value that is a plain lower-case name (``base-sepolia``,
# ``mainnet``) names a network, not a credential: registering it masked every later mention of
# that network in logs and audit records. A random key is never all lower-case letters at the
# lengths providers use; a parameter whose name says it is a key is registered whatever it holds.
_PLAIN_NAME = re.compile(r"[a-z]+(?:[-_.][a-z]+)*")
_SECRET_PARAM = re.compile(r"(?i)(key|token|secret|auth|pass|sig|cred)")
_BEARER = re.compile(r"(?i)\bbearer\s+[^\s\"',]+")
_known: set[str] = set()
_known_lock = threading.Lock()


def register_secret(value: str | bytes) -> None:
    """Remember a secret so it is cut out of anything agentguard logs or records."""
    texts = {value.hex(), "0x" + value.hex()} if isinstance(value, bytes) else {value}
    if isinstance(value, str) and value.startswith("0x"):
        texts.add(value[2:])
    with _known_lock:
        _known.update(t for t in texts if len(t) >= 8)


def register_url_secrets(url: object) -> None:
    """Remember the parts of a node's URL that can carry a provider's key (Alchemy and
    QuickNode put it in the path, others in the query or the userinfo): a transport error
    quotes the path alone (``Max retries exceeded with url: /v2/<key>``), so registering the
    whole URL is not enough. The host stays readable (it says which node failed); anything
    that is not a URL is ignored."""
    if not isinstance(url, str):
        return
    try:
        parts = urlsplit(url)
        if not (parts.scheme and parts.netloc):
            return
        pieces = [parts.password or "", parts.username or "", parts.path, parts.query]
        pieces += [p for p in parts.path.split("/") if not _PLAIN_NAME.fullmatch(p)]
        pieces += [
            value
            for name, value in parse_qsl(parts.query, keep_blank_values=False)
            if _SECRET_PARAM.search(name) or not _PLAIN_NAME.fullmatch(value)
        ]
    except ValueError:
        return
    for piece in pieces:
        if piece.strip("/"):
            register_secret(piece.strip("/"))
            register_secret(unquote(piece.strip("/")))


def register_node_secrets(w3: object) -> None:
    """``register_url_secrets`` for the endpoint of a user's ``Web3`` (read, never changed)."""
    register_url_secrets(getattr(getattr(w3, "provider", None), "endpoint_uri", None))


def mask_secret_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: MASK if isinstance(k, str) and _SECRET_KEY.search(k) else mask_secret_keys(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_secret_keys(v) for v in value]
    return value


def mask_key_material(value: Any) -> Any:
    """A 32-byte hex string under a short key-ish name (``key``, ``pk``, ``sk``…) is a key."""
    if isinstance(value, Mapping):
        return {
            k: MASK
            if isinstance(k, str)
            and _SHORT_KEY_NAME.match(k)
            and isinstance(v, str)
            and _KEY_MATERIAL.fullmatch(v)
            else mask_key_material(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask_key_material(v) for v in value]
    return value


def mask_bearer_tokens(value: Any) -> Any:
    return _map_strings(value, lambda s: _BEARER.sub("Bearer " + MASK, s))


def mask_known_secrets(value: Any) -> Any:
    with _known_lock:
        known = sorted(_known, key=len, reverse=True)
    if not known:
        return value

    def cut(text: str) -> str:
        lowered = text.lower()
        for secret in known:
            if secret.lower() in lowered:
                text = re.sub(re.escape(secret), MASK, text, flags=re.IGNORECASE)
                lowered = text.lower()
        return text

    return _map_strings(value, cut)


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, Mapping):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_map_strings(v, fn) for v in value]
    return value


PROCESSORS: tuple[Callable[[Any], Any], ...] = (
    mask_secret_keys,
    mask_key_material,
    mask_bearer_tokens,
    mask_known_secrets,
)


def redact(value: Any) -> Any:
    for processor in PROCESSORS:
        value = processor(value)
    return value


def redact_event(_logger: Any, _method: str, event_dict: Any) -> Any:
    """The same chain as a structlog processor."""
    return redact(event_dict)
