"""The wheels a user installs: built with ``uv build``, installed into fresh virtual
environments from those wheel files only (never from a checkout), then imported and run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
IMPORT_ALL = Path(__file__).with_name("import_all.py")
# the modules of agentguard that need an extra, and which one
NEEDS_EXTRA = {
    "agentguard.challenge._evaluate": "network",
    "agentguard.challenge._history": "network",
    "agentguard.challenge._record": "network",
    "agentguard.challenge._run": "network",
    "agentguard.challenge._watch": "network",
    "agentguard.network._server": "network",
    "agentguard.network.console": "network",
    "agentguard.network.gateway": "network",
    "agentguard.network.operator": "network",
    "agentguard.policies._engine": "network",
    "agentguard.policies._probe": "network",
    "agentguard.x402.official_hook": "x402",
}


def _uv() -> list[str]:
    """uv as the Makefile finds it: on PATH, else the copy installed into python3."""
    found = shutil.which("uv")
    return [found] if found else [shutil.which("python3") or sys.executable, "-m", "uv"]


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, timeout=600, env=env)
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    _run(*_uv(), "build", "--all-packages", "--wheel", "-o", str(out), cwd=ROOT)
    built = {p.name.split("-")[0]: p for p in out.glob("*.whl")}
    assert set(built) == {"agentguard", "agentguard_opengradient", "langchain_agentguard"}
    return built


def _venv(where: Path, *requirements: str) -> Path:
    """A fresh venv with ``requirements`` (wheel paths, so nothing named agentguard can come
    from an index): from uv's cache alone when it holds everything, else also from PyPI."""
    _run(*_uv(), "venv", "-q", "--python", sys.executable, str(where), cwd=where.parent)
    python = where / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT"))}
    install = [*_uv(), "pip", "install", "-q", "--python", str(python), *requirements]
    offline = subprocess.run(
        [*install, "--offline"], capture_output=True, text=True, cwd=where.parent, env=env
    )
    if offline.returncode != 0:
        _run(*install, cwd=where.parent, env=env)
    return python


@pytest.fixture(scope="module")
def core(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield _venv(tmp_path_factory.mktemp("core") / "venv", str(wheels["agentguard"]))


@pytest.fixture(scope="module")
def full(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield _venv(
        tmp_path_factory.mktemp("full") / "venv",
        f"agentguard[network,x402,redis,postgres] @ {wheels['agentguard'].as_uri()}",
        f"agentguard-opengradient[server] @ {wheels['agentguard_opengradient'].as_uri()}",
        str(wheels["langchain_agentguard"]),
    )


def _failures(python: Path, *packages: str) -> dict[str, str]:
    out = _run(str(python), str(IMPORT_ALL), *packages, cwd=python.parent)
    return dict(line.split(": ", 1) for line in out.splitlines() if line)


def test_the_core_wheel_declares_everything_it_imports(core: Path) -> None:
    """Every module imports from the wheel and its declared dependencies alone, except the
    ones an extra provides (before: eth_abi, eth_utils, eth_hash were imported, not declared)."""
    failures = _failures(core, "agentguard")
    assert set(failures) == set(NEEDS_EXTRA), failures
    assert "MissingExtra" in failures["agentguard.x402.official_hook"]


def test_network_up_from_the_core_wheel_names_the_extra(core: Path, tmp_path: Path) -> None:
    """With the network extra really absent (not hidden): the message, and no file written."""
    done = subprocess.run(
        [str(core.parent / "agentguard"), "network", "up"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2
    assert "pip install 'agentguard[network]'" in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_wheels_with_every_extra_import_whole(full: Path) -> None:
    failures = _failures(full, "agentguard", "agentguard_opengradient", "langchain_agentguard")
    assert failures == {}
    version = _run(str(full.parent / "agentguard"), "--version", cwd=full.parent)
    assert version.strip() == "agentguard 0.1.0"


def test_the_adapters_pin_a_compatible_agentguard(wheels: dict[str, Path]) -> None:
    import zipfile

    for name in ("agentguard_opengradient", "langchain_agentguard"):
        with zipfile.ZipFile(wheels[name]) as wheel:
            meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
            requires = [
                line.split(": ", 1)[1]
                for line in wheel.read(meta).decode().splitlines()
                if line.startswith("Requires-Dist: ")
            ]
        assert "agentguard<0.2,>=0.1" in requires, requires
