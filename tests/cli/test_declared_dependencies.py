"""Every package a distribution's code imports is one it declares (not one that merely arrives
with another dependency today): before, agentguard imported eth_abi, eth_utils, eth_hash,
eth_typing, py_ecc and anyio without naming them, and the OpenGradient adapter web3, httpx..."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTIONS = {
    "agentguard": (ROOT, ROOT / "agentguard"),
    "agentguard-opengradient": (ROOT / "adapters/opengradient", ROOT / "adapters/opengradient/src"),
    "langchain-agentguard": (ROOT / "adapters/langchain", ROOT / "adapters/langchain/src"),
}
OWN = {"agentguard", "agentguard_opengradient", "langchain_agentguard"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(project: Path) -> set[str]:
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    requirements = list(meta.get("dependencies", []))
    for extra in meta.get("optional-dependencies", {}).values():
        requirements += extra
    return {_normal(re.split(r"[\s\[<>=!;~]", r, maxsplit=1)[0]) for r in requirements}


def _imported(source: Path) -> dict[str, str]:
    """Third-party top-level modules imported anywhere in the shipped code -> one file."""
    found: dict[str, str] = {}
    for path in source.rglob("*.py"):
        if path.name.startswith("test_") or path.name == "_testkit.py" or "tests" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in OWN:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("distribution", sorted(DISTRIBUTIONS))
def test_every_imported_package_is_declared(distribution: str) -> None:
    project, source = DISTRIBUTIONS[distribution]
    declared = _declared(project)
    providers = packages_distributions()
    undeclared = {
        module: where
        for module, where in _imported(source).items()
        if not {_normal(d) for d in providers.get(module, [module])} & declared
    }
    assert undeclared == {}, f"{distribution} imports but does not declare: {undeclared}"
