"""The shipped artifacts are exactly what the sources compile to, and expose what x402 needs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agentguard._eip712 import keccak
from agentguard._exceptions import ConfigurationError
from agentguard.chain import load_artifact

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "agentguard" / "chain" / "artifacts"


def test_shipped_artifacts_match_a_fresh_compile(tmp_path: Path) -> None:
    if not (REPO / "node_modules" / "solc").is_dir():
        pytest.fail("node_modules/solc is missing: run `make env` (it runs `npm ci`)")
    subprocess.run(
        ["node", str(REPO / "contracts" / "build.mjs"), str(tmp_path)],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    fresh = sorted(p.name for p in tmp_path.glob("*.json"))
    assert fresh == sorted(p.name for p in SHIPPED.glob("*.json"))
    assert fresh == [
        "AgentVault.json",
        "AgentVaultFactory.json",
        "NewtonBlsValidator.json",
        "NewtonOperatorTable.json",
        "OpgToken.json",
        "Permit2.json",
        "UsdCoin.json",
        "X402UptoPermit2Proxy.json",
    ]
    for name in fresh:
        rebuilt = json.loads((tmp_path / name).read_text())
        shipped = json.loads((SHIPPED / name).read_text())
        assert rebuilt == shipped, f"{name} is stale: run `node contracts/build.mjs` and commit"


def _functions(name: str) -> set[str]:
    return {
        f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
        for item in load_artifact(name).abi
        if item["type"] == "function"
    }


def test_token_has_every_function_the_x402_facilitator_calls() -> None:
    functions = _functions("UsdCoin")
    for signature, selector in [
        (
            "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)",
            "e3ee160e",
        ),
        (
            "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)",
            "cf092995",
        ),
        ("authorizationState(address,bytes32)", "e94a0102"),
        ("name()", "06fdde03"),
        ("version()", "54fd4d50"),
        ("balanceOf(address)", "70a08231"),
        ("DOMAIN_SEPARATOR()", "3644e515"),
    ]:
        assert signature in functions
        assert keccak(signature.encode())[:4].hex() == selector
    events = {i["name"] for i in load_artifact("UsdCoin").abi if i["type"] == "event"}
    assert {"Transfer", "AuthorizationUsed"} <= events


def test_vault_is_an_erc1271_wallet() -> None:
    assert "isValidSignature(bytes32,bytes)" in _functions("AgentVault")
    assert keccak(b"isValidSignature(bytes32,bytes)")[:4].hex() == "1626ba7e"


def test_unknown_artifact_names_the_shipped_ones() -> None:
    with pytest.raises(
        ConfigurationError,
        match="AgentVault, AgentVaultFactory, NewtonBlsValidator, NewtonOperatorTable, OpgToken, "
        "Permit2, UsdCoin, X402UptoPermit2Proxy",
    ):
        load_artifact("Nope")
