"""``agentguard policy list|show|register|simulate``: the policy clients of a running reference
network, found from its state folder (no secrets.json read by hand, no raw JSON-RPC)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from agentguard._exceptions import ConfigurationError
from agentguard.network._cli import state_dir_argument
from agentguard.network.approvals import shown_text

__all__ = ["add_policy_commands", "register_arguments", "register_command"]


def add_policy_commands(subparsers: Any) -> None:
    policy = subparsers.add_parser(
        "policy",
        help="list, show, register and dry-run the policies of a running network",
        description="Policy clients of a reference network started with `agentguard network up`.",
    )
    sub = policy.add_subparsers(dest="policy_command", required=True, metavar="<command>")

    listing = sub.add_parser("list", help="the registered policy clients (or --bundled policies)")
    listing.add_argument(
        "--bundled", action="store_true", help="list the policies shipped with agentguard instead"
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    state_dir_argument(listing)
    listing.set_defaults(handler=_list)

    show = sub.add_parser("show", help="one policy client: its policy, params and policy id")
    show.add_argument("policy_client", help="the policy client's address (0x…)")
    show.add_argument("--json", action="store_true", help="print JSON")
    state_dir_argument(show)
    show.set_defaults(handler=_show)

    register = sub.add_parser(
        "register",
        help="sign a policy client's registration with its owner's key and deliver it",
        description="Register (or re-configure) a policy client with a bundled or custom policy.",
    )
    register_arguments(register)
    register.set_defaults(handler=register_command)

    simulate = sub.add_parser(
        "simulate",
        help="what the policy would say about an intent (allow/deny and why); signs nothing",
        description="Dry-run one intent against a policy client's current registration. Exit "
        "status: 0 allowed, 1 denied or waiting for a human approval, 2 an error.",
    )
    simulate.add_argument("--policy-client", required=True, help="the policy client (0x…)")
    simulate.add_argument(
        "--intent",
        help="the whole intent as JSON (from, to, value, data, chain_id, function_signature), "
        "or @FILE holding it",
    )
    simulate.add_argument("--from", dest="sender", help="the agent's address (a transfer)")
    simulate.add_argument("--to", help="the recipient of a token transfer")
    simulate.add_argument(
        "--amount",
        help="the transfer amount: '1.5 USDC' (a known token) or atomic units with --token",
    )
    simulate.add_argument("--token", help="the token's address (with an atomic --amount)")
    simulate.add_argument("--chain-id", type=int, default=8453, help="default 8453 (Base)")
    state_dir_argument(simulate)
    simulate.set_defaults(handler=_simulate)


def register_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``policy register`` (also ``network register``, its older name)."""
    parser.add_argument("--policy-client", required=True, help="the policy client (0x…)")
    parser.add_argument(
        "--policy",
        required=True,
        help="a bundled policy name (agentguard policy list --bundled) or a policy folder "
        "(policy_metadata.json, *.rego, params_schema.json)",
    )
    parser.add_argument(
        "--params", default="{}", help="the policy's params as a JSON object, or @FILE holding it"
    )
    parser.add_argument(
        "--budget",
        action="append",
        default=[],
        metavar="RULE",
        help="agent_spend params in human units, repeatable: --budget '20 USDC per day' "
        "--budget '5 USDC per call' (merged over --params)",
    )
    parser.add_argument(
        "--expire-after", type=int, default=300, help="attestation lifetime in seconds"
    )
    parser.add_argument("--chain-id", type=int, default=8453, help="default 8453 (Base)")
    parser.add_argument(
        "--owner-key-file",
        help="hex key of the owner (the EOA client itself, or the vault's owner); "
        "default: the network's keys/owner.key",
    )
    state_dir_argument(parser)


def _attach(state_dir: str) -> Any:
    from agentguard.network.launcher import ReferenceNetwork

    return ReferenceNetwork.attach(Path(state_dir))


def _records(net: Any) -> list[Any]:
    from agentguard.network.config import NetworkConfig
    from agentguard.network.state import open_state

    state = open_state(NetworkConfig.load(net.config_file).gateway.state_db)
    try:
        return sorted(state.policy_clients(), key=lambda r: r.registration.policy_client_hex)
    finally:
        state.close()


def _describe(record: Any) -> dict[str, Any]:
    registration, policy = record.registration, record.policy
    return {
        "policy_client": registration.policy_client_hex,
        "policy": policy.name,
        "description": policy.description,
        "policy_id": "0x" + registration.policy_id.hex(),
        "code_hash": "0x" + policy.code_hash.hex(),
        "owner": registration.owner_hex,
        "chain_id": registration.chain_id,
        "expire_after": registration.expire_after,
        "version": registration.version,
        "params": registration.params,
    }


def _list(args: argparse.Namespace) -> int:
    if args.bundled:
        from agentguard.policies import bundled, load

        rows = [{"policy": name, "description": load(name).description} for name in bundled()]
        if args.json:
            print(json.dumps(rows, indent=2))
        for row in [] if args.json else rows:
            text = shown_text(row["description"])
            print(f"{row['policy']:<22} {text if len(text) <= 76 else text[:75] + '…'}")
        return 0
    described = [_describe(r) for r in _records(_attach(args.state_dir))]
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    if not described:
        print("no policy clients registered yet (agentguard policy register --help)")
    for row in described:
        name = shown_text(row["policy"])
        print(f"{row['policy_client']}  {name:<16} policy_id {row['policy_id']}")
    return 0


def _find(net: Any, policy_client: str) -> Any:
    wanted = policy_client.lower()
    for record in _records(net):
        if record.registration.policy_client_hex == wanted:
            return record
    raise ConfigurationError(
        f"no policy client {policy_client} is registered on the network of {net.state_dir} "
        "(agentguard policy list shows those that are)"
    )


def _show(args: argparse.Namespace) -> int:
    row = _describe(_find(_attach(args.state_dir), args.policy_client))
    if args.json:
        print(json.dumps(row, indent=2))
        return 0
    for key, value in row.items():
        if key != "params":
            print(f"{key + ':':<15}{shown_text(str(value))}")
    print("params:")
    print(json.dumps(row["params"], indent=2, sort_keys=True))
    return 0


def _json_argument(text: str, what: str) -> Any:
    """A JSON option's value: inline JSON, or ``@FILE`` holding it."""
    try:
        raw = Path(text[1:]).read_text() if text.startswith("@") else text
        return json.loads(raw)
    except OSError as exc:
        raise ConfigurationError(f"{what}: cannot read {text[1:]}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigurationError(f"{what} is not valid JSON: {exc}") from None


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params = _json_argument(args.params, "--params")
    if not isinstance(params, dict):
        raise ConfigurationError("--params must be a JSON object")
    if args.budget:
        from agentguard.budget import Budget

        params = {**params, **Budget(*args.budget, chain_id=args.chain_id).params()}
    return params


def _owner_key(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the owner key file {path}: {exc.strerror}") from None


def register_command(args: argparse.Namespace) -> int:
    params = _params(args)
    owner_key = _owner_key(args.owner_key_file)
    net = _attach(args.state_dir)
    policy_id = net.register_policy_client(
        args.policy_client,
        args.policy,
        params,
        args.expire_after,
        args.chain_id,
        owner_key=owner_key,
    )
    print(f"registered {args.policy_client} with policy {args.policy}")
    print(f"policy_id: {policy_id}  (pin it: Guard.connect(..., policy_id=...))")
    return 0


def _intent(args: argparse.Namespace) -> Any:
    from agentguard import TransactionIntent

    if args.intent is not None:
        return TransactionIntent.from_wire(_json_argument(args.intent, "--intent"))
    if not (args.sender and args.to and args.amount):
        raise ConfigurationError(
            "give the intent: --intent JSON, or a token transfer with --from, --to and --amount"
        )
    if args.token is not None:
        if not args.amount.isdigit():
            raise ConfigurationError("with --token, --amount is an integer in atomic units")
        token, atomic = args.token, int(args.amount)
    else:
        from agentguard import parse_amount

        amount = parse_amount(args.amount, args.chain_id)
        token, atomic = amount.token.address, amount.atomic
    return TransactionIntent.erc20_transfer(
        sender=args.sender, token=token, recipient=args.to, amount=atomic, chain_id=args.chain_id
    )


def _simulate(args: argparse.Namespace) -> int:
    from agentguard import NewtonGateway

    intent = _intent(args)
    net = _attach(args.state_dir)
    record = _find(net, args.policy_client)
    with NewtonGateway(
        net.url,
        policy_client=record.registration.policy_client_hex,
        api_key=net.api_key,
        policy_id="0x" + record.registration.policy_id.hex(),
    ) as gateway:
        simulation = gateway.simulate(intent)
    reasons = shown_text("; ".join(simulation.reasons))  # the gateway's words, on a terminal
    print(shown_text(simulation.decision) + (f": {reasons}" if reasons else ""))
    return 0 if simulation.decision == "allow" else 1
