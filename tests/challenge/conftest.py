"""A reference network (gateway + three real operator processes, 2-of-3) for the challenger
tests, and a way to replace operators by liars that sign allow for a deny."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from agentguard.network.config import NetworkConfig
from agentguard.network.launcher import ReferenceNetwork


@pytest.fixture(scope="package")
def network() -> Iterator[ReferenceNetwork]:
    with ReferenceNetwork(
        operators=3, threshold_percentage=66, timeout=5.0, startup_timeout=180.0
    ) as net:
        yield net


def state_spec(network: ReferenceNetwork) -> str:
    """The gateway's state (a SQLite file), as ``challenge run --state`` takes it."""
    spec = NetworkConfig.load(network.config_file).gateway.state_db
    path = Path(spec)
    return str(path if path.is_absolute() else network.config_file.parent / path)


@contextmanager
def liars(network: ReferenceNetwork, *indexes: int) -> Iterator[list[str]]:
    """Operators ``indexes`` replaced by ``lying_operator.py`` (same keys, same ports)."""
    script = Path(__file__).with_name("lying_operator.py")
    started: list[subprocess.Popen[bytes]] = []
    try:
        for i in indexes:
            op = network.operators[i]
            network.stop_operator(i)
            process = subprocess.Popen(
                [
                    sys.executable,
                    str(script),
                    "--port",
                    str(op.port),
                    "--key-file",
                    str(op.key_file),
                    "--token-file",
                    str(op.token_file),
                ],
                cwd=Path(__file__).parents[2],
            )
            started.append(process)
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{op.port}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline and process.poll() is None, "liar did not start"
                time.sleep(0.05)
        yield [network.operators[i].address.lower() for i in indexes]
    finally:
        for process in started:
            process.terminate()
            process.wait(10)
        for i in indexes:
            network.start_operator(i)
