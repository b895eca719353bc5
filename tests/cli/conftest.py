"""A reference network started by the real ``agentguard network up`` in a subprocess."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cli(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """One ``agentguard`` command, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "agentguard.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


@dataclass
class Running:
    process: subprocess.Popen[str]
    state_dir: Path
    port: int
    output: list[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_network(state_dir: Path, port: int, operators: int = 2) -> Running:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentguard.cli",
            "network",
            "up",
            "--state-dir",
            str(state_dir),
            "--port",
            str(port),
            "--operators",
            str(operators),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    output: list[str] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        if line.startswith("Ctrl-C"):
            return Running(process, state_dir, port, output)
    process.kill()
    raise AssertionError("network up did not start:\n" + "".join(output))


def stop_network(running: Running) -> None:
    if running.process.poll() is None:
        running.process.terminate()
        running.process.wait(30)


@pytest.fixture(scope="package")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    net = start_network(tmp_path_factory.mktemp("cli") / "net", free_port())
    yield net
    stop_network(net)
