"""Who is calling: API keys (stored as SHA-256 digests) and the admin check."""

from __future__ import annotations

from collections.abc import Iterable

from agentguard.network._keys import api_key_digest
from agentguard.network._rpc import UNAUTHORIZED, RPCError
from agentguard.network.config import ApiKeyEntry

__all__ = ["Keys", "require_admin", "require_use"]


class Keys:
    """The gateway's API keys, looked up by the digest of the bearer token."""

    def __init__(self, entries: Iterable[ApiKeyEntry]) -> None:
        self._by_digest: dict[str, ApiKeyEntry] = {k.sha256: k for k in entries}

    def authenticate(self, header: str | None) -> ApiKeyEntry:
        if not header or not header.startswith("Bearer "):
            raise RPCError(
                UNAUTHORIZED,
                "missing API key: send 'Authorization: Bearer <api key>'",
                http_status=401,
            )
        entry = self._by_digest.get(api_key_digest(header[7:].strip()))
        if entry is None:
            raise RPCError(
                UNAUTHORIZED, "the API key is not valid for this gateway", http_status=401
            )
        return entry


def require_admin(key: ApiKeyEntry) -> None:
    if not key.admin:
        raise RPCError(UNAUTHORIZED, "this method needs the admin API key", http_status=403)


def require_use(key: ApiKeyEntry, policy_client: str) -> None:
    if not key.may_use(policy_client):
        raise RPCError(
            UNAUTHORIZED,
            f"this API key may not use policy client {policy_client}",
            http_status=403,
        )
