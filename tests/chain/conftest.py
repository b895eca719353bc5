"""One real anvil chain per session; every test runs inside a snapshot that is reverted after it.

Session set-up deploys the token, the factory and one vault (3 operators, threshold 2) and
funds the vault, so each test starts from the same state in a few milliseconds.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3
from web3.contract import Contract

from agentguard.chain import Anvil, deploy, transact
from tests.chain.helpers import OWNER, VAULT_ETH, VAULT_USDC, DeployTest, Env, create_vault

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def chain_env() -> Iterator[Env]:
    with Anvil() as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        token = deploy(w3, "UsdCoin", sender=OWNER)
        factory = deploy(w3, "AgentVaultFactory", sender=OWNER)
        vault = create_vault(w3, factory, salt=b"\x01" * 32)
        transact(w3, token.functions.mint(vault.address, VAULT_USDC), sender=OWNER)
        funded = w3.eth.send_transaction({"from": OWNER, "to": vault.address, "value": VAULT_ETH})
        w3.eth.wait_for_transaction_receipt(funded)  # mined before any test's snapshot
        yield Env(anvil, w3, token, factory, vault)


@pytest.fixture
def env(chain_env: Env) -> Iterator[Env]:
    snapshot = chain_env.anvil.snapshot()
    try:
        yield chain_env
    finally:
        chain_env.anvil.revert(snapshot)


@pytest.fixture(scope="session")
def solcjs() -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Runs the pinned solc-js on a standard-JSON input (fails clearly if npm deps are missing)."""
    if not (REPO / "node_modules" / "solc").is_dir():
        pytest.fail("node_modules/solc is missing: run `make env` (it runs `npm ci`)")
    script = (
        "const solc = require('solc'); let input = '';"
        "process.stdin.on('data', (d) => (input += d));"
        "process.stdin.on('end', () => process.stdout.write(solc.compile(input)));"
    )

    def compile_(standard_json: dict[str, Any]) -> dict[str, Any]:
        out = subprocess.run(
            ["node", "-e", script],
            input=json.dumps(standard_json).encode(),
            capture_output=True,
            check=True,
            cwd=REPO,
        )
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    return compile_


@pytest.fixture(scope="session")
def deploy_test(solcjs: Callable[[dict[str, Any]], dict[str, Any]]) -> DeployTest:
    """Deploys a test-only contract ``tests/chain/<name>.sol`` from the owner account, compiled
    (once per session) by the pinned solc-js for the shipped contracts' EVM version."""

    @cache
    def build(name: str) -> tuple[Any, str]:
        settings = {
            "evmVersion": "cancun",
            "outputSelection": {"*": {name: ["abi", "evm.bytecode.object"]}},
        }
        source = (Path(__file__).parent / f"{name}.sol").read_text()
        sources = {f"{name}.sol": {"content": source}}
        out = solcjs({"language": "Solidity", "sources": sources, "settings": settings})
        assert not [e for e in out.get("errors", []) if e["severity"] == "error"], out["errors"]
        compiled = out["contracts"][f"{name}.sol"][name]
        return compiled["abi"], compiled["evm"]["bytecode"]["object"]

    def deploy_(w3: Web3, name: str, *args: Any) -> Contract:
        abi, bytecode = build(name)
        factory = w3.eth.contract(abi=abi, bytecode=bytecode)
        receipt = transact(w3, factory.constructor(*args), sender=OWNER)
        return w3.eth.contract(address=receipt["contractAddress"], abi=abi)

    return deploy_
