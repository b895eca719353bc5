"""Logging: quiet by default (a library must not print), one call to turn it on.

agentguard logs through structlog bound to stdlib ``logging`` loggers named ``agentguard.*``,
so records go wherever the application sends them, and every event passes the redaction chain
first. ``configure_logging()`` is the one call for applications that want agentguard's own
rendering (console or JSON lines).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from agentguard._redact import redact_event

__all__ = ["configure_logging", "get_logger"]

# A library adds no output of its own: without configuration nothing reaches stderr.
logging.getLogger("agentguard").addHandler(logging.NullHandler())


def get_logger(name: str) -> Any:
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            redact_event,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
    )


def configure_logging(level: str | int = "INFO", *, json: bool = False) -> None:
    """Send agentguard's events to stderr, rendered for people (or as JSON lines)."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_log_level, redact_event],
        )
    )
    logger = logging.getLogger("agentguard")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
