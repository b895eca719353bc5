"""Numbered private keys for tests, each as random-looking as a real one.

A ``Signer`` registers its key with the redactor (``agentguard/_redact.py``), which then masks
that text in every later log line and audit record of the process. A key written as a small
number (``f"0x{8:064x}"``) is also the ABI word of that number, so once a test made a signer
from it, every later test's recorded calldata holding the word (a string's length 8, the
offset 0x20 of every dynamic argument) was masked: ``tests/actions/test_shadow.py`` failed
after ``tests/wallet/test_entry_points.py``. A real key matches such text only by containing
it; these keys are hashes, like real ones.
"""

from __future__ import annotations

from agentguard._eip712 import keccak


def numbered_key(n: int, domain: str) -> str:
    """The ``n``-th test key of ``domain`` (0x + 64 hex): the same every run."""
    return "0x" + keccak(f"agentguard test key {domain} {n}".encode()).hex()
