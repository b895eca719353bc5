"""``evolved`` (the in-memory ledger's copy-with-changes) against ``dataclasses.replace``:
the same reservation for seeded random reservations and change sets over every field, and a
refusal for a name that is not a field. (The memory backend as a whole is compared with the
SQLite backend in ``test_ledger_memory.py``.)"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from agentguard.ledger._reservation import Reservation, evolved

FIELDS = [f.name for f in dataclasses.fields(Reservation)]


def _value(rng: random.Random, name: str) -> Any:
    if name in ("amount", "reserved"):
        return rng.choice([0, 1, rng.getrandbits(256)])
    if name in ("created_at", "expires_at", "updated_at"):
        return rng.uniform(0, 2e9)
    if name == "action":
        return rng.random() < 0.5
    if name == "state":
        return rng.choice(["reserved", "signed", "committed", "released"])
    if name in ("recipient", "reference", "outcome", "reason", "task_id"):
        return rng.choice([None, "", "0x" + rng.randbytes(20).hex(), "é\u2028" * 3])
    return rng.randbytes(16).hex()


def _reservation(rng: random.Random) -> Reservation:
    return Reservation(**{name: _value(rng, name) for name in FIELDS})


@pytest.mark.parametrize("seed", range(200))
def test_evolved_is_replace(seed: int) -> None:
    rng = random.Random(seed)
    r = _reservation(rng)
    changes = {name: _value(rng, name) for name in rng.sample(FIELDS, rng.randint(0, 6))}
    new, old = evolved(r, **changes), dataclasses.replace(r, **changes)
    assert new == old and type(new) is Reservation
    assert all(getattr(new, name) is getattr(old, name) for name in FIELDS)
    assert new is not r and hash(new) == hash(old)
    with pytest.raises(dataclasses.FrozenInstanceError):
        new.state = "released"  # type: ignore[misc]


def test_an_unknown_field_is_refused() -> None:
    r = _reservation(random.Random(1))
    with pytest.raises(TypeError):
        dataclasses.replace(r, colour="red")  # type: ignore[call-arg]
    with pytest.raises(AttributeError):
        evolved(r, colour="red")
