"""The gateway process: its HTTP handler (on ``agentguard.network._server``) and ``main``."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from agentguard._exceptions import AgentGuardError, ConfigurationError
from agentguard._logging import configure_logging
from agentguard.network._rpc import MAX_BODY, RPCError, rpc_handler
from agentguard.network._server import Handler, run
from agentguard.network.config import NetworkConfig
from agentguard.network.gateway._core import Gateway
from agentguard.network.state import UsageCheck, open_state
from agentguard.network.state._owner import own_state

__all__ = ["create_app", "main"]

_DESCRIPTION = "The reference network's gateway: Newton's gateway JSON-RPC in front of N operators."


def create_app(gateway: Gateway) -> Handler:
    """``POST /rpc`` (JSON-RPC, API key in ``Authorization: Bearer``) and ``GET /health``."""
    return rpc_handler(
        gateway.authenticate,
        gateway.dispatch,
        # the pid lets a launcher tell its own gateway from another one on the same port
        health={"status": "ok", "operators": len(gateway.config.operators), "pid": os.getpid()},
        name="gateway",
    )


def _load_usage_check(spec: str) -> UsageCheck:
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot load usage check {spec!r}: {exc}") from None
    check: UsageCheck = factory()
    return check


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging("INFO")  # a server process: its stderr is its log file
    parser = argparse.ArgumentParser(
        prog="python -m agentguard.network.gateway", description=_DESCRIPTION
    )
    parser.add_argument("--config", required=True, help="network config JSON (see config.py)")
    parser.add_argument("--port", type=int, help="override gateway.port")
    parser.add_argument(
        "--usage-check", help="module:factory returning a UsageCheck for expired attestations"
    )
    args = parser.parse_args(argv)
    try:
        config = NetworkConfig.load(args.config)
        owned = own_state(config.gateway.state_db)  # noqa: F841  held for the process's life
        state = open_state(config.gateway.state_db)
        chain = None
        if config.gateway.chain_rpc:
            from agentguard.network.usage import ChainUsageCheck

            chain = ChainUsageCheck(config.gateway.chain_rpc)
        spec = args.usage_check or config.gateway.usage_check
        gateway = Gateway(
            config,
            state,
            usage_check=_load_usage_check(spec) if spec else None,
            chain=chain,
        )
        for entry in config.policy_clients:
            spec_policy = entry.get("policy")
            if (
                isinstance(spec_policy, str)
                and not Path(spec_policy).is_absolute()
                and (Path(args.config).parent / spec_policy).is_dir()
            ):
                entry = {**entry, "policy": str(Path(args.config).parent / spec_policy)}
            gateway.register(entry, allow_paths=True)
    except (AgentGuardError, RPCError, OSError, ValueError, sqlite3.Error) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    host, port = config.gateway.host, args.port or config.gateway.port
    background: list[asyncio.Future[None]] = []

    async def start() -> None:
        await gateway.deliver()
        background.append(asyncio.ensure_future(gateway.sweep_forever()))
        print(
            f"gateway listening on http://{host}:{port}/rpc with {len(config.operators)} operators",
            flush=True,
        )

    async def stop() -> None:
        for task in background:
            task.cancel()
        await gateway.close()

    try:
        run(create_app(gateway), host, port, on_start=start, on_stop=stop, max_body=MAX_BODY)
    except OSError as exc:
        print(f"gateway: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0
