"""The ``agentguard`` command: ``network up|status|down`` (reference authorization network),
``policy list|show|register|simulate``, ``approvals`` (list, approve, reject parked actions),
``audit verify|show``, ``challenge run|verify``.

Each command group lives next to the code it drives and registers itself here; heavy imports
(regopy, uvicorn) happen only when that group runs. A refusal (any ``AgentGuardError``) is one
line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

_DESCRIPTION = """\
Let an AI agent spend money safely: every onchain action and x402 payment needs a quorum
attestation bound to exactly that action.

  agentguard network up          start a local reference authorization network
  agentguard network status      is it running, and where
  agentguard policy register     give a policy client a policy and its params
  agentguard policy list | show  the registered policy clients, one client's policy
  agentguard policy simulate     would this intent be allowed, and why
  agentguard approvals list      show actions waiting for a human decision
  agentguard audit verify FILE   check that an audit log's hash chain is intact
  agentguard challenge run       re-evaluate attested decisions; prove a wrong one

Run `agentguard <command> --help` for a command's options."""


def _version() -> str:
    try:
        return version("agentguard")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree (each group registers itself)."""
    parser = argparse.ArgumentParser(
        prog="agentguard",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"agentguard {_version()}", help="print the version"
    )
    sub = parser.add_subparsers(dest="group", required=True, metavar="<command>")

    from agentguard.network._cli import add_network_commands

    add_network_commands(sub)
    from agentguard.network._policy_cli import add_policy_commands

    add_policy_commands(sub)
    from agentguard._approvals_cli import add_approvals_commands

    add_approvals_commands(sub)
    from agentguard._audit_cli import add_audit_commands

    add_audit_commands(sub)
    from agentguard.challenge._cli import add_challenge_commands

    add_challenge_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from agentguard._exceptions import AgentGuardError

    try:
        result: int = args.handler(args)
    except AgentGuardError as exc:
        print(f"agentguard: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
