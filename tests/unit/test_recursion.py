"""py_ecc (imported by web3) raises the recursion limit to 100,000, under which CPython's C JSON
decoder follows 1 MB of ``[`` off the end of the C stack (SIGSEGV). agentguard brings it back
down; each case runs in a fresh interpreter, as the import order matters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=_ROOT, timeout=120
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-400:])
    return done.stdout.strip()


@pytest.mark.parametrize(
    "first", ["import web3; import agentguard", "import agentguard; import web3"]
)
def test_the_limit_py_ecc_sets_is_undone_whichever_is_imported_first(first: str) -> None:
    """Before: 100000, and the json.loads below killed the interpreter."""
    out = _run(
        f"{first}\nimport json, sys\nprint(sys.getrecursionlimit())\n"
        "try:\n    json.loads('[' * 1_000_000)\nexcept RecursionError:\n    print('refused')\n"
    )
    assert out.split() == ["10000", "refused"]


def test_a_limit_the_application_chose_is_kept() -> None:
    assert _run("import sys; sys.setrecursionlimit(20000); import agentguard; "
                "print(sys.getrecursionlimit())") == "20000"  # fmt: skip


def test_the_local_bn254_pairing_still_runs_under_the_lowered_limit() -> None:
    """The local BLS fallback (py_ecc's optimized pairing) is what py_ecc raised the limit for;
    it needs no more than the default 1,000 levels."""
    out = _run(
        "import sys, agentguard\n"
        "from agentguard.newton._bn254 import certificate_digest, keypair, local_pairing, sign, "
        "verify_signature\n"
        "sk, pk1, pk2 = keypair(b'seed')\n"
        "d = certificate_digest(1, b'\\x11' * 32)\n"
        "sig = sign(sk, d)\n"
        "print(sys.getrecursionlimit(), verify_signature(d, sig, pk1, pk2, local_pairing), "
        "verify_signature(d, sig, pk1, keypair(b'other')[2], local_pairing))\n"
    )
    assert out.split() == ["10000", "True", "False"]
