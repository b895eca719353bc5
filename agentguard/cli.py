"""The ``agentguard`` command: ``network up`` (reference authorization network), ``approvals``
(list, approve, reject parked actions), ``audit verify``.

Each command group lives next to the code it drives and registers itself here; heavy imports
(regopy, uvicorn) happen only when that group runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

_DESCRIPTION = """\
Let an AI agent spend money safely: every onchain action and x402 payment needs a quorum
attestation bound to exactly that action.

  agentguard network up        start a local reference authorization network
  agentguard approvals list    show actions waiting for a human decision
  agentguard audit verify F    check that an audit log's hash chain is intact

Run `agentguard <command> --help` for a command's options."""


def _version() -> str:
    try:
        return version("agentguard")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
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
    from agentguard._approvals_cli import add_approvals_commands

    add_approvals_commands(sub)
    try:
        from agentguard._audit_cli import add_audit_commands
    except ImportError:  # pragma: no cover - audit lands with the ledger
        pass
    else:
        add_audit_commands(sub)

    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
