"""Red team: a stranger on the same machine and the launcher's state folder.

The launcher reuses the operator keys, tokens and API keys it finds in its state folder. Before
the fix it accepted any existing folder: in one another local user can write to (``/tmp/agnet``
created by them first, or left group/world-writable), that user planted an operator key and a
``secrets.json`` they knew, and the network started with them, so the stranger could sign
attestations as that operator and call the gateway with the admin key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from coincurve import PrivateKey

from agentguard._exceptions import ConfigurationError
from agentguard.network.launcher import ReferenceNetwork


def plant(state_dir: Path) -> None:
    (state_dir / "keys").mkdir(parents=True)
    (state_dir / "keys" / "operator-0.key").write_text("0x" + PrivateKey().secret.hex())
    secrets = {"api_key": "agk_known_to_the_stranger", "admin_key": "agk_also_known"}
    (state_dir / "secrets.json").write_text(json.dumps(secrets))


@pytest.mark.parametrize("how", ["world-writable", "group-writable", "another user's"])
def test_a_state_folder_others_can_write_is_refused(tmp_path: Path, how: str) -> None:
    state_dir = tmp_path / "agnet"
    state_dir.mkdir()
    plant(state_dir)
    if how == "world-writable":
        state_dir.chmod(0o777)
    elif how == "group-writable":
        state_dir.chmod(0o770)
    else:
        if os.getuid() != 0:
            pytest.skip("needs root to hand the folder to another user")
        os.chown(state_dir, 65534, 65534)
    network = ReferenceNetwork(operators=1, state_dir=state_dir, startup_timeout=120.0)
    with pytest.raises(ConfigurationError, match="writable by other users or owned by another"):
        network.__enter__()
    assert network.operators == [] and network.api_key == ""  # nothing started, nothing read


def test_a_new_state_folder_is_private(tmp_path: Path) -> None:
    state_dir = tmp_path / "fresh" / "agnet"
    with ReferenceNetwork(operators=1, state_dir=state_dir, startup_timeout=120.0) as net:
        assert net.operators
        for folder in (state_dir, state_dir / "keys", state_dir / "logs"):
            assert folder.stat().st_mode & 0o077 == 0, folder
        for secret in (net.secrets_file, net.owner_key_file, net.operators[0].key_file):
            assert secret.stat().st_mode & 0o077 == 0, secret
