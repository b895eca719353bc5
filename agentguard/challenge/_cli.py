"""``agentguard challenge run|verify``: re-evaluate attested decisions, and re-check a record.

``run`` exits 0 when every checked task was signed as the policy says, 1 when any discrepancy
was found (its record written with ``--out``), 2 on a usage or configuration error. ``verify``
exits 0 when the record is proven, 1 when it is not (with the reason), 2 when the file is not a
challenge record at all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from agentguard._exceptions import ConfigurationError
from agentguard._extras import require

__all__ = ["add_challenge_commands"]

_USAGE = 2


def add_challenge_commands(subparsers: Any) -> None:
    challenge = subparsers.add_parser(
        "challenge",
        help="re-evaluate attested decisions independently; prove a wrong one",
        description="Re-evaluate what the operators attested, exactly as an operator does, "
        "and write a self-contained record for every result the policy does not give.",
    )
    sub = challenge.add_subparsers(dest="challenge_command", required=True, metavar="<command>")

    run = sub.add_parser(
        "run",
        help="check recorded tasks (or an audit log); exit 1 if any discrepancy",
        description="Check attested tasks from the network's records (--state or --gateway) or "
        "from an agent's audit log (--audit; the policy material then comes from --policy-dir "
        "and/or the network). Exit status: 0 no discrepancy, 1 discrepancies, 2 an error.",
    )
    source = run.add_mutually_exclusive_group()
    source.add_argument(
        "--state",
        metavar="SPEC",
        help="the network's state: a SQLite path or sqlite:///PATH, or postgresql://…",
    )
    source.add_argument(
        "--gateway", metavar="URL", help="a gateway's URL (its auditor methods; needs an API key)"
    )
    run.add_argument(
        "--api-key",
        help="the gateway API key (default $AGENTGUARD_API_KEY); a client's key sees only its "
        "clients' tasks, the admin key all",
    )
    run.add_argument(
        "--audit",
        metavar="FILE",
        help="check the 'authorized' records of this audit log instead of the network's records",
    )
    run.add_argument(
        "--policy-dir",
        metavar="DIR",
        help="registrations held locally: *.json files of {registration, policy} (checked "
        "before the network's)",
    )
    run.add_argument(
        "--out", metavar="DIR", help="write one challenge record (JSON) per discrepancy here"
    )
    run.add_argument(
        "--after",
        type=int,
        default=0,
        metavar="SEQ",
        help="start after this cursor (a task seq, or an audit entry seq; default 0)",
    )
    run.add_argument("--limit", type=int, metavar="N", help="check at most N tasks (default: all)")
    run.add_argument("--policy-client", metavar="ADDR", help="only this policy client's tasks")
    run.add_argument(
        "--operator",
        action="append",
        default=[],
        metavar="ADDR",
        help="an operator address, repeatable: only signatures of these keys count (default: "
        "any signature that recovers to the address it names)",
    )
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.set_defaults(handler=_run)

    verify = sub.add_parser(
        "verify",
        help="re-check a challenge record with nothing else; exit 0 proven, 1 not proven",
        description="Re-check a challenge record offline: the owner's signature, the policy "
        "id, a fresh evaluation, and each named operator's signature.",
    )
    verify.add_argument("record", type=Path, help="the challenge record (JSON) to check")
    verify.add_argument(
        "--operator",
        action="append",
        default=[],
        metavar="ADDR",
        help="an operator address, repeatable: a named signer must be one of these",
    )
    verify.add_argument(
        "--rpc", help="a node URL, to re-check the chain facts a history record cites"
    )
    verify.set_defaults(handler=_verify)
    _add_watch(sub)


def _sources(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(evidence source, network lookup or None, local PolicyDir or None)."""
    from agentguard.challenge._sources import AuditSource, GatewaySource, PolicyDir, StateSource

    if args.limit is not None and args.limit < 1:
        raise ConfigurationError("--limit must be at least 1")
    if args.after < 0:
        raise ConfigurationError("--after must be 0 or more")
    local = PolicyDir(args.policy_dir) if args.policy_dir else None
    network: Any = None
    if args.state:
        network = StateSource(args.state, policy_client=args.policy_client)
    elif args.gateway:
        key = args.api_key or os.environ.get("AGENTGUARD_API_KEY")
        if not key:
            raise ConfigurationError("--gateway needs --api-key (or $AGENTGUARD_API_KEY)")
        network = GatewaySource(args.gateway, key, policy_client=args.policy_client)
    if args.audit:
        if network is None and local is None:
            raise ConfigurationError(
                "--audit needs the policy material: --policy-dir, --state or --gateway"
            )
        return AuditSource(args.audit, policy_client=args.policy_client), network, local
    if network is None:
        raise ConfigurationError("give a source: --state SPEC, --gateway URL or --audit FILE")
    return network, network, local


def _run(args: argparse.Namespace) -> int:
    require("network", needed_by="agentguard challenge")
    from agentguard.challenge._run import run
    from agentguard.challenge._sources import Materials

    evidence, network, local = _sources(args)
    try:
        report = run(
            evidence.evidence(after=args.after, limit=args.limit),
            Materials(local, network),
            operators=args.operator or None,
            out=Path(args.out) if args.out else None,
            after=args.after,
        )
    finally:
        evidence.close()
        if network is not None and network is not evidence:
            network.close()
    summary = {
        "source": evidence.name,
        "checked": report.checked,
        "discrepancies": len(report.discrepancies),
        "records_written": [str(p) for p in report.records],
        "unverifiable": len(report.unverifiable),
        "not_judged": len(report.not_judged),
        "skipped": len(report.skipped),
        "approvals_not_rechecked": report.approvals_unchecked,
        "cursor": report.cursor,
    }
    if args.json:
        summary["findings"] = (
            [
                {
                    "task_id": f.task_id,
                    "wrong_signers": list(f.wrong_signers),
                    "signed": f.signed,
                    "policy_gives": f.recomputed.decision if f.recomputed else None,
                    "proven_by_record_alone": f.offline,
                }
                for f in report.discrepancies
            ]
            + [{"task_id": f.task_id, "unverifiable": f.why} for f in report.unverifiable]
            + [{"task_id": f.task_id, "not_judged": f.why} for f in report.not_judged]
        )
        print(json.dumps(summary, indent=2))
    else:
        _print(summary, report)
    # 2 as for an error: the run is to be repeated (from the cursor, before the first not judged)
    return 1 if report.discrepancies else 2 if report.not_judged else 0


def _print(summary: dict[str, Any], report: Any) -> None:
    from agentguard.network.approvals import shown_text

    print(
        f"checked {summary['checked']} tasks from the {summary['source']}: "
        f"{summary['discrepancies']} discrepancies, {len(summary['records_written'])} records "
        f"written (cursor {summary['cursor']})"
    )
    for f in report.discrepancies:
        policy = f.recomputed.decision if f.recomputed else "?"
        print(
            f"  DISCREPANCY {f.task_id}: signed {f.signed}, the policy gives {policy}; "
            f"signed by {', '.join(f.wrong_signers)}" + (f" -> {f.path}" if f.path else "")
        )
        if not f.offline:
            print(
                "    it rests on the recorded history or approval, which the operators did not "
                "sign: the record alone does not prove it (a history record can)"
            )
    for f in report.unverifiable:
        print(f"  unverifiable {shown_text(f.task_id)}: {shown_text(f.why)} (blames no one)")
    for f in report.not_judged:
        print(
            f"  NOT JUDGED {shown_text(f.task_id)}: {shown_text(f.why)} (run again from the "
            "cursor when the machine is less loaded)"
        )
    for s in report.skipped[:20]:
        print(f"  skipped {shown_text(s.task_id)}: {shown_text(s.why)}")
    if len(report.skipped) > 20:
        print(f"  … and {len(report.skipped) - 20} more skipped")
    if summary["approvals_not_rechecked"]:
        print(
            f"  note: {summary['approvals_not_rechecked']} tasks ran on a human approval this "
            "source does not carry; evaluated as approved"
        )


def _verify(args: argparse.Namespace) -> int:
    require("network", needed_by="agentguard challenge")
    from agentguard.challenge._record import MAX_RECORD_BYTES, load_record, verify_record

    try:
        with args.record.open("rb") as f:
            raw = f.read(MAX_RECORD_BYTES + 1)
    except OSError as exc:
        raise ConfigurationError(f"cannot read {args.record}: {exc.strerror}") from None
    check = verify_record(load_record(raw), rpc=args.rpc, operators=args.operator or None)
    for note in check.notes:
        print(f"note: {note}")
    if not check.proven:
        print(f"not proven: {check.reason}", file=sys.stderr)
        return 1
    decision = check.recomputed.decision if check.recomputed else "?"
    print(
        f"proven ({check.kind}): the policy gives {decision}; wrong signers: "
        + (", ".join(check.wrong_signers) or "none (the gateway handed the operators false data)")
    )
    return 0


def _add_watch(sub: Any) -> None:
    watch = sub.add_parser(
        "watch",
        help="follow new tasks, check each (decision and history); pause vaults on a proof",
        description="Follow the network's records as they grow, from a cursor file (resumable: "
        "a crash re-checks at most one batch). Each task is re-evaluated and its history "
        "checked against what provably counted (the records, and with --rpc the vaults' "
        "Executed events). On a proven discrepancy the record is written to --out and, with "
        "--guardian-key-file, the affected --vault is paused. Exit status: 0 nothing proven, "
        "1 a discrepancy proven, 2 an error.",
    )
    source = watch.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--state", metavar="SPEC", help="the network's state (SQLite or PostgreSQL)"
    )
    source.add_argument("--gateway", metavar="URL", help="a gateway's URL (auditor methods)")
    watch.add_argument("--api-key", help="the gateway API key (default $AGENTGUARD_API_KEY)")
    watch.add_argument("--cursor", required=True, metavar="FILE", help="the cursor file")
    watch.add_argument("--out", default="challenges", metavar="DIR", help="records go here")
    watch.add_argument("--batch", type=int, default=200, metavar="N", help="tasks per batch")
    watch.add_argument("--max-tasks", type=int, metavar="N", help="stop after checking N tasks")
    watch.add_argument(
        "--interval", type=float, default=2.0, metavar="S", help="seconds between polls"
    )
    watch.add_argument("--until", type=float, metavar="UNIX", help="stop at this unix time")
    watch.add_argument("--once", action="store_true", help="stop once caught up")
    watch.add_argument("--rpc", help="a node URL: vault events, their operators, pausing")
    watch.add_argument(
        "--vault", action="append", default=[], metavar="ADDR", help="a vault to watch, repeatable"
    )
    watch.add_argument(
        "--guardian-key-file",
        metavar="FILE",
        help="a key the vault owners granted with grantGuardian: pause affected vaults with it",
    )
    watch.add_argument(
        "--pause-all", action="store_true", help="pause every --vault on any proven discrepancy"
    )
    watch.add_argument(
        "--operator",
        action="append",
        default=[],
        metavar="ADDR",
        help="the network's operators, repeatable (with --threshold); a vault's own are read "
        "from the chain",
    )
    watch.add_argument("--threshold", type=int, metavar="N", help="signatures a quorum needs")
    watch.add_argument("--report", metavar="FILE", help="write the report (JSON) here")
    watch.add_argument("--json", action="store_true", help="print the report as JSON")
    watch.set_defaults(handler=_watch)


def _watch(args: argparse.Namespace) -> int:
    require("network", needed_by="agentguard challenge")
    from agentguard.challenge._history import Quorum
    from agentguard.challenge._watch import GatewayTasks, Watcher
    from agentguard.network.state import open_state

    if bool(args.operator) != (args.threshold is not None):
        raise ConfigurationError("--operator and --threshold go together")
    quorum = (
        Quorum(frozenset(o.lower() for o in args.operator), args.threshold)
        if args.operator
        else None
    )
    w3, guardian = None, None
    if args.rpc:
        from web3 import Web3

        from agentguard._redact import register_url_secrets

        register_url_secrets(args.rpc)
        w3 = Web3(Web3.HTTPProvider(args.rpc, request_kwargs={"timeout": 10}))
    if args.guardian_key_file:
        from eth_account import Account

        from agentguard.network._keys import load_operator_key

        secret = load_operator_key(args.guardian_key_file, "AGENTGUARD_GUARDIAN_KEY").secret
        guardian = Account.from_key(secret)
        if not args.vault:
            raise ConfigurationError("--guardian-key-file pauses the --vault(s) given: name them")
    if args.state:
        from agentguard.challenge._sources import _check_sqlite_state

        _check_sqlite_state(args.state)  # an existing gateway state: never a new file
        source: Any = open_state(args.state)
    else:
        key = args.api_key or os.environ.get("AGENTGUARD_API_KEY")
        if not key:
            raise ConfigurationError("--gateway needs --api-key (or $AGENTGUARD_API_KEY)")
        source = GatewayTasks(args.gateway, key)
    try:
        report = Watcher(
            source,
            cursor_file=args.cursor,
            out_dir=args.out,
            quorum=quorum,
            batch=args.batch,
            max_tasks=args.max_tasks,
            interval=args.interval,
            until=args.until,
            once=args.once,
            w3=w3,
            vaults=args.vault,
            guardian=guardian,
            pause_all=args.pause_all,
        ).run()
    finally:
        source.close()
    if args.report:
        Path(args.report).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    print(json.dumps(report.to_json(), indent=2) if args.json else report.text())
    return 1 if report.proven else 0
