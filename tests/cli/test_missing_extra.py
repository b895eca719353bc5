"""An entry point whose extra is not installed says which extra and how to install it, before
anything is written. Each test hides the extra's package in a fresh interpreter
(``sys.modules[name] = None`` makes ``import name`` fail as if it were not installed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _run(hidden: list[str], code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    prelude = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in hidden)
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


@pytest.mark.parametrize("hidden", ["starlette", "regopy", "uvicorn", "jsonschema"])
def test_network_up_without_the_network_extra_writes_nothing(tmp_path: Path, hidden: str) -> None:
    """Before: `agentguard network up` wrote keys into ./.agentguard-network, then printed a
    traceback whose cause (No module named 'starlette') was only in a log file."""
    done = _run(
        [hidden],
        "from agentguard.cli import main\nsys.exit(main(['network', 'up', '--port', '0']))",
        tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert "'network' extra" in done.stderr and hidden in done.stderr
    assert "pip install 'agentguard[network]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # no state folder, no key, no log


def test_reference_network_without_the_extra_makes_no_folder(tmp_path: Path) -> None:
    code = (
        "from agentguard import MissingExtra\n"
        "from agentguard.network import ReferenceNetwork\n"
        "try:\n"
        "    ReferenceNetwork(state_dir='net')\n"
        "except MissingExtra as exc:\n"
        "    assert isinstance(exc, ImportError) and exc.extra == 'network'\n"
        "    print('refused:', exc)\n"
    )
    done = _run(["regopy"], code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused: ReferenceNetwork needs agentguard's 'network' extra")
    assert list(tmp_path.iterdir()) == []


def test_the_official_x402_hook_names_the_x402_extra(tmp_path: Path) -> None:
    code = (
        "from agentguard import MissingExtra\n"
        "try:\n"
        "    import agentguard.x402.official_hook\n"
        "except MissingExtra as exc:\n"
        "    print(exc)\n"
    )
    done = _run(["x402"], code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "'x402' extra" in done.stdout and "pip install 'agentguard[x402]'" in done.stdout


def test_a_postgres_ledger_names_the_postgres_extra(tmp_path: Path) -> None:
    code = (
        "from agentguard import MissingExtra\n"
        "from agentguard.ledger import open_ledger\n"
        "try:\n"
        "    open_ledger('postgresql://agent@127.0.0.1:1/nothing')\n"
        "except MissingExtra as exc:\n"
        "    print(exc)\n"
    )
    done = _run(["psycopg"], code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "pip install 'agentguard[postgres]'" in done.stdout


def test_the_sdk_itself_needs_no_extra(tmp_path: Path) -> None:
    """The agent side (Guard, X402Auth, ledgers, audit) imports with every extra hidden."""
    hidden = ["starlette", "uvicorn", "regopy", "jsonschema", "x402", "redis", "psycopg"]
    code = (
        "import agentguard, agentguard.x402, agentguard.ledger, agentguard.audit\n"
        "from agentguard import Guard, Signer, TransactionIntent\n"
        "print('ok')\n"
    )
    done = _run(hidden, code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
