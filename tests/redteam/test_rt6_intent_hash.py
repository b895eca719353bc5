"""Red team, ``PaymentIntent.intent_hash`` is now a cached, written-out hash: mutate a verified
intent's amount (``object.__setattr__`` or its ``__dict__``) after verification, so the cached
hash still matches the attestation, and ask the signer for the larger payment. Held: the
signer rebuilds the intent from its current fields and refuses."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import pytest

from agentguard._exceptions import IntentMismatch
from agentguard.x402.exact import client as exact_client
from tests.redteam.test_redteam_pipeline_signer import SIGNER, requirement, verified

BIG = 10**12


def _setattr(intent: Any) -> None:
    object.__setattr__(intent, "amount", BIG)


def _dict(intent: Any) -> None:
    intent.__dict__["amount"] = BIG


@pytest.mark.parametrize("mutate", [_setattr, _dict], ids=["setattr", "__dict__"])
def test_a_verified_intent_mutated_with_its_hash_cached_is_not_signed(
    mutate: Callable[[Any], None],
) -> None:
    v = verified("exact")
    cached = v.intent.intent_hash
    mutate(v.intent)
    assert v.intent.intent_hash == cached  # the cache still says "as attested"
    req = dataclasses.replace(requirement("exact"), amount=BIG)
    typed = exact_client.typed_data(
        req, SIGNER.address, now=int(time.time()), valid_before=v.expires_at
    )
    with pytest.raises(IntentMismatch, match="altered"):
        SIGNER.sign_payment(v, typed)
