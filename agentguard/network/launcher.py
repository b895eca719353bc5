"""Start a whole reference network (a gateway and N operators) as real local processes.

    with ReferenceNetwork(operators=3) as net:
        policy_id = net.register_policy_client(client, "agent_spend", params)
        guard = Guard.connect(net.url, policy_client=client, operators=net.operator_addresses,
                              api_key=net.api_key, policy_id=policy_id)

Everything binds to 127.0.0.1. Operator keys and API keys are generated into 0600 files in
the state directory (``keys/operator-<i>.key``, ``secrets.json``) and reused when the
directory already holds them, so operators keep their identity across restarts; the config
file (``network.json``) holds only addresses, URLs and key digests. Each operator keeps the
registrations it accepted in ``operators/operator-<i>.sqlite3``. Registrations are signed by
the policy client's owner: ``owner_key=`` (the vault owner's or the EOA client's own key), else
a local owner key generated into ``keys/owner.key`` (the person running the network owns the
policy clients it registers). Processes are stopped by their PID (terminate, then kill).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import httpx
from coincurve import PrivateKey

from agentguard._exceptions import ConfigurationError, GatewayRPCError
from agentguard.network._keys import (
    api_key_digest,
    load_operator_key,
    new_api_key,
    new_token,
    write_operator_key,
    write_secret,
)
from agentguard.network.approvals import ApprovalsClient
from agentguard.network.config import (
    DEFAULT_CHAIN_IDS,
    ApiKeyEntry,
    GatewaySettings,
    NetworkConfig,
    OperatorEntry,
)
from agentguard.network.registration import Registration
from agentguard.network.state import policy_from_spec, policy_material
from agentguard.policies import Policy

if TYPE_CHECKING:
    from agentguard.budget import Budget

__all__ = ["OperatorProcess", "ReferenceNetwork"]

_HOST = "127.0.0.1"


def _private_dir(path: Path) -> None:
    """Create ``path`` (0700) or accept it only if it is ours and nobody else may write in it.

    The state folder holds the operator keys, the bearer tokens and the API keys, and the
    launcher reuses the ones it finds there: in a folder another local user can write to (a
    shared ``/tmp/agnet``), that user could plant an operator key or ``secrets.json`` they know
    before the network starts, or swap files later, and so forge attestations or use the admin
    key."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigurationError(f"state folder {path} is not a folder")
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise ConfigurationError(
            f"state folder {path} is writable by other users or owned by another user; it "
            "holds the network's keys: use a folder only you can write to (chmod go-w)"
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(
    process: subprocess.Popen[bytes] | None, *, kill: bool = False, grace: float = 5.0
) -> None:
    if process is None or process.poll() is not None:
        return
    if kill:
        process.kill()
    else:
        process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(grace)


@dataclass
class OperatorProcess:
    index: int
    address: str
    key_file: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{_HOST}:{self.port}/rpc"

    @property
    def token_file(self) -> Path:
        return self.key_file.with_suffix(".token")

    @property
    def registry_file(self) -> Path:
        return self.key_file.parent.parent / "operators" / f"operator-{self.index}.sqlite3"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class ReferenceNetwork:
    """A gateway plus ``operators`` operator processes; a context manager (sync)."""

    def __init__(
        self,
        operators: int = 3,
        *,
        threshold_percentage: int = 66,
        port: int | None = None,
        state_dir: str | Path | None = None,
        policy_clients: list[dict[str, Any]] | None = None,
        timeout: float = 5.0,
        chain_ids: tuple[int, ...] = DEFAULT_CHAIN_IDS,
        startup_timeout: float = 60.0,
        usage_check_rpc: str | None = None,
    ) -> None:
        if operators < 1:
            raise ConfigurationError("a network needs at least one operator")
        self._temporary = state_dir is None
        self.state_dir = (
            Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="agentguard-net-"))
        )
        self._n = operators
        self._threshold = threshold_percentage
        self._port = port
        self._initial_clients = list(policy_clients or [])
        self._timeout = timeout
        self._chain_ids = chain_ids
        self._startup_timeout = startup_timeout
        self._usage_check_rpc = usage_check_rpc
        self.operators: list[OperatorProcess] = []
        self._gateway: subprocess.Popen[bytes] | None = None
        self._console: subprocess.Popen[bytes] | None = None
        self.console_port = 0
        self._logs: list[IO[bytes]] = []
        self.api_key = ""
        self.admin_key = ""
        self.gateway_port = 0
        self.policy_clients: dict[str, str] = {}

    def __repr__(self) -> str:  # never shows a key
        return f"ReferenceNetwork(url={self.url!r}, operators={len(self.operators)})"

    # -- what tests and users need ---------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the gateway (``NewtonGateway`` appends ``/rpc``)."""
        return f"http://{_HOST}:{self.gateway_port}"

    @property
    def rpc_url(self) -> str:
        return self.url + "/rpc"

    @property
    def operator_addresses(self) -> list[str]:
        return [op.address for op in self.operators]

    @property
    def secrets_file(self) -> Path:
        return self.state_dir / "secrets.json"

    @property
    def config_file(self) -> Path:
        return self.state_dir / "network.json"

    @property
    def owner_key_file(self) -> Path:
        """The default owner of the policy clients this network registers."""
        return self.state_dir / "keys" / "owner.key"

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> ReferenceNetwork:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        for folder in ("", "keys", "logs", "operators"):
            _private_dir(self.state_dir / folder)
        self._load_or_make_secrets()
        if not self.owner_key_file.exists():
            write_operator_key(self.owner_key_file)
        for i in range(self._n):
            key_file = self.state_dir / "keys" / f"operator-{i}.key"
            if key_file.exists():
                from agentguard._attestation import operator_address

                address = operator_address(load_operator_key(str(key_file), ""))
            else:
                address = write_operator_key(key_file)
            op = OperatorProcess(i, address, key_file, _free_port())
            if not op.token_file.exists():
                write_secret(op.token_file, new_token() + "\n")
            self.operators.append(op)
        for op in self.operators:  # start all, then wait: imports take a while each
            op.process = self._spawn_operator(op)
        for op in self.operators:
            assert op.process is not None
            self._wait_healthy(op.process, op.port, f"operator-{op.index}")
        self.gateway_port = self._port or _free_port()
        self._write_config()
        self.start_gateway()

    def stop(self) -> None:
        _stop(self._console)
        _stop(self._gateway)
        for op in self.operators:
            _stop(op.process)
        for log in self._logs:
            log.close()
        self._logs.clear()
        if self._temporary:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def _load_or_make_secrets(self) -> None:
        if self.secrets_file.exists():
            secrets = json.loads(self.secrets_file.read_text())
            self.api_key, self.admin_key = secrets["api_key"], secrets["admin_key"]
            return
        self.api_key, self.admin_key = new_api_key(), new_api_key()
        write_secret(
            self.secrets_file,
            json.dumps({"api_key": self.api_key, "admin_key": self.admin_key}, indent=2) + "\n",
        )

    def _write_config(self) -> None:
        config = NetworkConfig(
            gateway=GatewaySettings(
                host=_HOST,
                port=self.gateway_port,
                state_db=str(self.state_dir / "state.sqlite3"),
                threshold_percentage=self._threshold,
                timeout=self._timeout,
                chain_ids=self._chain_ids,
                chain_rpc=self._usage_check_rpc,
            ),
            operators=tuple(
                OperatorEntry(op.address, op.url, str(op.token_file)) for op in self.operators
            ),
            api_keys=(
                ApiKeyEntry(sha256=api_key_digest(self.api_key)),
                ApiKeyEntry(sha256=api_key_digest(self.admin_key), admin=True),
            ),
            policy_clients=tuple(self._signed(entry) for entry in self._initial_clients),
        )
        config.save(self.config_file)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.state_dir / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        return subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def _wait_healthy(self, process: subprocess.Popen[bytes], port: int, name: str) -> None:
        deadline = time.monotonic() + self._startup_timeout
        with httpx.Client(timeout=1.0) as http:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise ConfigurationError(
                        f"{name} exited with status {process.returncode} while starting; "
                        f"see {self.state_dir / 'logs' / (name + '.log')}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(f"http://{_HOST}:{port}/health").status_code == 200:
                        return
                time.sleep(0.05)
        _stop(process, kill=True)
        raise ConfigurationError(f"{name} did not become healthy within {self._startup_timeout}s")

    def _spawn_operator(self, op: OperatorProcess) -> subprocess.Popen[bytes]:
        return self._spawn(
            f"operator-{op.index}",
            [
                "agentguard.network.operator",
                "--port",
                str(op.port),
                "--key-file",
                str(op.key_file),
                "--token-file",
                str(op.token_file),
                "--registry",
                str(op.registry_file),
                *(["--chain-rpc", self._usage_check_rpc] if self._usage_check_rpc else []),
            ],
        )

    def start_operator(self, index: int) -> None:
        op = self.operators[index]
        if op.running:
            return
        op.process = self._spawn_operator(op)
        self._wait_healthy(op.process, op.port, f"operator-{index}")

    def stop_operator(self, index: int) -> None:
        op = self.operators[index]
        _stop(op.process)
        op.process = None

    def start_gateway(self) -> None:
        if self._gateway is not None and self._gateway.poll() is None:
            return
        self._gateway = self._spawn(
            "gateway", ["agentguard.network.gateway", "--config", str(self.config_file)]
        )
        self._wait_healthy(self._gateway, self.gateway_port, "gateway")

    def kill_gateway(self) -> None:
        """SIGKILL the gateway (a crash); ``start_gateway`` brings it back on the same state."""
        _stop(self._gateway, kill=True)
        self._gateway = None

    # -- admin calls -------------------------------------------------------------------------------

    def _admin(self, method: str, params: dict[str, Any]) -> Any:
        import uuid

        response = httpx.post(
            self.rpc_url,
            json={"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": method, "params": params},
            headers={"authorization": f"Bearer {self.admin_key}"},
            timeout=30.0,
        )
        body = response.json()
        if "error" in body:
            error = body["error"]
            raise GatewayRPCError(str(error.get("message")), code=int(error.get("code", 0)))
        return body["result"]

    def sign_registration(
        self,
        policy_client: str,
        policy: str | Policy,
        params: dict[str, Any],
        expire_after: int = 300,
        chain_id: int = 8453,
        *,
        owner_key: str | None = None,
        version: int | None = None,
    ) -> dict[str, Any]:
        """The owner-signed ``{registration, policy}`` that ``agentguard_registerPolicyClient``
        takes. ``owner_key`` (hex) is the policy client's owner; default ``keys/owner.key``.
        ``version`` defaults to the current time in nanoseconds, so each re-registration
        replaces the one before."""
        if owner_key is None:
            key = load_operator_key(str(self.owner_key_file), "")
        else:
            try:
                key = PrivateKey(bytes.fromhex(owner_key.removeprefix("0x")))
            except ValueError:
                raise ConfigurationError("owner_key must be a 32-byte hex private key") from None
        resolved = (
            policy if isinstance(policy, Policy) else policy_from_spec(policy, allow_paths=True)
        )
        registration = Registration.sign(
            key,
            policy_client=policy_client,
            policy=resolved,
            params=params,
            expire_after=expire_after,
            chain_id=chain_id,
            version=time.time_ns() if version is None else version,
        )
        return {"registration": registration.to_json(), "policy": policy_material(resolved)}

    def _signed(self, entry: dict[str, Any]) -> dict[str, Any]:
        """A config-file policy client, signed unless it already is: with the key in its
        ``owner_key_file`` (a vault's owner), else with the network's owner key."""
        if "registration" in entry:
            return entry
        owner_key = None
        if "owner_key_file" in entry:
            owner_key = "0x" + load_operator_key(str(entry["owner_key_file"]), "").secret.hex()
        return self.sign_registration(
            str(entry["policy_client"]),
            entry["policy"],
            dict(entry.get("params", {})),
            int(entry.get("expire_after", 300)),
            int(entry.get("chain_id", 8453)),
            owner_key=owner_key,
        )

    def register_policy_client(
        self,
        policy_client: str,
        policy: str | Policy,
        params: dict[str, Any] | Budget,
        expire_after: int = 300,
        chain_id: int = 8453,
        *,
        owner_key: str | None = None,
        version: int | None = None,
    ) -> str:
        """Register (or re-configure) a policy client, signed by its owner; returns its
        ``policy_id`` (pin it: ``Guard.connect(..., policy_id=...)``). ``params`` may be a
        ``Budget`` (its ``params()``, for ``agent_spend``)."""
        from agentguard.budget import Budget

        if isinstance(params, Budget):
            params = params.params()
        request = self.sign_registration(
            policy_client,
            policy,
            params,
            expire_after,
            chain_id,
            owner_key=owner_key,
            version=version,
        )
        result = self._admin("agentguard_registerPolicyClient", request)
        pid: str = result["policy_id"]
        self.policy_clients[policy_client] = pid
        return pid

    # -- human approvals ---------------------------------------------------------------------

    @property
    def approver_key_file(self) -> Path:
        """The default approver key: the owner key (the approver of every client it registered
        without ``params["approvers"]``). It lives here and in the approval console, never in
        the gateway process."""
        return self.owner_key_file

    def approvals(self) -> ApprovalsClient:
        """An admin client for the approval flow (close it when done)."""
        return ApprovalsClient(self.url, self.admin_key)

    def approve(
        self, policy_client: str, intent_hash: str, *, approver_key: str | None = None
    ) -> dict[str, Any]:
        """A person approves one pending intent: signed with ``approver_key`` (hex), default
        the approver key file, and delivered with the admin key."""
        key = self._key(approver_key, self.approver_key_file)
        with contextlib.closing(self.approvals()) as client:
            return client.approve(key, policy_client, intent_hash)

    def reject(self, policy_client: str, intent_hash: str) -> dict[str, Any]:
        with contextlib.closing(self.approvals()) as client:
            return client.reject(policy_client, intent_hash)

    @staticmethod
    def _key(hex_key: str | None, default_file: Path) -> PrivateKey:
        if hex_key is None:
            return load_operator_key(str(default_file), "")
        try:
            return PrivateKey(bytes.fromhex(hex_key.removeprefix("0x")))
        except ValueError:
            raise ConfigurationError("a key must be a 32-byte hex private key") from None

    def start_console(self, port: int | None = None, *, tokens: Sequence[str] = ()) -> str:
        """Start the approval console (its own process, holding the approver key and the admin
        key; the gateway never sees the approver key). ``tokens``: ``SYMBOL=ADDRESS:DECIMALS``
        of local tokens to show in human units. Returns its URL."""
        if self._console is not None and self._console.poll() is None:
            return self.console_url
        self.console_port = port or _free_port()
        self._console = self._spawn(
            "console",
            [
                "agentguard.network.console",
                "--state-dir",
                str(self.state_dir),
                "--gateway-url",
                self.url,
                "--port",
                str(self.console_port),
                *[arg for token in tokens for arg in ("--token", token)],
            ],
        )
        self._wait_healthy(self._console, self.console_port, "console")
        return self.console_url

    @property
    def console_url(self) -> str:
        return f"http://{_HOST}:{self.console_port}"
