"""``agentguard audit verify PATH`` and ``agentguard audit show PATH --last N``.

``verify`` exits 0 when the chain is intact, 1 (with the first bad entry and why) when it is not,
and 2 when the file cannot be read or is not an audit log at all (``NotAnAuditLog``: none of its
lines is an audit entry, e.g. the wrong file was given), so scripts and cron jobs can alert on it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from pathlib import Path
from typing import Any

from agentguard._exceptions import NotAnAuditLog
from agentguard._json import strict_loads
from agentguard.audit import AuditLog, parse_line

__all__ = ["add_audit_commands", "check_is_audit_log"]

_ENTRY_KEYS = frozenset({"seq", "prev_hash", "hash"})


def add_audit_commands(subparsers: Any) -> None:
    audit = subparsers.add_parser("audit", help="check and read a hash-chained audit log")
    commands = audit.add_subparsers(dest="audit_command", required=True, metavar="<command>")

    verify = commands.add_parser("verify", help="check the hash chain; exit 1 if tampered")
    verify.add_argument("path", type=Path, help="the audit log (JSONL) to check")
    verify.add_argument(
        "--head", help="the last hash you anchored elsewhere (detects entries cut from the end)"
    )
    verify.set_defaults(handler=verify_command)

    show = commands.add_parser("show", help="print the last entries")
    show.add_argument("path", type=Path, help="the audit log (JSONL) to read")
    show.add_argument(
        "--last", type=int, default=20, metavar="N", help="how many entries (default 20)"
    )
    show.set_defaults(handler=show_command)


def _looks_like_entry(raw: bytes) -> bool:
    """An entry, even an edited or re-spaced one: a JSON object with an entry's chain fields."""
    try:
        obj = strict_loads(raw)  # depth-checked: a line of 100,000 "[" is no entry, no crash
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.keys() >= _ENTRY_KEYS


def check_is_audit_log(path: Path) -> None:
    """``NotAnAuditLog`` unless some line of ``path`` is (or was, before an edit) an audit
    entry: a log whose first entry was tampered with stays a tampered log, reported as such."""
    with path.open("rb") as f:
        count = 0
        for count, raw in enumerate(f, start=1):  # noqa: B007 - count is read after the loop
            if _looks_like_entry(raw):
                return
    raise NotAnAuditLog(
        f"{path} is not an agentguard audit log: none of its {count} lines is an audit entry"
    )


def verify_command(args: argparse.Namespace) -> int:
    try:
        report = AuditLog(args.path).verify(expected_head=args.head)
        if not report.ok and report.entries == 0:
            check_is_audit_log(args.path)
    except OSError as exc:
        print(f"cannot read audit log {args.path}: {exc.strerror}", file=sys.stderr)
        return 2
    except NotAnAuditLog as exc:
        print(f"agentguard: {exc}", file=sys.stderr)
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
