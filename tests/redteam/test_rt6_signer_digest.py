"""Red team, signer fast path: the EIP-3009 digest is computed once, before the field checks.

``sign_payment`` computed the digest from ``typed["message"]`` first and compared the same
mapping with the attested payment afterwards, reading each field again. A typed-data
mapping whose reads change (a ``dict`` subclass, or a dict another thread edits) showed the
digest 1,000 USDC to the attacker and the checks 0.01 USDC to the payee: before the fix the
signer returned a valid signature over the attacker's authorization under an attestation
for the payee's. Now the signer reads one plain copy of the typed data, so the bytes it
checks are the bytes it signs, and anything but plain JSON-like values is refused.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from coincurve import PublicKey
from eth_utils.address import to_checksum_address

from agentguard._eip712 import keccak
from agentguard._exceptions import IntentMismatch
from agentguard._signer import eip3009_digest
from tests.redteam.test_redteam_pipeline_signer import SIGNER, eip3009, verified

ATTACKER = "0x6666666666666666666666666666666666666666"


class Shifty(dict[str, Any]):
    """Answers the first read of ``key`` with ``first``, every later one honestly."""

    def __init__(self, base: dict[str, Any], key: str, first: Any) -> None:
        super().__init__(base)
        self._key, self._first, self._reads = key, first, 0

    def get(self, key: str, default: Any = None) -> Any:
        if key == self._key:
            self._reads += 1
            if self._reads == 1:
                return self._first
        return super().get(key, default)


def _signer_of(digest: bytes, signature: bytes) -> str:
    sig = signature[:64] + bytes([signature[64] - 27])
    pub = PublicKey.from_signature_and_message(sig, digest, hasher=None)
    return str(to_checksum_address(keccak(pub.format(compressed=False)[1:])[-20:]))


@pytest.mark.parametrize(
    ("key", "lie"), [("to", ATTACKER), ("value", str(1_000 * 10**6))], ids=["payee", "amount"]
)
def test_a_mapping_that_changes_between_reads_is_not_signed(key: str, lie: Any) -> None:
    v = verified("exact")
    honest = eip3009(v)
    shown = copy.deepcopy(honest)
    shown["message"][key] = lie
    attack = {**honest, "message": Shifty(honest["message"], key, lie)}
    try:
        signature = SIGNER.sign_payment(v, attack)
    except IntentMismatch:
        return  # held: nothing signed
    digest = eip3009_digest(shown)
    assert digest is not None
    assert _signer_of(digest, signature) != SIGNER.address, (
        f"signed the attacker's {key} under an attestation for the payee's payment"
    )


def test_an_honest_authorization_is_still_signed() -> None:
    v = verified("exact")
    typed = eip3009(v)
    signature = SIGNER.sign_payment(v, typed)
    digest = eip3009_digest(typed)
    assert digest is not None and _signer_of(digest, signature) == SIGNER.address
    assert time.time() < v.expires_at
