"""``agentguard network up`` and ``register`` (approvals: ``agentguard approvals``)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import uuid
from pathlib import Path
from typing import Any

DEFAULT_STATE_DIR = ".agentguard-network"
ADMIN_KEY_ENV = "AGENTGUARD_ADMIN_KEY"


def add_network_commands(subparsers: Any) -> None:
    network = subparsers.add_parser("network", help="run the reference authorization network")
    sub = network.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start a gateway and N operators in the foreground")
    up.add_argument("--operators", type=int, default=3)
    up.add_argument("--threshold-percentage", type=int, default=66)
    up.add_argument("--port", type=int, default=8550, help="gateway port (default 8550)")
    up.add_argument(
        "--config", help="JSON file with policy_clients (and optional gateway settings)"
    )
    up.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
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

    register = sub.add_parser(
        "register",
        help="sign a policy client's registration with its owner's key and deliver it",
    )
    register.add_argument("--policy-client", required=True)
    register.add_argument("--policy", required=True, help="bundled policy name or folder")
    register.add_argument("--params", default="{}", help="the policy's params as JSON")
    register.add_argument("--expire-after", type=int, default=300)
    register.add_argument("--chain-id", type=int, default=8453)
    register.add_argument(
        "--owner-key-file",
        help="hex key of the owner (the EOA client itself, or the vault's owner); "
        "default: the network's keys/owner.key",
    )
    register.add_argument("--url", help="gateway URL (default: from the state dir)")
    register.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    register.set_defaults(handler=_register)


def _user_config(path: str | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    if path is None:
        return [], {}
    base = Path(path).resolve().parent
    raw = json.loads(Path(path).read_text())
    clients = []
    for entry in raw.get("policy_clients", []):
        policy = entry.get("policy")
        if isinstance(policy, str) and (base / policy).is_dir():
            entry = {**entry, "policy": str(base / policy)}
        clients.append(entry)
    return clients, dict(raw.get("gateway", {}))


def _up(args: argparse.Namespace) -> int:
    from agentguard.network.launcher import ReferenceNetwork

    clients, gateway = _user_config(args.config)
    kwargs: dict[str, Any] = {}
    if "timeout" in gateway:
        kwargs["timeout"] = float(gateway["timeout"])
    if "chain_ids" in gateway:
        kwargs["chain_ids"] = tuple(int(c) for c in gateway["chain_ids"])
    state_dir = Path(args.state_dir).resolve()
    with ReferenceNetwork(
        args.operators,
        threshold_percentage=args.threshold_percentage,
        port=args.port,
        state_dir=state_dir,
        policy_clients=clients,
        usage_check_rpc=args.chain_rpc or gateway.get("chain_rpc"),
        **kwargs,
    ) as net:
        (state_dir / "gateway_url").write_text(net.url + "\n")
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
        print("Ctrl-C to stop.", flush=True)
        try:
            signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
            signal.pause()
        except KeyboardInterrupt:
            print("stopping")
    return 0


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


def _admin_call(state_dir: Path, url: str | None, method: str, params: dict[str, Any]) -> Any:
    """One admin JSON-RPC call; prints the refusal and returns ``None`` on an error."""
    import httpx

    credentials = admin_credentials(state_dir, url)
    if credentials is None:
        return None
    rpc_url, admin_key = credentials
    response = httpx.post(
        rpc_url,
        json={"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": method, "params": params},
        headers={"authorization": f"Bearer {admin_key}"},
        timeout=30.0,
    )
    body = response.json()
    if "error" in body:
        print(f"refused: {body['error'].get('message')}")
        return None
    return body["result"]


def _register(args: argparse.Namespace) -> int:
    import time

    from agentguard._exceptions import AgentGuardError
    from agentguard.network._keys import load_operator_key
    from agentguard.network.registration import Registration
    from agentguard.network.state import policy_from_spec, policy_material

    state_dir = Path(args.state_dir)
    key_file = args.owner_key_file or str(state_dir / "keys" / "owner.key")
    try:
        params = json.loads(args.params)
        if not isinstance(params, dict):
            raise ValueError("--params must be a JSON object")
        policy = policy_from_spec(args.policy, allow_paths=True)
        registration = Registration.sign(
            load_operator_key(key_file, ""),
            policy_client=args.policy_client,
            policy=policy,
            params=params,
            expire_after=args.expire_after,
            chain_id=args.chain_id,
            version=time.time_ns(),
        )
    except (AgentGuardError, ValueError, OSError) as exc:
        print(f"cannot sign the registration: {exc}")
        return 2
    result = _admin_call(
        state_dir,
        args.url,
        "agentguard_registerPolicyClient",
        {"registration": registration.to_json(), "policy": policy_material(policy)},
    )
    if result is None:
        return 1
    print(f"registered {result['policy_client']} (owner {result['owner']})")
    print(f"policy_id: {result['policy_id']}  (pin it: Guard.connect(..., policy_id=...))")
    return 0
