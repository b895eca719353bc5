"""Attacks through the environment ``Guard.from_env`` reads. Each test names what the attack
did before the defence it checks."""

from __future__ import annotations

import pytest

from agentguard import ConfigurationError, Guard

from .test_env import env


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("GATEWAY_URL", "http://gateway.example.com/rpc"),
        ("GATEWAY_URL", "http://127.0.0.1.attacker.example:8080"),
        ("GATEWAY_URL", "http://localhost@attacker.example"),
        ("RPC_URL", "http://base-mainnet.example.com/v2/provider-key-123456"),
    ],
)
def test_a_secret_never_leaves_in_cleartext_http(variable: str, url: str) -> None:
    """``AGENTGUARD_GATEWAY_URL=http://gateway.example.com`` (a copy-paste from a local setup,
    or an environment an attacker on the network path can edit): before the fix the gateway
    API key went out in an HTTP header in cleartext (and the RPC provider's key in the URL's
    path), to anyone on the path. Plain http:// is for loopback only, the host read as a URL
    parser reads it (``127.0.0.1.attacker.example`` and ``localhost@attacker`` are not)."""
    with pytest.raises(ConfigurationError, match=f"AGENTGUARD_{variable}.*https://"):
        Guard.from_env(env(**{variable: url}))


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8545", "http://localhost:8545/", "http://[::1]:8545", "https://x.io"]
)
def test_loopback_http_and_any_https_are_fine(url: str) -> None:
    assert Guard.from_env(env(GATEWAY_URL=url, RPC_URL=url)).defaults.web3 is not None
