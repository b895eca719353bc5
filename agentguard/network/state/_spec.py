"""Which backend a ``gateway.state_db`` names, and what it opens there."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from agentguard._exceptions import ConfigurationError


def parse_spec(spec: str | Path) -> tuple[str, str, str | None]:
    """(backend, what it opens, namespace or None for the default). Never quotes ``spec``:
    a database URL may carry a password."""
    if isinstance(spec, Path):
        return "sqlite", str(spec), None
    from agentguard.ledger._url import _parse

    if not isinstance(spec, str) or not spec:
        raise ConfigurationError("gateway.state_db must be a file path or a database URL")
    scheme = spec.split("://", 1)[0].lower() if "://" in spec else ""
    if scheme not in ("", "sqlite", "postgresql", "postgres"):
        raise ConfigurationError(
            f"gateway.state_db: unknown URL scheme {scheme[:20]!r}; use a file path, "
            "sqlite:///PATH or postgresql://USER@HOST/DB"
        )
    try:
        kind, target, namespace = _parse(spec)
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"gateway.state_db: {exc.message.replace('ledger URL', 'state URL')}"
        ) from None
    explicit = kind == "postgres" and "namespace=" in urlsplit(spec).query
    return kind, target, namespace if explicit else None
