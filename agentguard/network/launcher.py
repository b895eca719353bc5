"""Start a whole reference network (a gateway and N operators) as real local processes.

    with ReferenceNetwork(operators=3) as net:
        policy_id = net.register_policy_client(client, "agent_spend", params)
        guard = Guard.connect(net.url, policy_client=client, operators=net.operator_addresses,
                              api_key=net.api_key, policy_id=policy_id)

A network started elsewhere (``agentguard network up --state-dir DIR``) is reached from Python
with ``ReferenceNetwork.attach(DIR)``: same URL, keys and methods, and it keeps running after.

Everything binds to 127.0.0.1; a port that is taken is an error before anything is written, and
each process's health answer must come from that process (the gateway's names its pid, an
operator's its address), so another network on the same port is never taken for this one.

Operator keys and API keys are generated into 0600 files in
the state directory (``keys/operator-<i>.key``, ``secrets.json``) and reused when the
directory already holds them, so operators keep their identity across restarts; the config
file (``network.json``) holds only addresses, URLs and key digests. Each operator keeps the
registrations it accepted in ``operators/operator-<i>.sqlite3``. With ``hosts=K`` (fewer than the
operators) the keys run in K operator hosts, each one process holding several keys that
evaluates a task once and signs with each key it is asked for (``host-<i>``, named after its
first key, with one token ``keys/host-<i>.token`` and one registry); the gateway's config gives
a host's keys the same URL, which is how it knows them. A state directory is restarted with
the layout it last ran with (a key's registry file stays its own). Registrations are signed by
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import httpx
from coincurve import PrivateKey

from agentguard._exceptions import ConfigurationError
from agentguard._extras import require
from agentguard._gateway import _rpc_error
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
RUN_FILE = "run.json"  # in the state dir while a network runs: its URL and process ids


def _private_dir(path: Path) -> None:
    """Create ``path`` (0700) or accept it only if it is ours and nobody else may write in it.

    The state folder holds the operator keys, the bearer tokens and the API keys, and the
    launcher reuses the ones it finds there: in a folder another local user can write to (a
    shared ``/tmp/agnet``), that user could plant an operator key or ``secrets.json`` they know
    before the network starts, or swap files later, and so forge attestations or use the admin
    key."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_private(path)


def _check_private(path: Path) -> None:
    """``ConfigurationError`` unless ``path`` is a folder of ours that nobody else may write in
    (see ``_private_dir``): also before trusting one to attach to."""
    info = path.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigurationError(f"state folder {path} is not a folder")
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise ConfigurationError(
            f"state folder {path} is writable by other users or owned by another user; it "
            "holds the network's keys: use a folder only you can write to (chmod go-w)"
        )


def _check_port_free(port: int) -> None:
    """Bind ``port`` once (as the server will) to learn now, not from a log, that it is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            raise ConfigurationError(
                f"port {port} on {_HOST} is already in use (another agentguard network? "
                "`agentguard network status` tells); stop that process or choose another port"
            ) from None


def _is_ours(response: httpx.Response, ours: Callable[[Mapping[str, Any]], bool]) -> bool:
    """Whether a 200 health answer is a JSON object that ``ours`` recognizes."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and ours(body)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(
    process: subprocess.Popen[bytes] | None, *, kill: bool = False, grace: float = 5.0
) -> None:
    _stop_all([process], kill=kill, grace=grace)


def _stop_all(
    processes: Sequence[subprocess.Popen[bytes] | None], *, kill: bool = False, grace: float = 5.0
) -> None:
    """Signal every process first, then wait for each: their shutdowns overlap (a network's
    four processes stop in the time of the slowest, not of all four in turn)."""
    running = [p for p in processes if p is not None and p.poll() is None]
    for process in running:
        if kill:
            process.kill()
        else:
            process.terminate()
    for process in running:
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
    host: int | None = None
    """The operator host whose process holds this key with others (the index of its first
    key), or None: this key runs in its own process."""

    @property
    def name(self) -> str:
        """Its process's name: ``operator-<index>``, or ``host-<host>`` on an operator host."""
        return f"operator-{self.index}" if self.host is None else f"host-{self.host}"

    @property
    def url(self) -> str:
        return f"http://{_HOST}:{self.port}/rpc"

    @property
    def token_file(self) -> Path:
        return self.key_file.with_name(f"{self.name}.token")

    @property
    def registry_file(self) -> Path:
        return self.key_file.parent.parent / "operators" / f"{self.name}.sqlite3"

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
        on_progress: Callable[[str], None] | None = None,
        hosts: int | None = None,
    ) -> None:
        """``on_progress(step)`` is called as each part comes up (for a progress display).
        ``hosts``: run the operator keys in this many processes (operator hosts, the first
        ones holding one key more when they do not divide evenly); default one per key."""
        require("network", needed_by="ReferenceNetwork")  # before any folder is made
        if operators < 1:
            raise ConfigurationError("a network needs at least one operator")
        if hosts is not None and not 1 <= hosts <= operators:
            raise ConfigurationError(f"hosts must be in 1..{operators} (the operators)")
        self._hosts = hosts or operators
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
        self._on_progress = on_progress
        self._attached = False

    @classmethod
    def attach(cls, state_dir: str | Path) -> ReferenceNetwork:
        """The network running from ``state_dir`` (``agentguard network up --state-dir``), for
        Python code: its URL, operator addresses, API and admin keys, and every method here.
        It is not stopped when this object is (``with`` / ``stop()`` leave it running); its
        processes belong to whoever started it. ``ConfigurationError`` if none runs there."""
        directory = Path(state_dir).resolve()
        config_file = directory / "network.json"
        secrets_file = directory / "secrets.json"
        if directory.is_dir():
            # its run.json names processes `network down` signals, its network.json the URL
            # the keys are sent to: another user able to write there could point either elsewhere
            _check_private(directory)
        if not config_file.is_file() or not secrets_file.is_file():
            raise ConfigurationError(
                f"no agentguard network in {directory} (no network.json and secrets.json): "
                f"start one with `agentguard network up --state-dir {directory}`"
            )
        config = NetworkConfig.load(config_file)
        net = cls(
            len(config.operators),
            threshold_percentage=config.gateway.threshold_percentage,
            port=config.gateway.port,
            state_dir=directory,
        )
        net._attached = True
        net.gateway_port = config.gateway.port
        net._load_secrets()
        urls = [entry.url for entry in config.operators]
        for i, entry in enumerate(config.operators):
            port = httpx.URL(entry.url).port or 0
            first = urls.index(entry.url)
            host = first if urls.count(entry.url) > 1 else None
            net.operators.append(
                OperatorProcess(
                    i, entry.address, directory / "keys" / f"operator-{i}.key", port, host=host
                )
            )
        if not net.is_running():
            raise ConfigurationError(
                f"the agentguard network of {directory} is not running (its gateway "
                f"{net.url} does not answer as this network's gateway): start it with "
                f"`agentguard network up --state-dir {directory}`"
            )
        return net

    def run_info(self) -> dict[str, Any] | None:
        """What ``run.json`` says about the running network (URL, process ids), if present."""
        try:
            info = json.loads((self.state_dir / RUN_FILE).read_text())
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def gateway_health(self) -> dict[str, Any] | None:
        """The gateway's ``/health`` answer, or ``None`` if nothing answers at its URL."""
        try:
            response = httpx.get(self.url + "/health", timeout=2.0)
            body = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        return body if response.status_code == 200 and isinstance(body, dict) else None

    def is_running(self) -> bool:
        """Whether this network's gateway answers: the process this object started, or (for
        an attached network) the gateway whose pid ``run.json`` names."""
        health = self.gateway_health()
        if health is None:
            return False
        if self._gateway is not None:
            return health.get("pid") == self._gateway.pid
        info = self.run_info() or {}
        return info.get("url") == self.url and health.get("pid") == info.get("gateway_pid")

    @staticmethod
    def _answers_as(info: Mapping[str, Any]) -> bool:
        """Whether the gateway that ``run.json`` names still answers at its URL."""
        url = info.get("url")
        if not isinstance(url, str) or not url.startswith(f"http://{_HOST}:"):
            return False
        try:
            body = httpx.get(url + "/health", timeout=2.0).json()
        except (httpx.HTTPError, ValueError):
            return False
        return isinstance(body, dict) and body.get("pid") == info.get("gateway_pid")

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
        if self._attached:  # already running; its owner starts and stops it
            return self
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

    def _progress(self, step: str) -> None:
        if self._on_progress is not None:
            self._on_progress(step)

    def start(self) -> None:
        if self._attached:
            raise ConfigurationError(
                "an attached network is started and stopped by the process that owns it "
                "(`agentguard network up` / `agentguard network down`)"
            )
        # before any file is written: a taken port, or a network already running from here
        if self._port:
            _check_port_free(self._port)
        running = self.run_info()
        if running is not None and self._answers_as(running):
            raise ConfigurationError(
                f"a network is already running from {self.state_dir} ({running.get('url')}): "
                "use it (ReferenceNetwork.attach, `agentguard network status`), stop it "
                "(`agentguard network down`), or choose another state folder"
            )
        for folder in ("", "keys", "logs", "operators"):
            _private_dir(self.state_dir / folder)
        self._load_or_make_secrets()
        if not self.owner_key_file.exists():
            write_operator_key(self.owner_key_file)
        # key i runs in process i * hosts // n: the first processes take one more key
        groups = [i * self._hosts // self._n for i in range(self._n)]
        ports: dict[int, int] = {}
        for i in range(self._n):
            key_file = self.state_dir / "keys" / f"operator-{i}.key"
            if key_file.exists():
                from agentguard._attestation import operator_address

                address = operator_address(load_operator_key(str(key_file), ""))
            else:
                address = write_operator_key(key_file)
            first = groups.index(groups[i])
            host = first if groups.count(groups[i]) > 1 else None
            port = ports.setdefault(groups[i], _free_port())
            op = OperatorProcess(i, address, key_file, port, host=host)
            if not op.token_file.exists():
                write_secret(op.token_file, new_token() + "\n")
            self.operators.append(op)
        self._check_layout()
        self._progress("keys ready")
        processes = [ops[0] for ops in self._processes()]
        for op in processes:  # start all, then wait: imports take a while each
            self._spawn_operator(op)
        for op in processes:
            self._wait_operator(op)
            for key in self._cohosted(op):
                self._progress(f"operator-{key.index} ready ({key.address})")
        self.gateway_port = self._port or _free_port()
        self._write_config()
        self.start_gateway()
        self._progress(f"gateway ready ({self.url})")

    def stop(self) -> None:
        if self._gateway is not None and (self.run_info() or {}).get("gateway_pid") == (
            self._gateway.pid
        ):
            with contextlib.suppress(OSError):
                (self.state_dir / RUN_FILE).unlink()
        processes = {id(op.process): op.process for op in self.operators}  # a host's once
        _stop_all([self._console, self._gateway, *processes.values()])
        for log in self._logs:
            log.close()
        self._logs.clear()
        if self._temporary:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def _load_secrets(self) -> None:
        try:
            secrets = json.loads(self.secrets_file.read_text())
            self.api_key, self.admin_key = str(secrets["api_key"]), str(secrets["admin_key"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigurationError(
                f"{self.secrets_file} is not readable or not the network's secrets file"
            ) from None

    def _load_or_make_secrets(self) -> None:
        if self.secrets_file.exists():
            self._load_secrets()
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

    def _wait_healthy(
        self,
        process: subprocess.Popen[bytes],
        port: int,
        name: str,
        ours: Callable[[Mapping[str, Any]], bool] = lambda _: True,
    ) -> None:
        """Wait until ``process`` answers ``/health``; an answer that ``ours`` does not
        recognize comes from another server on that port, and is an error, never a success."""
        deadline = time.monotonic() + self._startup_timeout
        with httpx.Client(timeout=1.0) as http:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise ConfigurationError(
                        f"{name} exited with status {process.returncode} while starting"
                        f"{self._log_tail(name)}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    response = http.get(f"http://{_HOST}:{port}/health")
                    if response.status_code == 200:
                        if _is_ours(response, ours):
                            return
                        _stop(process, kill=True)
                        raise ConfigurationError(
                            f"{name}: port {port} on {_HOST} is answered by another server, not "
                            "the process just started (another agentguard network?); stop it "
                            "or choose another port"
                        )
                time.sleep(0.05)
        _stop(process, kill=True)
        raise ConfigurationError(f"{name} did not become healthy within {self._startup_timeout}s")

    def _log_tail(self, name: str) -> str:
        """The last lines of a process's log, so the cause is in the error, not only the file."""
        log = self.state_dir / "logs" / f"{name}.log"
        try:
            lines = log.read_text(errors="replace").strip().splitlines()[-5:]
        except OSError:
            return ""
        return f"; see {log}:\n  " + "\n  ".join(lines) if lines else f"; see {log}"

    def _check_layout(self) -> None:
        """Refuse to move a key to another process's registry than the one it last ran with
        in this folder (another ``hosts``): the new file would not know the approvals the key
        used or the registrations it held, so a gateway could spend a used approval again."""
        if not self.config_file.is_file():
            return
        urls = [entry.url for entry in NetworkConfig.load(self.config_file).operators]
        for op in self.operators[: len(urls)]:
            first = urls.index(urls[op.index])
            before = f"operator-{op.index}" if urls.count(urls[first]) == 1 else f"host-{first}"
            if before != op.name and (op.registry_file.parent / f"{before}.sqlite3").exists():
                raise ConfigurationError(
                    f"operator-{op.index} last ran as {before} in {self.state_dir}, now as "
                    f"{op.name}: its registry (used approvals, registrations) would be left "
                    "behind; start with the same hosts as before, or another state folder"
                )

    def _cohosted(self, op: OperatorProcess) -> list[OperatorProcess]:
        """The keys of ``op``'s process: ``op`` alone, or every key of its operator host."""
        if op.host is None:
            return [op]
        return [key for key in self.operators if key.host == op.host]

    def _processes(self) -> list[list[OperatorProcess]]:
        """The keys of each operator process, in order."""
        return [self._cohosted(op) for op in self.operators if op.host in (None, op.index)]

    def _wait_operator(self, op: OperatorProcess) -> None:
        """Wait until ``op``'s process answers as the holder of exactly its keys."""
        assert op.process is not None
        wanted = sorted(key.address.lower() for key in self._cohosted(op))

        def ours(body: Mapping[str, Any]) -> bool:
            if op.host is None:
                return str(body.get("operator", "")).lower() == op.address.lower()
            held = body.get("operators")
            return isinstance(held, list) and sorted(str(a).lower() for a in held) == wanted

        self._wait_healthy(op.process, op.port, op.name, ours)

    def _spawn_operator(self, op: OperatorProcess) -> None:
        """Start ``op``'s process (an operator host: every key of it) and note it on each key."""
        keys = self._cohosted(op)
        process = self._spawn(
            op.name,
            [
                "agentguard.network.operator",
                "--port",
                str(op.port),
                *[arg for key in keys for arg in ("--key-file", str(key.key_file))],
                "--token-file",
                str(op.token_file),
                "--registry",
                str(op.registry_file),
                *(["--chain-rpc", self._usage_check_rpc] if self._usage_check_rpc else []),
            ],
        )
        for key in keys:
            key.process = process

    def start_operator(self, index: int) -> None:
        """Start operator ``index``'s process: on an operator host, every key of it."""
        op = self.operators[index]
        if op.running:
            return
        self._spawn_operator(op)
        self._wait_operator(op)

    def stop_operator(self, index: int) -> None:
        """Stop operator ``index``'s process: on an operator host, every key of it."""
        op = self.operators[index]
        _stop(op.process)
        for key in self._cohosted(op):
            key.process = None

    def start_gateway(self) -> None:
        if self._attached:
            raise ConfigurationError("an attached network's gateway belongs to its own process")
        if self._gateway is not None and self._gateway.poll() is None:
            return
        _check_port_free(self.gateway_port)
        gateway = self._gateway = self._spawn(
            "gateway", ["agentguard.network.gateway", "--config", str(self.config_file)]
        )
        self._wait_healthy(
            gateway, self.gateway_port, "gateway", lambda body: body.get("pid") == gateway.pid
        )
        run = {"url": self.url, "gateway_pid": gateway.pid, "owner_pid": os.getpid()}
        write_secret(self.state_dir / RUN_FILE, json.dumps(run) + "\n")

    @property
    def gateway_pid(self) -> int | None:
        """The pid of the gateway process this object started, if it runs."""
        return self._gateway.pid if self._gateway and self._gateway.poll() is None else None

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
        if "error" in body:  # typed as an SDK call's would be (retryable ones included)
            raise _rpc_error(body["error"], response.status_code)
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
