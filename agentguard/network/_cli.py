"""``agentguard network up|status|down`` (policies: ``agentguard policy``; approvals:
``agentguard approvals``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

DEFAULT_STATE_DIR = ".agentguard-network"
ADMIN_KEY_ENV = "AGENTGUARD_ADMIN_KEY"


def state_dir_argument(parser: argparse.ArgumentParser) -> None:
    """``--state-dir``: where a network keeps its keys, secrets and logs, and is found again."""
    parser.add_argument(
        "--state-dir",
        default=DEFAULT_STATE_DIR,
        help="the network's state folder: keys, secrets, logs (default: %(default)s)",
    )


def add_network_commands(subparsers: Any) -> None:
    from agentguard.network._policy_cli import register_arguments, register_command

    network = subparsers.add_parser(
        "network",
        help="run the local reference authorization network",
        description="A local gateway and N operators (needs the `network` extra).",
    )
    sub = network.add_subparsers(dest="command", required=True, metavar="<command>")

    up = sub.add_parser(
        "up",
        help="start a gateway and N operators in the foreground (Ctrl-C stops them)",
        description="Start a gateway and N operators on 127.0.0.1 and wait (Ctrl-C stops them).",
    )
    up.add_argument("--operators", type=int, default=3, help="how many operators (default 3)")
    up.add_argument(
        "--hosts",
        type=int,
        help="run the operator keys in this many processes (operator hosts: each evaluates a "
        "task once for all its keys; keys on one host share its failure domain); default one "
        "process per operator",
    )
    up.add_argument(
        "--threshold-percentage",
        type=int,
        default=66,
        help="share of operators that must sign an attestation (default 66)",
    )
    up.add_argument("--port", type=int, default=8550, help="gateway port (default 8550)")
    up.add_argument(
        "--config", help="JSON file with policy_clients (and optional gateway settings)"
    )
    state_dir_argument(up)
    up.add_argument(
        "--chain-rpc",
        help="node URL: checks vault owners and whether released attestations were used "
        "(needed for a vault's releases to count back)",
    )
    up.add_argument(
        "--console-port",
        type=int,
        help="also start the approval console (its own process, holding the approver key "
        "keys/owner.key) on this loopback port",
    )
    up.set_defaults(handler=_up)

    status = sub.add_parser(
        "status",
        help="whether a network runs from the state folder, and where",
        description="Exit status 0 if the network of the state folder runs, 1 if not.",
    )
    state_dir_argument(status)
    status.set_defaults(handler=_status)

    down = sub.add_parser("down", help="stop the network that `network up` runs from the folder")
    state_dir_argument(down)
    down.set_defaults(handler=_down)

    register = sub.add_parser("register", help="the same as `agentguard policy register`")
    register_arguments(register)
    register.set_defaults(handler=register_command)


def _user_config(path: str | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from agentguard._exceptions import ConfigurationError

    if path is None:
        return [], {}
    base = Path(path).resolve().parent
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigurationError(f"cannot read --config {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigurationError(f"--config {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigurationError(f"--config {path} must hold a JSON object")
    clients = []
    for entry in raw.get("policy_clients", []):
        policy = entry.get("policy")
        if isinstance(policy, str) and (base / policy).is_dir():
            entry = {**entry, "policy": str(base / policy)}
        clients.append(entry)
    return clients, dict(raw.get("gateway", {}))


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Callable[[str], None]]:
    """A progress display while the network starts: a rich bar at a terminal when rich is
    installed (the `network` extra brings it), else one line per step."""
    try:
        from rich.markup import escape
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn
    except ImportError:
        rich = None
    else:
        rich = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            transient=True,
        )
    if rich is None or not rich.console.is_terminal:
        yield lambda step: print(f"  {step}", flush=True)
        return
    with rich:
        task = rich.add_task("starting the network", total=total)

        def advance(step: str) -> None:
            rich.console.print(f"  [green]✓[/green] {escape(step)}", highlight=False)
            rich.update(task, advance=1)

        yield advance


def _up(args: argparse.Namespace) -> int:
    from agentguard._extras import require

    require("network", needed_by="agentguard network up")  # before anything is written
    from agentguard._exceptions import ConfigurationError
    from agentguard.network.launcher import ReferenceNetwork

    clients, gateway = _user_config(args.config)
    kwargs: dict[str, Any] = {}
    try:
        if "timeout" in gateway:
            kwargs["timeout"] = float(gateway["timeout"])
        if "chain_ids" in gateway:
            kwargs["chain_ids"] = tuple(int(c) for c in gateway["chain_ids"])
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"--config {args.config}: gateway.timeout must be a number of seconds and "
            "gateway.chain_ids a list of chain ids"
        ) from None
    # Ctrl-C or SIGTERM while starting is noted and acted on between steps, never while a
    # process is being spawned (it would be left running, unknown to stop())
    stop_asked: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _: stop_asked.append(signum))
    state_dir = Path(args.state_dir).resolve()
    print(f"starting {args.operators} operators and a gateway (state in {state_dir})", flush=True)
    with _progress(args.operators + 2) as show:

        def step(text: str) -> None:
            show(text)
            if stop_asked:
                raise KeyboardInterrupt

        net = ReferenceNetwork(
            args.operators,
            threshold_percentage=args.threshold_percentage,
            port=args.port,
            state_dir=state_dir,
            policy_clients=clients,
            usage_check_rpc=args.chain_rpc or gateway.get("chain_rpc"),
            on_progress=step,
            hosts=args.hosts,
            **kwargs,
        )
        try:
            net.start()
            if stop_asked:
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            net.stop()
            print("stopped while starting", flush=True)
            return 130
        except BaseException:
            net.stop()
            raise
    # from now on Ctrl-C and SIGTERM (`agentguard network down`) end the wait in _serve
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    return _serve(net, args, state_dir)


def _serve(net: Any, args: argparse.Namespace, state_dir: Path) -> int:
    """Report where the started network is, then wait for Ctrl-C or ``network down``."""
    from agentguard.network._keys import write_secret
    from agentguard.network.launcher import RUN_FILE

    try:
        (state_dir / "gateway_url").write_text(net.url + "\n")
        info = {**(net.run_info() or {}), "cli": True}
        write_secret(state_dir / RUN_FILE, json.dumps(info) + "\n")  # `network down` stops us
        print(f"gateway:   {net.url}/rpc")
        for address, op in zip(net.operator_addresses, net.operators, strict=True):
            print(f"operator:  {address}  {op.url}")
        print(f"quorum:    {args.threshold_percentage}% of {args.operators}")
        print(f"secrets:   {net.secrets_file}  (API key and admin key; keep it private)")
        print(f"config:    {net.config_file}")
        print(f"logs:      {state_dir / 'logs'}")
        if args.console_port:
            console = net.start_console(args.console_port)
            print(f"approvals: {console}/  (sign in with the admin key)")
        print(f"python:    ReferenceNetwork.attach({str(state_dir)!r})")
        print("Ctrl-C (or `agentguard network down`) to stop.", flush=True)
        signal.pause()
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        net.stop()
    return 0


def _running(state_dir: str, otherwise: str) -> tuple[Any, dict[str, Any]] | None:
    """The network running from ``state_dir`` and its ``run.json``; ``None`` (said) if none."""
    from agentguard._exceptions import ConfigurationError
    from agentguard.network.launcher import ReferenceNetwork

    try:
        net = ReferenceNetwork.attach(state_dir)
    except ConfigurationError as exc:
        print(f"{otherwise}: {exc.message}")
        return None
    return net, net.run_info() or {}


def _status(args: argparse.Namespace) -> int:
    import httpx

    running = _running(args.state_dir, "not running")
    if running is None:
        return 1
    net, info = running
    print(f"running:   {net.url}/rpc  (gateway pid {info.get('gateway_pid')})")
    for op in net.operators:
        try:
            ok = httpx.get(f"http://127.0.0.1:{op.port}/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            ok = False
        print(f"operator:  {op.address}  {op.url}  {'up' if ok else 'NOT ANSWERING'}")
    print(f"secrets:   {net.secrets_file}")
    owner = f"pid {info.get('owner_pid')}" + (" (agentguard network up)" if info.get("cli") else "")
    print(f"started:   by {owner}")
    return 0


def _down(args: argparse.Namespace) -> int:
    running = _running(args.state_dir, "nothing to stop")
    if running is None:
        return 1
    net, info = running
    owner = info.get("owner_pid")
    if not info.get("cli") or not isinstance(owner, int):
        print(
            f"this network was started by a Python process (pid {owner}), not by "
            "`agentguard network up`: stop it there",
            file=sys.stderr,
        )
        return 1
    gateway = info.get("gateway_pid")
    if isinstance(gateway, int) and _parent(gateway) not in (None, owner):
        print(
            f"pid {owner} is not the process that runs this network's gateway: not stopping it",
            file=sys.stderr,
        )
        return 1
    os.kill(owner, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while net.is_running() and time.monotonic() < deadline:
        time.sleep(0.1)
    if net.is_running():
        print(f"the network (pid {owner}) is still running after 30 s", file=sys.stderr)
        return 1
    print(f"stopped the network of {net.state_dir}")
    return 0


def _parent(pid: int) -> int | None:
    """The parent of ``pid`` where ``/proc`` tells it (Linux), else ``None``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # after "(comm)": state, then ppid


def admin_credentials(state_dir: Path, url: str | None) -> tuple[str, str] | None:
    """The gateway RPC URL and admin key: ``--url`` or the state dir's ``gateway_url``, and
    ``$AGENTGUARD_ADMIN_KEY`` or its ``secrets.json``. ``None`` (with a message) if missing."""
    admin_key = os.environ.get(ADMIN_KEY_ENV, "")
    if not admin_key and (state_dir / "secrets.json").exists():
        admin_key = json.loads((state_dir / "secrets.json").read_text())["admin_key"]
    if url is None and (state_dir / "gateway_url").exists():
        url = (state_dir / "gateway_url").read_text().strip()
    if not admin_key or not url:
        print(f"need the admin key (${ADMIN_KEY_ENV} or {state_dir}/secrets.json) and --url")
        return None
    return (url if url.rstrip("/").endswith("/rpc") else url.rstrip("/") + "/rpc"), admin_key
