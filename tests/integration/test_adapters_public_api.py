"""The adapters (``agentguard-opengradient``, ``langchain-agentguard``) use only agentguard's public
API, and pin an agentguard version range that includes the one in this checkout.

A private module (``agentguard._eip712``, ``agentguard.x402._auth``) may change in any release;
an adapter that imports one breaks silently inside its pinned range. Before this test the
OpenGradient adapter imported ``agentguard._exceptions``, ``agentguard._eip712`` and
``agentguard.x402.upto.client`` internals, and nothing noticed.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import agentguard

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = [ROOT / "adapters" / "opengradient", ROOT / "adapters" / "langchain"]
_DOTTED = re.compile(r"(?<![\w.])agentguard(?:\.\w+)+")


def _is_private(module: str) -> bool:
    """``module`` is agentguard's and one of its parts starts with an underscore."""
    parts = module.split(".")
    return parts[0] == "agentguard" and any(p.startswith("_") for p in parts[1:])


def private_imports(source: str, filename: str) -> Iterator[str]:
    """Every agentguard-private name ``source`` imports, statically or by a string."""
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_private(alias.name):
                    yield f"import {alias.name}"
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if _is_private(node.module):
                yield f"from {node.module} import ..."
            elif node.module.split(".")[0] == "agentguard":
                for alias in node.names:
                    if alias.name.startswith("_"):
                        yield f"from {node.module} import {alias.name}"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # importlib.import_module("agentguard._eip712") and friends
            for found in _DOTTED.findall(node.value):
                if _is_private(found):
                    yield f"string {found!r}"


def _sources(adapter: Path) -> list[Path]:
    files = sorted((adapter / "src").rglob("*.py"))
    assert files, f"{adapter} has no source files"
    return files


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda p: p.name)
def test_adapter_sources_import_only_public_agentguard(adapter: Path) -> None:
    found = {
        str(path.relative_to(ROOT)): hits
        for path in _sources(adapter)
        if (hits := list(private_imports(path.read_text(), str(path))))
    }
    assert found == {}


@pytest.mark.parametrize(
    "source",
    [
        "import agentguard._eip712",
        "from agentguard._exceptions import ProofError",
        "from agentguard.x402._auth import X402Auth",
        "from agentguard.x402 import _auth",
        "import agentguard.x402._select as s",
        "def f():\n    from agentguard.ledger._sqlite import X\n",
        "import importlib\nimportlib.import_module('agentguard.x402._wire')",
    ],
)
def test_the_checker_sees_each_form_of_private_import(source: str) -> None:
    """The checker is not vacuous: each way of reaching a private module is reported."""
    assert list(private_imports(source, "<case>"))


@pytest.mark.parametrize(
    "source",
    [
        "from agentguard import ProofError, strict_loads",
        "from agentguard.x402 import PERMIT2, UPTO_PERMIT2_PROXY, X402Auth",
        "from agentguard.chain import deploy",
        "from agentguard_opengradient._proof import verify_proof",  # its own package
        "from ._chat import ChatOpenGradient",
        "x = 'langchain_agentguard._chat'",  # another package whose name ends in agentguard
    ],
)
def test_public_imports_pass(source: str) -> None:
    assert list(private_imports(source, "<case>")) == []


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda p: p.name)
def test_adapter_pins_a_range_containing_this_agentguard(adapter: Path) -> None:
    project = tomllib.loads((adapter / "pyproject.toml").read_text())["project"]
    (pin,) = [
        Requirement(d) for d in project["dependencies"] if Requirement(d).name == "agentguard"
    ]
    assert pin.specifier.contains(agentguard.__version__)
    # bounded above: a new minor series may drop what the adapter uses
    assert any(s.operator == "<" for s in pin.specifier), f"{adapter.name}: {pin} has no ceiling"
    assert any(s.operator == ">=" for s in pin.specifier), f"{adapter.name}: {pin} has no floor"
