"""``agentguard audit verify PATH`` and ``agentguard audit show PATH --last N``.

``verify`` exits 0 when the chain is intact, 1 (with the first bad entry and why) when it is not,
and 2 when the file cannot be read, so scripts and cron jobs can alert on it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from pathlib import Path
from typing import Any

from agentguard.audit import AuditLog, parse_line

__all__ = ["add_audit_commands"]


def add_audit_commands(subparsers: Any) -> None:
    audit = subparsers.add_parser("audit", help="check and read a hash-chained audit log")
    commands = audit.add_subparsers(dest="audit_command", required=True)

    verify = commands.add_parser("verify", help="check the hash chain; exit 1 if tampered")
    verify.add_argument("path", type=Path)
    verify.add_argument(
        "--head", help="the last hash you anchored elsewhere (detects entries cut from the end)"
    )
    verify.set_defaults(handler=verify_command)

    show = commands.add_parser("show", help="print the last entries")
    show.add_argument("path", type=Path)
    show.add_argument("--last", type=int, default=20, metavar="N")
    show.set_defaults(handler=show_command)


def verify_command(args: argparse.Namespace) -> int:
    try:
        report = AuditLog(args.path).verify(expected_head=args.head)
    except OSError as exc:
        print(f"cannot read audit log {args.path}: {exc.strerror}", file=sys.stderr)
        return 2
    if report.ok:
        print(f"{args.path}: {report}")
        return 0
    print(f"{args.path}: {report}", file=sys.stderr)
    return 1


def show_command(args: argparse.Namespace) -> int:
    try:
        with Path(args.path).open("rb") as f:
            lines = deque(f, maxlen=max(args.last, 0))
    except OSError as exc:
        print(f"cannot read audit log {args.path}: {exc.strerror}", file=sys.stderr)
        return 2
    for raw in lines:
        try:  # the same strict reading as ``verify``: show no line a parser reads differently
            entry = parse_line(raw)
        except ValueError as exc:
            print(f"{'?':>6}  damaged line ({exc}): {raw[:120]!r}")
            continue
        # ASCII escapes on screen, so no control or bidi character can disguise a record
        record = json.dumps(entry.record, sort_keys=True, separators=(",", ":"))
        print(f"{entry.seq:>6}  {entry.ts}  {entry.kind:<16} {record}")
    return 0
