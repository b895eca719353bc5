"""Undo py_ecc's recursion limit, which turns any deeply nested JSON into a process crash.

py_ecc (imported by web3, through eth-keyfile) raises the interpreter's recursion limit to
100,000 when it is imported. CPython 3.11's C JSON decoder, ``repr`` and friends recurse on the
C stack once per nesting level and stop only at that limit, so an RPC node (or any server) that
answers 1 MB of ``[`` overflows an 8 MB stack and the process dies with SIGSEGV before any
``except`` runs: web3's own ``json.loads`` of the node's answer, in the user's ``Web3`` too.

agentguard imports py_ecc first and then lowers that limit to ``SAFE_LIMIT``: deep input becomes
a ``RecursionError`` (which the wallet reports as ``NodeUnavailable``) in every web3 in the
process, without touching anyone's provider. Measured on CPython 3.11: the JSON decoder needs
~100-200 bytes of C stack per level (10,000 levels fit a 2 MB thread stack; the default is 8 MB),
and py_ecc's optimized BN254 pairing (our local BLS fallback) runs at the default 1,000; its
unoptimized pairing needs ~3,000. A limit someone set on purpose (any value but py_ecc's) is
left alone.
"""

from __future__ import annotations

import sys

__all__ = ["PY_ECC_LIMIT", "SAFE_LIMIT", "undo_py_ecc_limit"]

PY_ECC_LIMIT = 100_000
"""What ``py_ecc/__init__.py`` sets: ``max(100000, sys.getrecursionlimit())``."""
SAFE_LIMIT = 10_000


def undo_py_ecc_limit() -> None:
    """Import py_ecc now (so a later ``import web3`` cannot raise the limit again) and bring the
    limit it set down to ``SAFE_LIMIT`` (or to what it was before, if that was higher)."""
    before = None if "py_ecc" in sys.modules else sys.getrecursionlimit()
    import py_ecc  # noqa: F401  # sets the limit once, at first import

    if sys.getrecursionlimit() == PY_ECC_LIMIT and before != PY_ECC_LIMIT:
        sys.setrecursionlimit(max(before or 0, SAFE_LIMIT))
