"""``agentguard approvals list|approve|reject``: a person decides on parked actions.

``approve`` signs an EIP-712 ``Approval`` with the approver key (``--approver-key-file``,
default the state dir's ``keys/owner.key``) here, in this process, and delivers it with the
admin key; operators accept it only if that key is an approver of the policy client. Amounts,
tokens and recipients shown are re-derived from each intent's calldata
(``agentguard.network.approvals.ApprovalView``); ``--token SYMBOL=ADDRESS:DECIMALS`` names a
local token so its amounts show in human units.

The same steps are plain functions (``list_approvals``, ``approve``, ``reject``) for scripts.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentguard._exceptions import AgentGuardError, ConfigurationError
from agentguard._units import Token, Tokens
from agentguard.network._cli import DEFAULT_STATE_DIR, admin_credentials
from agentguard.network._keys import load_operator_key
from agentguard.network.approvals import (
    ApprovalsClient,
    ApprovalView,
    parse_token_option,
    shown_text,
)
from agentguard.network.config import DEFAULT_CHAIN_IDS

__all__ = ["add_approvals_commands", "approve", "format_view", "list_approvals", "reject"]


def add_approvals_commands(subparsers: Any) -> None:
    group = subparsers.add_parser("approvals", help="list, approve or reject parked actions")
    sub = group.add_subparsers(dest="command", required=True, metavar="<command>")

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--url", help="gateway URL (default: from the state dir)")
        parser.add_argument(
            "--state-dir",
            default=DEFAULT_STATE_DIR,
            help="where secrets.json, gateway_url and keys/ are (else $AGENTGUARD_ADMIN_KEY)",
        )
        parser.add_argument(
            "--token",
            action="append",
            default=[],
            metavar="SYMBOL=ADDRESS:DECIMALS",
            help="a local token, so its amounts show in human units (repeatable)",
        )

    listing = sub.add_parser("list", help="parked actions (pending unless --all)")
    listing.add_argument("--all", action="store_true", help="also decided and expired ones")
    common(listing)
    listing.set_defaults(handler=_list)

    for name, handler in (("approve", _approve), ("reject", _reject)):
        command = sub.add_parser(name, help=f"{name} one parked action")
        command.add_argument("intent_hash", help="the parked intent's hash (approvals list)")
        command.add_argument("--policy-client", required=True, help="its policy client (0x…)")
        if name == "approve":
            command.add_argument(
                "--approver-key-file",
                help="hex key of an approver (default: <state dir>/keys/owner.key)",
            )
            command.add_argument(
                "--yes", action="store_true", help="do not ask at a terminal before signing"
            )
        common(command)
        command.set_defaults(handler=handler)


def format_view(view: ApprovalView) -> str:
    expires = datetime.fromtimestamp(view.expires_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        f"{view.intent_hash}  [{view.status}]  policy client {view.policy_client}",
        f"    {view.amount} to {view.recipient or '(no recipient)'} ({view.kind}), "
        f"expires {expires}",
    ]
    lines += [f"    reason: {reason}" for reason in view.reasons]
    if view.problem is not None:
        lines.append(f"    DO NOT APPROVE: {view.problem}")
    return "\n".join(lines)


def list_approvals(
    url: str, admin_key: str, *, status: str | None = "pending", tokens: Tokens = None
) -> list[ApprovalView]:
    with contextlib.closing(ApprovalsClient(url, admin_key)) as client:
        return client.list(status=status, tokens=tokens)


def approve(
    url: str, admin_key: str, policy_client: str, intent_hash: str, *, approver_key_file: str
) -> dict[str, Any]:
    """Sign an approval with the key in ``approver_key_file`` and deliver it."""
    key = load_operator_key(approver_key_file, "")
    with contextlib.closing(ApprovalsClient(url, admin_key)) as client:
        return client.approve(key, policy_client, intent_hash)


def reject(url: str, admin_key: str, policy_client: str, intent_hash: str) -> dict[str, Any]:
    with contextlib.closing(ApprovalsClient(url, admin_key)) as client:
        return client.reject(policy_client, intent_hash)


def _tokens(args: argparse.Namespace) -> list[Token]:
    return [t for text in args.token for t in parse_token_option(text, DEFAULT_CHAIN_IDS)]


def _run(args: argparse.Namespace, step: Any) -> int:
    credentials = admin_credentials(Path(args.state_dir), args.url)
    if credentials is None:
        return 2
    try:
        step(*credentials)
    except AgentGuardError as exc:
        print(f"refused: {exc.message}")
        return 1
    return 0


def _list(args: argparse.Namespace) -> int:
    def step(url: str, admin_key: str) -> None:
        views = list_approvals(
            url, admin_key, status=None if args.all else "pending", tokens=_tokens(args)
        )
        print("\n".join(format_view(v) for v in views) if views else "no parked actions")

    return _run(args, step)


def _approve(args: argparse.Namespace) -> int:
    key_file = args.approver_key_file or str(Path(args.state_dir) / "keys" / "owner.key")

    def step(url: str, admin_key: str) -> None:
        # Show what is signed: the hash may come from someone else's words ("it is the 5 USDC")
        with contextlib.closing(ApprovalsClient(url, admin_key)) as client:
            view = client.find(args.policy_client, args.intent_hash, tokens=_tokens(args))
        print(format_view(view))
        asked = not args.yes and sys.stdin.isatty()
        if asked and input("sign an approval of exactly this? [y/N] ").strip().lower() != "y":
            raise ConfigurationError("not approved: nothing was signed")
        result = approve(
            url, admin_key, args.policy_client, args.intent_hash, approver_key_file=key_file
        )
        approver = result.get("approver") if isinstance(result, dict) else None  # the gateway's
        print(f"approved {args.intent_hash.lower()} (approver {shown_text(str(approver))})")

    return _run(args, step)


def _reject(args: argparse.Namespace) -> int:
    def step(url: str, admin_key: str) -> None:
        reject(url, admin_key, args.policy_client, args.intent_hash)
        print(f"rejected {args.intent_hash.lower()}")

    return _run(args, step)
