"""A local anvil chain with Base's chain id, for tests and the demo.

The binary comes from npm (``@foundry-rs/anvil``, pinned in ``package.json`` and installed by
``make env``), so the chain the tests run against is a real EVM node, not a simulator. Anvil
binds an ephemeral port itself (``--port 0``) and we read it back from its log, so two
chains started at once never race for a port.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from agentguard._exceptions import ConfigurationError

__all__ = ["BASE_CHAIN_ID", "DEV_ACCOUNTS", "Anvil", "DevAccount", "find_anvil"]

BASE_CHAIN_ID = 8453
ENV_VAR = "AGENTGUARD_ANVIL"

_LISTENING_RE = re.compile(rb"Listening on 127\.0\.0\.1:(\d+)")
_REPO_ROOT = Path(__file__).resolve().parents[2]
_PLATFORMS = {
    ("Linux", "x86_64"): "linux-amd64",
    ("Linux", "aarch64"): "linux-arm64",
    ("Linux", "arm64"): "linux-arm64",
    ("Darwin", "x86_64"): "darwin-amd64",
    ("Darwin", "arm64"): "darwin-arm64",
    ("Windows", "AMD64"): "win32-amd64",
}


@dataclass(frozen=True, slots=True)
class DevAccount:
    """One of anvil's funded accounts (from the public ``test test … junk`` mnemonic)."""

    address: str
    private_key: str = field(repr=False)


# Anvil's default accounts, 10 000 ETH each. The keys are public knowledge: local use only.
DEV_ACCOUNTS: tuple[DevAccount, ...] = tuple(
    DevAccount(address, key)
    for address, key in (
        (
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
            "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
        ),
        (
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
        ),
        (
            "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
            "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
        ),
        (
            "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
            "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
        ),
        (
            "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
            "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
        ),
        (
            "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",
            "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
        ),
        (
            "0x976EA74026E726554dB657fA54763abd0C3a0aa9",
            "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
        ),
        (
            "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955",
            "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
        ),
        (
            "0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f",
            "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
        ),
        (
            "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720",
            "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
        ),
    )
)


def _parents(start: Path) -> Iterator[Path]:
    yield start
    yield from start.parents


def find_anvil() -> Path:
    """``$AGENTGUARD_ANVIL``, else the npm binary in a ``node_modules`` above the working
    directory or this checkout, else ``anvil`` on ``PATH``."""
    if explicit := os.environ.get(ENV_VAR):
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ConfigurationError(f"{ENV_VAR}={explicit} is not an executable file")
        return path
    suffix = _PLATFORMS.get((platform.system(), platform.machine()))
    exe = "anvil.exe" if platform.system() == "Windows" else "anvil"
    candidates = []
    if suffix:
        candidates.append(Path("node_modules", "@foundry-rs", f"anvil-{suffix}", "bin", exe))
    # Where the npm package's postinstall puts the binary when the platform package is missing.
    candidates.append(Path("node_modules", "@foundry-rs", "anvil", exe))
    seen: set[Path] = set()
    for root in (*_parents(Path.cwd().resolve()), *_parents(_REPO_ROOT)):
        if root in seen:
            continue
        seen.add(root)
        for candidate in candidates:
            path = root / candidate
            if path.is_file() and os.access(path, os.X_OK):
                return path
    if on_path := shutil.which("anvil"):
        return Path(on_path)
    raise ConfigurationError(
        "anvil binary not found: run `make env` (or `npm ci` in the repository root) to install "
        f"@foundry-rs/anvil, or set {ENV_VAR} to an anvil executable"
    )


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Anvil:
    """A running anvil node on ``127.0.0.1``; use as a context manager.

    >>> with Anvil() as chain:
    ...     w3 = Web3(Web3.HTTPProvider(chain.url))
    """

    accounts = DEV_ACCOUNTS

    def __init__(
        self,
        *,
        chain_id: int = BASE_CHAIN_ID,
        binary: str | os.PathLike[str] | None = None,
        args: Sequence[str] = (),
        startup_timeout: float = 15.0,
    ) -> None:
        self.chain_id = chain_id
        self._binary = Path(binary) if binary is not None else None
        self._args = tuple(args)
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._client: httpx.Client | None = None
        self._logdir: tempfile.TemporaryDirectory[str] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        if self._proc is None:
            raise ConfigurationError("anvil is not running; call start() or use `with Anvil()`")
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> Self:
        if self._proc is not None:
            return self
        binary = self._binary or find_anvil()
        self._logdir = tempfile.TemporaryDirectory(prefix="agentguard-anvil-")
        log_path = Path(self._logdir.name, "anvil.log")
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    str(binary),
                    "--host", "127.0.0.1",
                    "--port", "0",
                    "--chain-id", str(self.chain_id),
                    *self._args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self._proc = proc
        self._finalizer = weakref.finalize(self, _stop_process, proc)
        try:
            self.port = self._wait_for_port(log_path)
            self._client = httpx.Client(base_url=self.url, timeout=10.0)
            self._wait_for_rpc()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminates the node by its PID (then kills it after 5 s) and removes its log."""
        if self._finalizer is not None:
            self._finalizer()  # runs _stop_process once
            self._finalizer = None
        self._proc = None
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._logdir is not None:
            self._logdir.cleanup()
            self._logdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- JSON-RPC ---------------------------------------------------------------------------

    def rpc(self, method: str, *params: Any) -> Any:
        if self._client is None:
            raise ConfigurationError("anvil is not running; call start() or use `with Anvil()`")
        answer = self._client.post(
            "/", json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        ).json()
        if "error" in answer:
            raise ConfigurationError(f"anvil refused {method}: {answer['error']}")
        return answer["result"]

    def snapshot(self) -> str:
        """Saves the chain state; ``revert(id)`` returns to it (once per snapshot)."""
        return str(self.rpc("evm_snapshot"))

    def revert(self, snapshot_id: str) -> None:
        if self.rpc("evm_revert", snapshot_id) is not True:
            raise ConfigurationError(f"anvil has no snapshot {snapshot_id}")

    # -- start-up ---------------------------------------------------------------------------

    def _wait_for_port(self, log_path: Path) -> int:
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if found := _LISTENING_RE.search(log_path.read_bytes()):
                return int(found.group(1))
            self._check_alive(log_path)
            time.sleep(0.02)
        raise ConfigurationError(
            f"anvil did not start listening within {self._startup_timeout} s: " + _tail(log_path)
        )

    def _wait_for_rpc(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        while True:
            try:
                chain_id = int(self.rpc("eth_chainId"), 16)
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise ConfigurationError(
                        f"anvil on port {self.port} does not answer JSON-RPC"
                    ) from None
                time.sleep(0.02)
                continue
            if chain_id != self.chain_id:
                raise ConfigurationError(
                    f"anvil reports chain id {chain_id}, expected {self.chain_id}"
                )
            return

    def _check_alive(self, log_path: Path) -> None:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise ConfigurationError(
                f"anvil exited with code {self._proc.returncode}: {_tail(log_path)}"
            )


def _tail(log_path: Path, lines: int = 10) -> str:
    text = log_path.read_text(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:]) or "(no output)"
