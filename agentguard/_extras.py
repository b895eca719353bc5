"""The optional parts of agentguard (its extras) and the check each entry point makes first.

An entry point that needs an extra calls ``require`` before it does anything, so a missing
package is a ``MissingExtra`` naming the extra and the command that installs it, never a
traceback in a log file after keys were already written.
"""

from __future__ import annotations

import importlib.util

from agentguard._exceptions import MissingExtra

__all__ = ["EXTRAS", "require"]

#: extra name -> the top-level modules it installs that agentguard imports
EXTRAS: dict[str, tuple[str, ...]] = {
    "network": ("starlette", "uvicorn", "httptools", "regopy", "jsonschema"),
    "x402": ("x402",),
    "redis": ("redis",),
    "postgres": ("psycopg",),
    "langchain": ("langchain_agentguard", "langchain_core"),
    "opengradient": ("agentguard_opengradient",),
}


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (nothing runs, nothing loads)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken __spec__
        return False


def require(extra: str, *, needed_by: str) -> None:
    """Raise ``MissingExtra`` if any module of ``extra`` is not installed."""
    missing = [module for module in EXTRAS[extra] if not _installed(module)]
    if missing:
        raise MissingExtra(extra, missing, needed_by=needed_by)
