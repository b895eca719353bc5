"""One gateway process per SQLite state file: a second one is refused before it serves.

Two gateways on one file would each keep their own running totals in memory and each let the
same money through under a cap (and miss each other's approvals).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentguard import ConfigurationError
from agentguard.network.launcher import ReferenceNetwork
from agentguard.network.state._owner import own_state


def test_the_file_has_one_owner_at_a_time(tmp_path: Path) -> None:
    spec = str(tmp_path / "state.sqlite3")
    fd = own_state(spec)
    assert fd is not None
    with pytest.raises(ConfigurationError, match="another gateway process serves this state"):
        own_state(f"sqlite:///{spec}")  # another spelling of the same file
    os.close(fd)  # the owner goes: the next one may take it
    again = own_state(spec)
    assert again is not None
    os.close(again)


def test_nothing_to_own_in_memory_or_postgres() -> None:
    assert own_state(":memory:") is None
    assert own_state("postgresql://agentguard@127.0.0.1/agentguard") is None


def test_a_second_gateway_process_on_the_same_state_is_refused(tmp_path: Path) -> None:
    with ReferenceNetwork(operators=1, state_dir=tmp_path / "net") as net:
        second = subprocess.run(
            [sys.executable, "-m", "agentguard.network.gateway", "--config", str(net.config_file)],
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert second.returncode == 2
        assert b"another gateway process serves this state file" in second.stderr
        assert net.gateway_pid is not None  # the first one still serves
        net.kill_gateway()  # a crash releases the file with the process
        net.start_gateway()
        assert net.gateway_pid is not None
