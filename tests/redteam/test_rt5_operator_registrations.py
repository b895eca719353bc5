"""An operator's per-registration caches (the schema check, the precomputed params and policy
id) against registrations a lying gateway or a takeover puts in front of it (in process: real
engine, real keys; the chain's ``owner()`` answer is a stub)."""

from __future__ import annotations

from typing import Any

import pytest
from coincurve import PrivateKey

from agentguard._attestation import operator_address
from agentguard.network._rpc import RPCError
from agentguard.network.operator import Operator
from agentguard.network.registry import Registry
from tests.network.conftest import UNIT, params
from tests.network.test_operator import registration, request


def test_a_takeover_with_the_same_version_has_its_params_checked() -> None:
    """Attack: a stranger registers the vault first (version 1, params that pass the policy's
    schema); the vault's owner takes it over with version 1 too, and params the schema
    refuses (a cap that is not a decimal string). The operator remembers "(client, version 1)
    passed the schema" and skips its own check, but held: the policy engine checks the params
    against the schema again at every evaluation, so nothing is signed."""
    owner = PrivateKey()
    owner_hex = operator_address(owner).lower()
    operator = Operator(PrivateKey(), Registry(":memory:", check_owner=lambda _: owner_hex))
    stranger = registration(owner=PrivateKey(), version=1)
    assert operator.evaluate_and_sign(request(registration=stranger))["decision"] == "allow"
    loose: dict[str, Any] = params(max_per_tx=10 * UNIT)
    loose["max_per_tx"] = "1e40"  # not a decimal string: the schema refuses it
    taken = registration(owner=owner, version=1, config=loose)
    with pytest.raises(RPCError) as refused:
        operator.evaluate_and_sign(request(registration=taken, params=loose))
    assert "schema" in refused.value.message, refused.value.message


def test_an_owner_signature_moved_to_another_client_is_refused() -> None:
    """Attack on the per-registration precompute (keyed by the owner's signature): a lying
    gateway copies client A's registration, signature and all, onto client B with looser
    params, hoping B's entry (or A's, whichever is computed first) serves the other. Held:
    the signature is over every field, owner included, so the copy recovers to another signer
    and is refused before anything is derived from it; A keeps its own params."""
    operator = Operator(PrivateKey(), Registry(":memory:"))
    genuine = registration()
    other = "0x" + "dd" * 20
    loose: dict[str, Any] = params(max_per_tx=1000 * UNIT)
    moved = {**genuine, "policy_client": other, "params": loose}
    with pytest.raises(RPCError) as refused:
        operator.evaluate_and_sign(request(policy_client=other, registration=moved, params=loose))
    assert "signed by" in refused.value.message, refused.value.message
    with pytest.raises(RPCError):  # A's own tasks are judged under A's params only
        operator.evaluate_and_sign(request(registration=genuine, params=loose))
    assert operator.evaluate_and_sign(request(registration=genuine))["decision"] == "allow"
